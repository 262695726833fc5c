"""``aicert-build image``: build the measured image into a directory, all or nothing.

The build happens in ``DIR.tmp-XXXX`` next to ``DIR``; only a finished build
(disk.raw, uki.efi, recipe.json) is renamed to ``DIR``. A failed or interrupted
build leaves no directory that looks complete. mkosi's caches (incremental image,
tools tree, downloaded packages) are shared between builds under ``.cache/mkosi``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicert.builder.mkosi import (
    DEFAULT_PROFILE,
    IMAGE_DIR,
    MKOSI_VERSION,
    REPO_ROOT,
    BuildParameters,
    MkosiDirs,
    check_profile,
    ensure_mkosi,
    render_config,
    run_mkosi,
)
from aicert.builder.module_signing import (
    SIGNATURES_FILE,
    ModuleSigning,
    check_module_signing,
    recipe_entry,
    stage_module_signing,
)
from aicert.builder.package_lock import (
    PackageLock,
    dpkg_status_packages,
    load_lock,
    manifest_packages,
)
from aicert.builder.recipe import BuildInputs, describe_outputs, load_recipe, recipe_json
from aicert.verifier.errors import InputError, ToolError

from aicert.process import run

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://security.debian.org/debian-security"
# Fixed so that rebuilds on any day give the same bytes (file times, shadow dates).
SOURCE_DATE_EPOCH = 1764028800  # 2025-11-25T00:00:00Z
SEED = "5b0f3a57-6a3c-4e0e-9f1a-3e9d6f1c2a11"
DEFAULT_CACHE = REPO_ROOT / ".cache" / "mkosi"
LOCK_PATH = IMAGE_DIR / "package-lock.json"
# A cold build writes about 1.5 GiB (tools tree, packages, image); refuse early
# rather than fail deep inside mkosi.
MIN_FREE_BYTES = 3 << 30
OUTPUT_FILES = ("disk.raw", "uki.efi", "recipe.json")
# mkosi's default tools tree, as it names it in its output directory.
TOOLS_TREE = "tools"
# Where a finished build leaves the tools tree, in its incremental cache, for the next.
KEPT_TOOLS_TREE = "tools-tree"


@dataclass(frozen=True)
class ImageRequest:
    output: Path
    profile: str = DEFAULT_PROFILE
    mirror: str | None = None
    # Defaults to Debian's security archive, unless ``mirror`` is set (a snapshot mirror
    # then needs its matching debian-security snapshot here).
    security_mirror: str | None = None
    package_cache: Path = DEFAULT_CACHE / "packages"
    # None: no incremental cache, the build starts from a clean state.
    incremental_cache: Path | None = DEFAULT_CACHE / "incremental"
    lock_path: Path = LOCK_PATH
    min_free_bytes: int = MIN_FREE_BYTES
    # The source tree to build from: this checkout, or a snapshot of it.
    source_root: Path = REPO_ROOT
    # How the kernel modules the build compiles are signed (gpu profiles); None: unsigned.
    module_signing: ModuleSigning | None = None


@dataclass(frozen=True)
class BuildResult:
    output: Path
    recipe: dict[str, Any] = field(hash=False)
    seconds: float


def check_free_space(path: Path, needed: int) -> None:
    usage = shutil.disk_usage(path)
    if usage.free < needed:
        raise ToolError(
            f"only {usage.free >> 20} MiB free on the file system of {path}; "
            f"an image build needs about {needed >> 20} MiB"
        )


def source_state() -> dict[str, Any]:
    """The git commit of this source tree and whether it has local changes."""
    try:
        commit = run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"]).stdout.decode().strip()
        status = run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"])
    except ToolError:
        return {"git_commit": None, "dirty": None}
    dirty = bool(status.stdout.strip())
    return {"git_commit": commit, "dirty": dirty}


def build_image(request: ImageRequest, on_line: Callable[[str], None]) -> BuildResult:
    """Build the image for ``request``; raise an AicertError (one line) on any failure."""
    started = time.monotonic()
    profile = check_profile(request.profile, request.source_root)
    output = request.output.absolute()
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"the output's parent {parent} is not a directory")
    if output.exists() and not (output / "recipe.json").is_file():
        raise InputError(f"{output} exists and is not an aicert image directory; not replacing it")
    lock = load_lock(request.lock_path)
    signing = request.module_signing
    certificate = (
        check_module_signing(signing, profile, request.source_root / IMAGE_DIR.name)
        if signing is not None
        else None
    )
    # Like `run --output`: a fresh clone has no out/, and a newcomer should not need it.
    parent.mkdir(parents=True, exist_ok=True)
    request.package_cache.mkdir(parents=True, exist_ok=True)
    check_free_space(parent, request.min_free_bytes)
    check_free_space(request.package_cache, request.min_free_bytes)
    ensure_mkosi()

    params = BuildParameters(
        profile=profile,
        mirror=request.mirror or DEFAULT_MIRROR,
        security_mirror=request.security_mirror
        or (None if request.mirror else DEFAULT_SECURITY_MIRROR),
        source_date_epoch=SOURCE_DATE_EPOCH,
        seed=SEED,
        lock=lock,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=parent))
    try:
        config_digest = render_config(params, tmp / "config", request.source_root)
        if signing is not None:
            stage_module_signing(signing, tmp / "config")
        dirs = MkosiDirs(
            config=tmp / "config",
            output=tmp / "mkosi-out",
            workspace=tmp / "workspace",
            cache=_incremental_dir(request, profile, lock, tmp),
            package_cache=request.package_cache,
        )
        _reuse_tools_tree(dirs)
        run_mkosi(dirs, on_line)
        packages = {
            "image": manifest_packages(dirs.output / "image.manifest"),
            "initrd": manifest_packages(dirs.output / "initrd.manifest"),
            "tools": dpkg_status_packages(dirs.output / TOOLS_TREE / "var/lib/dpkg/status"),
        }
        _keep_tools_tree(dirs)
        for part, installed in packages.items():
            lock.check_manifest(part, installed)
        result = tmp / "result"
        result.mkdir()
        os.replace(dirs.output / "image.raw", result / "disk.raw")
        os.replace(dirs.output / "image.efi", result / "uki.efi")
        module_signing = None
        if signing is not None and certificate is not None:
            module_signing = recipe_entry(certificate, signing, dirs.output / SIGNATURES_FILE)
            os.replace(dirs.output / SIGNATURES_FILE, result / SIGNATURES_FILE)
        outputs, pcrs = describe_outputs(result / "disk.raw", result / "uki.efi")
        inputs = BuildInputs(
            profile=profile,
            mkosi_version=MKOSI_VERSION,
            tools_tree={"distribution": "debian", "release": "trixie"},
            mirror=params.mirror,
            security_mirror=params.security_mirror,
            source_date_epoch=params.source_date_epoch,
            seed=params.seed,
            config_sha256=config_digest,
            source=source_state(),
            locked=not lock.is_empty,
            packages=packages,
            module_signing=module_signing,
        )
        text = recipe_json(inputs, outputs, pcrs)
        (result / "recipe.json").write_text(text)
        _install(result, output, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(
        output=output,
        recipe=json.loads(text),
        seconds=time.monotonic() - started,
    )


def _incremental_dir(request: ImageRequest, profile: str, lock: PackageLock, tmp: Path) -> Path:
    """Per profile and package lock: mkosi does not notice a changed APT preferences file,
    and a cached image with other package versions would then fail the lock check."""
    if request.incremental_cache is None:
        return tmp / "incremental"
    key = hashlib.sha256(lock.to_json().encode()).hexdigest()[:16]
    return request.incremental_cache / f"{profile}-{key}"


def _reuse_tools_tree(dirs: MkosiDirs) -> None:
    """Put the tools tree that the last build kept back into mkosi's output directory.

    mkosi uses a tools tree it finds there while its cache of it is current (otherwise
    it removes it and builds another), instead of copying 1.6 GB out of that cache;
    deleting the copy after each build cost more still (on a file system mounted with
    ``discard``, one discard per file). A rename, so only within one file system."""
    kept = dirs.cache / KEPT_TOOLS_TREE
    if kept.is_dir():
        dirs.output.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.rename(kept, dirs.output / TOOLS_TREE)


def _keep_tools_tree(dirs: MkosiDirs) -> None:
    """After a successful mkosi run (so never a half-built tree), keep its tools tree."""
    with contextlib.suppress(OSError):
        dirs.cache.mkdir(parents=True, exist_ok=True)
        os.rename(dirs.output / TOOLS_TREE, dirs.cache / KEPT_TOOLS_TREE)


def _install(result: Path, output: Path, tmp: Path) -> None:
    """Put the finished ``result`` at ``output``, replacing an older build there."""
    for name in OUTPUT_FILES:
        with open(result / name, "rb") as f:
            os.fsync(f.fileno())
    if output.exists():
        os.replace(output, tmp / "previous")
    os.replace(result, output)
    with contextlib.suppress(OSError):
        fd = os.open(output.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def lock_from_builds(builds: list[Path]) -> PackageLock:
    """A package lock holding every package of the given build directories' recipes."""
    parts: dict[str, dict[str, str]] = {}
    for build in builds:
        packages = load_recipe(build / "recipe.json")["inputs"]["packages"]
        for part, entries in packages.items():
            merged = parts.setdefault(part, {})
            for name, version in entries.items():
                if merged.setdefault(name, version) != version:
                    raise InputError(
                        f"builds disagree on {name} ({part}): {merged[name]} and {version}"
                    )
    return PackageLock(parts)
