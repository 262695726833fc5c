"""``aicert-build environment``: a training environment built reproducibly from Debian.

An environment definition (TOML, e.g. ``examples/demo/environment.toml``) names Debian
packages; mmdebstrap installs them with their dependencies into an empty root, and
:mod:`aicert.builder.oci_layout` writes that root as an OCI image-layout archive that a
job file's ``environment.path`` can name. The same definition, lock and mirror state give
the same archive bytes, so the same manifest digest:

- every installed package is pinned to the version in the definition's lock file
  (APT preferences, priority 1001) and the build fails when any other version or any
  package not in the lock was installed (``--update-lock`` rewrites the lock instead);
- SOURCE_DATE_EPOCH is the definition's ``source_date_epoch``, for mmdebstrap and the
  layer's mtimes; files that record the build host or the build time (``/etc/hostname``,
  ``/etc/resolv.conf``, logs, caches, ``/dev`` nodes) are removed.

Definition keys::

    suite = "trixie"                       # a Debian suite the mirrors carry
    packages = ["python3-numpy"]           # what to install (with dependencies)
    source_date_epoch = 1735689600         # the build's fixed time
    lock = "environment.lock.json"         # optional; relative to the definition
    sources = ["deb http://deb.debian.org/debian trixie main"]   # optional
    variant = "essential"                  # mmdebstrap variant; optional
    cmd = ["python3"]                      # the image config's Cmd; optional
    env = ["OMP_NUM_THREADS=2"]            # added to PATH and LANG; optional
    working_dir = "/"                      # optional
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aicert.builder.oci_layout import (
    ImageConfig,
    OciImage,
    env_defaults,
    write_layer,
    write_layout_archive,
)
from aicert.builder.package_lock import LockMismatchError, dpkg_status_packages
from aicert.verifier.errors import InputError, ToolError
from aicert.verifier.input_file import MIB, read_input_file

from aicert.process import require_tool, run

DEFAULT_SOURCES: Final = (
    "deb http://deb.debian.org/debian {suite} main",
    "deb http://deb.debian.org/debian {suite}-updates main",
    "deb http://security.debian.org/debian-security {suite}-security main",
)
VARIANTS: Final = ("essential", "apt", "required", "minbase", "important", "standard")
DEFAULT_CACHE: Final = Path(".cache/environment-debs")
MAX_DEFINITION_BYTES: Final = 1 * MIB
# Written by the build host or at build time; none of it belongs in an environment.
VOLATILE: Final = (
    "etc/hostname",
    "etc/resolv.conf",
    "etc/machine-id",
    "etc/apt/preferences.d/aicert-environment.pref",
    "var/cache/apt",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists",
    "var/log/apt",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
)
_PACKAGE: Final = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_SUITE: Final = re.compile(r"[a-z][a-z0-9-]*")
_KEYS: Final = {
    "suite",
    "packages",
    "source_date_epoch",
    "lock",
    "sources",
    "variant",
    "cmd",
    "env",
    "working_dir",
}


class DefinitionError(InputError):
    """An environment definition is malformed."""


@dataclass(frozen=True)
class EnvironmentDefinition:
    path: Path
    suite: str
    packages: tuple[str, ...]
    source_date_epoch: int
    sources: tuple[str, ...]
    variant: str
    config: ImageConfig
    lock: Path | None


@dataclass(frozen=True)
class EnvironmentBuild:
    output: Path
    image: OciImage
    packages: dict[str, str]
    archive_bytes: int
    seconds: float

    def summary(self) -> dict[str, object]:
        return {
            "output": str(self.output),
            "manifest_digest": self.image.manifest.digest,
            "config_digest": self.image.config.digest,
            "layer_digest": self.image.layer.blob.digest,
            "layer_bytes": self.image.layer.blob.size,
            "unpacked_bytes": self.image.layer.unpacked_bytes,
            "archive_bytes": self.archive_bytes,
            "packages": len(self.packages),
            "seconds": round(self.seconds, 1),
        }


def _strings(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DefinitionError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


def load_definition(path: Path) -> EnvironmentDefinition:
    """Read and check an environment definition; one-line errors naming file and key."""
    data = read_input_file(path, "environment definition", MAX_DEFINITION_BYTES)
    try:
        body: dict[str, Any] = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise DefinitionError(f"{path}: {unknown[0]}: unknown key")
    suite = body.get("suite")
    if not isinstance(suite, str) or not _SUITE.fullmatch(suite):
        raise DefinitionError(f"{path}: suite: a Debian suite name such as 'trixie'")
    packages = _strings(f"{path}: packages", body.get("packages"))
    for name in packages:
        if not _PACKAGE.fullmatch(name):
            raise DefinitionError(f"{path}: packages: {name!r} is not a Debian package name")
    epoch = body.get("source_date_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch < 2**32:
        raise DefinitionError(f"{path}: source_date_epoch: seconds since 1970 (an integer)")
    sources = (
        _strings(f"{path}: sources", body["sources"])
        if "sources" in body
        else tuple(line.format(suite=suite) for line in DEFAULT_SOURCES)
    )
    for line in sources:
        if not line.startswith("deb ") or "\n" in line:
            raise DefinitionError(f"{path}: sources: {line[:60]!r} is not a 'deb URL SUITE' line")
    variant = body.get("variant", "essential")
    if variant not in VARIANTS:
        raise DefinitionError(f"{path}: variant: one of {', '.join(VARIANTS)}")
    working_dir = body.get("working_dir", "/")
    if not isinstance(working_dir, str) or not working_dir.startswith("/"):
        raise DefinitionError(f"{path}: working_dir: an absolute path")
    env = _strings(f"{path}: env", body.get("env", []))
    for item in env:
        if "=" not in item or not item.partition("=")[0].isidentifier():
            raise DefinitionError(f"{path}: env: {item[:60]!r} is not NAME=value")
    lock = body.get("lock")
    if lock is not None and not (isinstance(lock, str) and lock):
        raise DefinitionError(f"{path}: lock: a file name")
    return EnvironmentDefinition(
        path=path,
        suite=suite,
        packages=packages,
        source_date_epoch=epoch,
        sources=sources,
        variant=variant,
        config=ImageConfig(
            env=env_defaults(env),
            cmd=_strings(f"{path}: cmd", body.get("cmd", ["python3"])),
            working_dir=working_dir,
        ),
        lock=None if lock is None else (path.parent / lock),
    )


def load_versions(lock: Path) -> dict[str, str]:
    """The lock file's ``{package: version}``."""
    data = read_input_file(lock, "environment lock", MAX_DEFINITION_BYTES)
    try:
        body: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DefinitionError(f"{lock}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or not all(
        isinstance(k, str) and _PACKAGE.fullmatch(k) and isinstance(v, str) and v
        for k, v in body.items()
    ):
        raise DefinitionError(f"{lock}: must map Debian package names to versions")
    return dict(body)


