"""The package lock: the exact Debian package versions an image is built from.

``image/package-lock.json`` maps each image part ("image", "initrd", and the
"tools" tree whose mkfs.erofs, systemd-repart and ukify make the image) to
``{package: version}``. A build pins every locked package to its version
through an APT preferences file in the sandbox tree (priority 1001, so apt
takes exactly that version or, if the mirror no longer has it, falls back to
another one); after the build :func:`PackageLock.check_manifest` compares the
installed versions with the lock and fails, naming the package, when they
differ. ``aicert-build lock`` rewrites the lock from a build's manifests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicert.verifier.errors import FormatError, InputError

LOCK_FORMAT = 1
PARTS = ("image", "initrd", "tools")
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"[A-Za-z0-9.+~:-]+")
SNAPSHOT_HINT = (
    "the mirror no longer offers it; rebuild with "
    "--mirror http://snapshot.debian.org/archive/debian/<YYYYMMDDTHHMMSSZ>/ "
    "(a snapshot from when the lock was made) or refresh the lock with 'aicert-build lock'"
)


class LockMismatchError(InputError):
    """A build installed a package version other than the locked one."""


@dataclass(frozen=True)
class PackageLock:
    """Locked versions per image part; empty parts mean "not locked"."""

    parts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not any(self.parts.values())

    def pinned(self) -> dict[str, str]:
        """One version per package name across parts (parts must agree)."""
        merged: dict[str, str] = {}
        for part in PARTS:
            for name, version in self.parts.get(part, {}).items():
                if merged.setdefault(name, version) != version:
                    raise FormatError(
                        f"package lock pins {name} to both {merged[name]} and {version}"
                    )
        return merged

    def apt_preferences(self) -> str:
        lines = ["# Generated from image/package-lock.json by aicert-build.\n"]
        for name, version in sorted(self.pinned().items()):
            lines.append(f"\nPackage: {name}\nPin: version {version}\nPin-Priority: 1001\n")
        return "".join(lines)

    def check_manifest(self, part: str, installed: dict[str, str]) -> None:
        """Raise LockMismatchError naming the first package whose version differs."""
        locked = self.parts.get(part, {})
        for name in sorted(locked):
            if name in installed and installed[name] != locked[name]:
                raise LockMismatchError(
                    f"locked package {name} {locked[name]} ({part}) was not installed "
                    f"(got {installed[name]}): {SNAPSHOT_HINT}"
                )
        if locked:
            extra = sorted(set(installed) - set(locked))
            if extra:
                raise LockMismatchError(
                    f"package {extra[0]} ({part}) is not in the package lock; "
                    "refresh it with 'aicert-build lock'"
                )

    def to_json(self) -> str:
        body = {"format": LOCK_FORMAT, **{part: self.parts.get(part, {}) for part in PARTS}}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"


def load_lock(path: Path) -> PackageLock:
    """Read a lock file; a missing file is an empty lock (first build)."""
    if not path.exists():
        return PackageLock()
    try:
        body: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read package lock {path}: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != LOCK_FORMAT:
        raise FormatError(f"package lock {path} is not format {LOCK_FORMAT}")
    parts: dict[str, dict[str, str]] = {}
    for part in PARTS:
        entries = body.get(part, {})
        if not isinstance(entries, dict):
            raise FormatError(f"package lock {path}: '{part}' is not an object")
        for name, version in entries.items():
            _check_entry(name, version, path)
        parts[part] = dict(entries)
    return PackageLock(parts)


def _check_entry(name: object, version: object, where: Path) -> None:
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise FormatError(f"package lock {where}: invalid package name {name!r}")
    if not (isinstance(version, str) and _VERSION.fullmatch(version)):
        raise FormatError(f"package lock {where}: invalid version {version!r} for {name}")


def manifest_packages(manifest: Path) -> dict[str, str]:
    """``{name: version}`` of the Debian packages in an mkosi JSON manifest."""
    try:
        body: Any = json.loads(manifest.read_text())
        packages = body["packages"]
        result = {p["name"]: p["version"] for p in packages if p.get("type") == "deb"}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FormatError(f"cannot read mkosi manifest {manifest}: {exc}") from exc
    for name, version in result.items():
        _check_entry(name, version, manifest)
    return dict(sorted(result.items()))


def dpkg_status_packages(status: Path) -> dict[str, str]:
    """``{name: version}`` of the installed packages in a dpkg status file (the tools tree)."""
    try:
        text = status.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read dpkg status {status}: {exc}") from exc
    result: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            _check_entry(fields["Package"], fields.get("Version"), status)
            result[fields["Package"]] = fields["Version"]
    return dict(sorted(result.items()))
