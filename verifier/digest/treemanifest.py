"""The tree manifest: every file's path, size and digest, in canonical JSON.

Schema (version 1), serialised in RFC 8785 (JCS) canonical form — with only strings and
integers that is sorted keys, no white space, UTF-8::

    {"directories":["a","a/b"],
     "files":[{"digest":"<64 hex>","path":"a/b/c.bin","size":123}],
     "shard_size":268435456,"version":1}

The tree digest is the SHA-256 of those bytes. :func:`parse_manifest` reads a manifest
from untrusted bytes and accepts only the canonical encoding of a valid manifest.
See ``docs/tree-digest.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from ..errors import FormatError
from ..statement.canonical_json import canonicalize, parse_json
from .filehash import MAX_JSON_INT, MIN_SHARD_SIZE

MANIFEST_VERSION: Final = 1

_HEX64: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """One regular file: path relative to the root ('/'-separated, NFC), size, digest (hex)."""

    path: str
    size: int
    digest: str


@dataclass(frozen=True)
class TreeManifest:
    """Every file and directory under a root; valid by construction (see :func:`validate`).

    A root that is a single file has one entry with the empty path and no directories.
    """

    shard_size: int
    files: tuple[FileEntry, ...]
    directories: tuple[str, ...]

    def __post_init__(self) -> None:
        validate(self)

    def canonical_bytes(self) -> bytes:
        """The canonical JSON encoding (RFC 8785) whose SHA-256 is the tree digest."""
        return canonicalize(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "shard_size": self.shard_size,
            "files": [{"path": f.path, "size": f.size, "digest": f.digest} for f in self.files],
            "directories": list(self.directories),
        }

    @property
    def digest(self) -> str:
        """The tree digest: SHA-256 (hex) of :meth:`canonical_bytes`."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _fail(message: str) -> FormatError:
    return FormatError(f"tree manifest: {message}")


def _check_path(path: object, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise _fail(f"{what} path must be a non-empty string")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"{what} path {path!r} is not valid Unicode") from None
    if unicodedata.normalize("NFC", path) != path:
        raise _fail(f"{what} path {path!r} is not in Unicode NFC form")
    for part in path.split("/"):
        if part in ("", ".", "..") or "\x00" in part:
            raise _fail(f"{what} path {path!r} is not a plain relative path inside the root")
    return path


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def validate(manifest: TreeManifest) -> None:
    """Check every rule of the schema; raise :class:`FormatError` on the first broken one."""
    shard = manifest.shard_size
    if type(shard) is not int or (shard != 0 and not MIN_SHARD_SIZE <= shard <= MAX_JSON_INT):
        raise _fail(f"shard_size must be 0 or an integer from {MIN_SHARD_SIZE} to 2**53-1")
    dirs = manifest.directories
    for name in dirs:
        _check_path(name, "directory")
    if any(a >= b for a, b in itertools.pairwise(dirs)):
        raise _fail("directories are not sorted and unique")
    dir_set = frozenset(dirs)
    files = manifest.files
    if len(files) == 1 and files[0].path == "" and not dirs:
        paths: list[str] = []
    else:
        paths = [_check_path(f.path, "file") for f in files]
    if any(a >= b for a, b in itertools.pairwise(paths)):
        raise _fail("files are not sorted by path and unique")
    for entry in files:
        if type(entry.size) is not int or not 0 <= entry.size <= MAX_JSON_INT:
            raise _fail(f"size of {entry.path!r} must be an integer from 0 to 2**53-1")
        if not isinstance(entry.digest, str) or not _HEX64.fullmatch(entry.digest):
            raise _fail(f"digest of {entry.path!r} must be 64 lowercase hex digits")
    for path in (*paths, *dirs):
        for parent in _parents(path):
            if parent not in dir_set:
                raise _fail(f"{path!r} lies in directory {parent!r}, which is not listed")
    for path in paths:
        if path in dir_set:
            raise _fail(f"{path!r} is listed both as a file and as a directory")


def _expect_keys(obj: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(f"{what} must be a JSON object")
    if frozenset(obj) != keys:
        raise _fail(f"{what} must have exactly the keys {sorted(keys)}")
    return obj


def parse_manifest(data: bytes) -> TreeManifest:
    """Parse a manifest from untrusted bytes; only its canonical encoding is accepted."""
    obj = parse_json(data, "tree manifest")
    top = _expect_keys(
        obj, frozenset({"version", "shard_size", "files", "directories"}), "the manifest"
    )
    if type(top["version"]) is not int or top["version"] != MANIFEST_VERSION:
        raise _fail(f"version must be {MANIFEST_VERSION}")
    if not isinstance(top["files"], list) or not isinstance(top["directories"], list):
        raise _fail("files and directories must be JSON arrays")
    entries = []
    for item in top["files"]:
        entry = _expect_keys(item, frozenset({"path", "size", "digest"}), "a file entry")
        if not isinstance(entry["path"], str):
            raise _fail("a file path must be a string")
        entries.append(FileEntry(entry["path"], entry["size"], entry["digest"]))
    manifest = TreeManifest(top["shard_size"], tuple(entries), tuple(top["directories"]))
    if manifest.canonical_bytes() != data:
        raise _fail("not in canonical form (sorted keys, no white space, UTF-8)")
    return manifest


def differences(expected: TreeManifest, actual: TreeManifest) -> list[str]:
    """What differs between two manifests, one line per difference, for error reports."""
    if expected.shard_size != actual.shard_size:
        return [f"shard size {actual.shard_size} instead of {expected.shard_size}"]
    lines: list[str] = []
    want = {f.path: f for f in expected.files}
    have = {f.path: f for f in actual.files}
    for path in sorted(want.keys() | have.keys()):
        shown = path or "(the root file)"
        if path not in have:
            lines.append(f"missing file {shown}")
        elif path not in want:
            lines.append(f"unexpected file {shown}")
        elif want[path].size != have[path].size:
            lines.append(f"{shown}: {have[path].size} bytes instead of {want[path].size}")
        elif want[path].digest != have[path].digest:
            lines.append(f"{shown}: contents differ")
    want_dirs, have_dirs = set(expected.directories), set(actual.directories)
    lines += [f"missing directory {d}" for d in sorted(want_dirs - have_dirs)]
    lines += [f"unexpected directory {d}" for d in sorted(have_dirs - want_dirs)]
    return lines