def apt_preferences(versions: dict[str, str]) -> str:
    return "".join(
        f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n"
        for name, version in sorted(versions.items())
    )


def check_versions(locked: dict[str, str], installed: dict[str, str], lock: Path) -> None:
    """Fail, naming the package, unless exactly the locked versions were installed."""
    for name in sorted(set(locked) | set(installed)):
        if name not in installed:
            continue  # a locked package nothing needs any more: harmless
        if name not in locked:
            raise LockMismatchError(
                f"package {name} {installed[name]} is not in {lock}; "
                "rebuild with --update-lock to refresh it"
            )
        if installed[name] != locked[name]:
            raise LockMismatchError(
                f"locked package {name} {locked[name]} was not installed (got "
                f"{installed[name]}): the mirror no longer offers it; use a "
                "snapshot.debian.org source or rebuild with --update-lock"
            )


def mmdebstrap_argv(
    definition: EnvironmentDefinition, root: Path, cache: Path, preferences: Path | None
) -> list[str]:
    argv: list[str] = [
        require_tool("mmdebstrap", hint="install the Debian package mmdebstrap"),
        f"--variant={definition.variant}",
        "--mode=root",
        "--format=directory",
        "--architectures=amd64",
        f"--include={','.join(definition.packages)}",
        "--aptopt=APT::Install-Recommends false",
        # Reuse downloaded packages across builds (mmdebstrap's documented cache hooks).
        f'--setup-hook=mkdir -p "{cache}" "$1"/var/cache/apt/archives/',
        f'--setup-hook=sync-in "{cache}" /var/cache/apt/archives/',
        f'--customize-hook=sync-out /var/cache/apt/archives "{cache}"',
    ]
    if preferences is not None:
        argv.append(f'--setup-hook=copy-in "{preferences}" /etc/apt/preferences.d/')
    return [*argv, definition.suite, str(root), *definition.sources]


