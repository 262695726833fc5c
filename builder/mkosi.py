"""Render the mkosi project of the image and run the pinned mkosi on it.

The image recipe lives in ``image/`` (files ending in ``.j2`` are jinja2
templates) and one profile from ``mkosi.conf.d/``. :func:`render_config` turns
them, the package lock and this source tree's ``aicert`` package into one
self-contained mkosi directory whose digest goes into recipe.json;
:func:`run_mkosi` builds it with the mkosi that ``scripts/install-mkosi.sh``
installs under ``.tools/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from aicert.builder.package_lock import PackageLock
from aicert.verifier.errors import InputError, ToolError

from aicert.process import run

MKOSI_VERSION = "25.3"
# A profile is one platform drop-in, optionally with add-on drop-ins laid over it
# ("azure+gpu"); an add-on named alone ("gpu") goes over the default platform.
PLATFORM_PROFILES = ("qemu", "azure", "gcp", "aws", "debug")
ADDON_PROFILES = ("gpu",)
PROFILES = (*PLATFORM_PROFILES, "gpu", "azure+gpu")
DEFAULT_PROFILE = "qemu"

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO_ROOT / "image"
PROFILE_DIR = REPO_ROOT / "mkosi.conf.d"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-mkosi.sh"
TOOLS_DIR = REPO_ROOT / ".tools" / f"mkosi-{MKOSI_VERSION}"

# Source folders of the aicert distribution and where they live inside it
# (pyproject.toml's package-dir mapping).
PACKAGE_DIRS = {
    "aicert": "aicert",
    "verifier": "aicert/verifier",
    "builder": "aicert/builder",
    "agent": "aicert/agent",
}
PACKAGE_DATA = {"verifier": ("py.typed", "data")}
SITE_PACKAGES = Path("usr/lib/python3/dist-packages")
AICERT_TREE = "aicert-tree"
LOCK_PREFERENCES = Path("mkosi.sandbox/etc/apt/preferences.d/aicert-lock.pref")


@dataclass(frozen=True)
class BuildParameters:
    """Everything, besides the files of image/ and mkosi.conf.d/, that shapes the image."""

    profile: str
    mirror: str
    security_mirror: str | None
    source_date_epoch: int
    seed: str
    lock: PackageLock

    def template_values(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "addons": profile_parts(self.profile)[1:],
            "mirror": self.mirror,
            "security_mirror": self.security_mirror,
            "source_date_epoch": self.source_date_epoch,
            "seed": self.seed,
        }


def profile_parts(profile: str) -> tuple[str, ...]:
    """The drop-ins of ``profile``, platform first: "gpu" -> ("qemu", "gpu")."""
    parts = tuple(profile.split("+"))
    if parts[0] in ADDON_PROFILES:
        parts = (DEFAULT_PROFILE, *parts)
    return parts


def profile_platform(profile: str) -> str:
    """The platform a profile's image boots on: "azure+gpu" -> "azure"."""
    return profile_parts(profile)[0]


def check_profile(profile: str, root: Path = REPO_ROOT) -> str:
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    for part in profile_parts(profile):
        path = root / PROFILE_DIR.name / f"{part}.conf"
        if not path.is_file():
            raise InputError(f"profile file {path} is missing")
    return profile