def _remove_volatile(root: Path) -> None:
    for name in VOLATILE:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for node in (root / "dev").iterdir():
        if node.is_dir() and not node.is_symlink():
            shutil.rmtree(node)
        else:
            node.unlink()


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo)."""
    base = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash as octal escapes.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
        if point == base or point.startswith(base + "/"):
            points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def remove_build_dir(workdir: Path) -> None:
    """Remove a build directory, unmounting first what a killed mmdebstrap left mounted
    in its root (/proc, /sys, /dev binds): removing through those would delete the host's
    files. A mount that stays is an error, and nothing is removed."""
    for point in mounts_below(workdir):
        run(["umount", "--lazy", point])
    left = mounts_below(workdir)
    if left:
        raise ToolError(f"{left[0]} is still mounted; unmount it, then remove {workdir}")
    shutil.rmtree(workdir)


def build_environment(
    definition: EnvironmentDefinition,
    output: Path,
    *,
    cache: Path = DEFAULT_CACHE,
    update_lock: bool = False,
    step: Callable[[str], None] = lambda _: None,
) -> EnvironmentBuild:
    """Build ``definition`` into the OCI archive ``output`` (written only when done)."""
    started = time.monotonic()
    if not output.parent.is_dir():
        raise InputError(f"the output's directory {output.parent} does not exist")
    locked = (
        load_versions(definition.lock)
        if definition.lock is not None and definition.lock.exists() and not update_lock
        else None
    )
    if definition.lock is not None and locked is None and not update_lock:
        raise InputError(
            f"the lock {definition.lock} does not exist; build once with --update-lock"
        )
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="aicert-env-", dir=output.parent))
    try:
        root = workdir / "rootfs"
        preferences = None
        if locked is not None:
            preferences = workdir / "aicert-environment.pref"
            preferences.write_text(apt_preferences(locked))
        argv = mmdebstrap_argv(definition, root, cache.resolve(), preferences)
        step(f"installing {len(definition.packages)} package(s) from {definition.suite}")
        run(
            argv,
            env={"SOURCE_DATE_EPOCH": str(definition.source_date_epoch), "LC_ALL": "C.UTF-8"},
            on_line=lambda line: step(line) if line.startswith("I: ") else None,
        )
        installed = dpkg_status_packages(root / "var/lib/dpkg/status")
        if locked is not None and definition.lock is not None:
            check_versions(locked, installed, definition.lock)
        _remove_volatile(root)
        step("writing the layer")
        layer_file = workdir / "layer.tar.gz"
        with layer_file.open("wb") as blob:
            layer = write_layer(root, blob, definition.source_date_epoch)
        step(f"writing {output}")
        partial = workdir / "env.oci.tar"
        with partial.open("wb") as archive:
            image = write_layout_archive(
                archive, layer, layer_file, definition.config, definition.source_date_epoch
            )
        partial.replace(output)
    finally:
        remove_build_dir(workdir)
    if update_lock and definition.lock is not None:
        definition.lock.write_text(json.dumps(installed, indent=1, sort_keys=True) + "\n")
        step(f"wrote {definition.lock}: {len(installed)} packages")
    return EnvironmentBuild(
        output=output,
        image=image,
        packages=installed,
        archive_bytes=output.stat().st_size,
        seconds=time.monotonic() - started,
    )