def snapshot_sources(dest: Path) -> Path:
    """Copy what a build reads from this source tree (recipe, profiles, package) to ``dest``,
    so that several builds see the same files while the tree changes."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (IMAGE_DIR.name, PROFILE_DIR.name, *PACKAGE_DIRS):
        shutil.copytree(REPO_ROOT / name, dest / name, symlinks=True, ignore=ignore)
    return dest


def render_config(params: BuildParameters, dest: Path, root: Path = REPO_ROOT) -> str:
    """Write the complete mkosi project into ``dest`` (must not exist); return its digest.

    ``root`` is the source tree to read (this checkout, or a :func:`snapshot_sources`).
    """
    check_profile(params.profile, root)
    image_dir = root / IMAGE_DIR.name
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
    )
    shutil.copytree(image_dir, dest, symlinks=True, ignore=shutil.ignore_patterns("*.j2"))
    (dest / "package-lock.json").unlink(missing_ok=True)
    for template in sorted(image_dir.rglob("*.j2")):
        target = dest / template.relative_to(image_dir).with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = env.from_string(template.read_text()).render(**params.template_values())
        except jinja2.TemplateError as exc:
            raise InputError(f"cannot render {template}: {exc}") from exc
        target.write_text(text)
    profile_dir = dest / "mkosi.conf.d"
    profile_dir.mkdir(exist_ok=True)
    # The platform at 50, add-ons after it, so an add-on's settings come last.
    for rank, part in enumerate(profile_parts(params.profile), start=5):
        shutil.copy2(root / PROFILE_DIR.name / f"{part}.conf", profile_dir / f"{rank}0-{part}.conf")
    preferences = dest / LOCK_PREFERENCES
    preferences.parent.mkdir(parents=True, exist_ok=True)
    preferences.write_text(params.lock.apt_preferences())
    write_package_tree(dest / AICERT_TREE, params.source_date_epoch, root)
    normalize_tree(dest, params.source_date_epoch)
    return tree_digest(dest)


def write_package_tree(dest: Path, epoch: int, root: Path = REPO_ROOT) -> None:
    """Copy the source tree's aicert package into ``dest`` as Debian's python3 expects it."""
    for source, target in PACKAGE_DIRS.items():
        src = root / source
        out = dest / SITE_PACKAGES / target
        out.mkdir(parents=True, exist_ok=True)
        # Sub-packages too (aicert.agent.oci, aicert.builder.platforms.*), so that every
        # copied package imports whole.
        for path in sorted(src.rglob("*.py")):
            copy = out / path.relative_to(src)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        for extra in PACKAGE_DATA.get(source, ()):
            item = src / extra
            if item.is_dir():
                shutil.copytree(
                    item, out / extra, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            elif item.is_file():
                shutil.copyfile(item, out / extra)
    normalize_tree(dest, epoch)


def normalize_tree(root: Path, epoch: int) -> None:
    """Fixed modes and timestamps, so the files' metadata does not depend on the checkout."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_symlink():
            os.utime(path, (epoch, epoch), follow_symlinks=False)
            continue
        mode = path.stat().st_mode
        executable = path.is_dir() or bool(mode & stat.S_IXUSR)
        path.chmod(0o755 if executable else 0o644)
        os.utime(path, (epoch, epoch))
    os.utime(root, (epoch, epoch))


def tree_digest(root: Path) -> str:
    """SHA-256 over every path, kind, mode and content (or link target) below ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            entry = f"L {rel} {os.readlink(path)}\n".encode()
        elif path.is_dir():
            entry = f"D {rel}\n".encode()
        else:
            mode = path.stat().st_mode & 0o777
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            entry = f"F {rel} {mode:o} {content}\n".encode()
        digest.update(entry)
    return digest.hexdigest()


def ensure_mkosi() -> Path:
    """The installed pinned mkosi (installing it first if missing)."""
    if not (TOOLS_DIR / ".complete").is_file():
        run(["bash", INSTALL_SCRIPT, TOOLS_DIR], on_line=lambda _line: None)
    version = mkosi_version()
    if version != MKOSI_VERSION:
        raise ToolError(f"{TOOLS_DIR} holds mkosi {version}, not the pinned {MKOSI_VERSION}")
    return TOOLS_DIR


def mkosi_env() -> dict[str, str]:
    return {"PYTHONPATH": str(TOOLS_DIR / "usr/lib/python3/dist-packages")}


def mkosi_version() -> str:
    proc = run(["python3", "-m", "mkosi", "--version"], env=mkosi_env())
    match = re.fullmatch(r"mkosi (\S+)", proc.stdout.decode().strip())
    if match is None:
        raise ToolError(f"unexpected 'mkosi --version' output: {proc.stdout.decode()[:80]!r}")
    return match.group(1)


@dataclass(frozen=True)
class MkosiDirs:
    """Where one mkosi run reads and writes."""

    config: Path
    output: Path
    workspace: Path
    cache: Path
    package_cache: Path


def run_mkosi(dirs: MkosiDirs, on_line: Callable[[str], None]) -> None:
    """Build the image described in ``dirs.config``; raise ToolError on failure."""
    for path in (dirs.output, dirs.workspace, dirs.cache, dirs.package_cache):
        path.mkdir(parents=True, exist_ok=True)
    run(
        [
            "python3",
            "-m",
            "mkosi",
            "--directory",
            dirs.config,
            "--output-directory",
            dirs.output,
            "--workspace-directory",
            dirs.workspace,
            "--cache-directory",
            dirs.cache,
            "--package-cache-directory",
            dirs.package_cache,
            "build",
        ],
        env={**mkosi_env(), "MKOSI_LESS": "", "TERM": "dumb"},
        on_line=on_line,
    )
