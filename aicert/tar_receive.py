"""Receiving a tar stream onto disk, hashed on the way in.

The agent receives inputs this way and the builder receives a job's outputs: what
:func:`receive_tar` writes is exactly what its manifest names, equal to
:func:`aicert.verifier.digest.treehash.hash_tree` of the result, computed while the bytes
arrive (:func:`aicert.receive.receive_file`), so a large tree is read once.

Tar members may only be regular files and directories with plain relative names:
symbolic and hard links, devices, FIFOs, sparse files, absolute names, ``..`` and
duplicate names are refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tarfile
import unicodedata
from pathlib import Path
from typing import IO, Final, Protocol

from aicert.receive import receive_file
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, FileDigest, StreamingHasher
from aicert.verifier.digest.treemanifest import FileEntry, TreeManifest
from aicert.verifier.errors import InputError

CHUNK: Final = 1024 * 1024
# Tar members up to this size are written without a writer thread.
SMALL_FILE: Final = 1024 * 1024

_NO_SPACE: Final = os.strerror(errno.ENOSPC)


class IntakeError(InputError):
    """An input was refused or could not be received; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def only_zeros_left(source: Reader) -> bool:
    """Read ``source`` to its end; whether everything left was zero bytes (tar padding)."""
    while data := source.read(CHUNK):
        if any(data):
            return False
    return True


# --------------------------------------------------------------------------- writing


def write_stream(
    source: Reader, dest: Path, *, expected_sha256: str | None = None, fsync: bool = True
) -> FileDigest:
    """Stream ``source`` into the new file ``dest`` while hashing it."""
    try:
        with receive_file(
            dest, shard_size=DEFAULT_SHARD_SIZE, expected_sha256=expected_sha256, fsync=fsync
        ) as sink:
            while data := source.read(CHUNK):
                sink.write(data)
    except IntakeError:
        raise
    except InputError as exc:
        status = 507 if _NO_SPACE in exc.message else 422
        if status == 507:
            raise IntakeError(f"the scratch disk is full: {exc.message}", 507) from None
        raise IntakeError(exc.message, status) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise IntakeError(f"the scratch disk is full while writing {dest}", 507) from None
        raise
    assert sink.result is not None  # noqa: S101 - set by close()
    return sink.result


def write_small(source: Reader, size: int, dest: Path) -> FileDigest:
    """Like :func:`write_stream` for a file of at most :data:`SMALL_FILE` bytes, without the
    writer thread (whose start-up dominates for small files), hashed the same way."""
    parts: list[bytes] = []
    left = size
    while left and (data := source.read(left)):
        parts.append(data)
        left -= len(data)
    data = b"".join(parts)
    hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
    hasher.update(data)
    try:
        fd = os.open(
            dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644
        )
    except OSError as exc:
        raise os_failure(exc, dest) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        os.close(fd)
        remove_path(dest)
        raise os_failure(exc, dest) from None
    os.close(fd)
    return hasher.result()


def os_failure(exc: OSError, dest: Path) -> IntakeError:
    if exc.errno == errno.ENOSPC:
        return IntakeError(f"the scratch disk is full while writing {dest}", 507)
    return IntakeError(f"cannot write {dest}: {exc.strerror}", 500)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_expected(manifest: TreeManifest, expected: str | None, what: str) -> None:
    if expected is not None and manifest.digest != expected:
        raise IntakeError(
            f"{what} has tree digest {manifest.digest}, not the expected {expected}; "
            "it was discarded",
            status=422,
        )


# --------------------------------------------------------------------------- tar


def _member_path(name: str) -> str | None:
    """The manifest path of a tar member name, or None for the archive's root (``.``)."""
    if name.startswith("/"):
        raise IntakeError(f"tar member {name!r} has an absolute name", 422)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise IntakeError(f"tar member {name!r} climbs out of the archive with '..'", 422)
    if not parts:
        return None
    path = "/".join(parts)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise IntakeError(f"tar member {name!r} has a name that is not UTF-8", 422) from None
    if unicodedata.normalize("NFC", path) != path:
        raise IntakeError(f"tar member {name!r} has a name not in Unicode NFC form", 422)
    return path


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return f"of tar type {member.type!r}"


class _TarTree:
    """What an archive put on disk so far, checked as each member arrives."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, FileEntry] = {}
        self.directories: set[str] = set()
        self.explicit_directories: set[str] = set()

    def _make_parents(self, path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise IntakeError(f"tar member {path!r} lies under the file {parent!r}", 422)
            if parent not in self.directories:
                os.mkdir(self.root / parent, 0o755)
                self.directories.add(parent)

    def add_directory(self, path: str) -> None:
        if path in self.files or path in self.explicit_directories:
            raise IntakeError(f"tar member {path!r} appears twice in the archive", 422)
        self._make_parents(path)
        if path not in self.directories:
            os.mkdir(self.root / path, 0o755)
            self.directories.add(path)
        self.explicit_directories.add(path)

    def add_file(self, path: str, data: IO[bytes], size: int, executable: bool) -> None:
        if path in self.files or path in self.directories:
            raise IntakeError(f"tar member {path!r} appears twice in the archive", 422)
        self._make_parents(path)
        target = self.root / path
        # One fsync per member costs milliseconds each (minutes for a data set of small
        # files); receive_tar flushes the file systems once at the end instead.
        if size <= SMALL_FILE:
            result = write_small(data, size, target)
        else:
            result = write_stream(data, target, fsync=False)
        if result.size != size:
            raise IntakeError(f"tar member {path!r} holds {result.size} bytes, not {size}", 422)
        if executable:
            # The sandboxed command runs as an unprivileged user and must be able to run it.
            os.chmod(target, 0o755)  # noqa: S103
        self.files[path] = FileEntry(path, result.size, result.digest)

    def manifest(self) -> TreeManifest:
        return TreeManifest(
            DEFAULT_SHARD_SIZE,
            tuple(self.files[p] for p in sorted(self.files)),
            tuple(sorted(self.directories)),
        )


def _extract(body: Reader, tree: _TarTree) -> None:
    try:
        with tarfile.open(fileobj=body, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                _extract_member(archive, member, tree)
    except tarfile.TarError as exc:
        raise IntakeError(f"the upload is not a well-formed tar stream: {exc}", 422) from None


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo, tree: _TarTree) -> None:
    path = _member_path(member.name)
    if member.isdir():
        if path is not None:
            tree.add_directory(path)
        return
    if member.issparse() or not member.isreg():
        raise IntakeError(
            f"tar member {member.name!r} is {_member_kind(member)}; only regular "
            "files and directories are accepted",
            422,
        )
    if path is None:
        raise IntakeError(f"tar member {member.name!r} is a file without a name", 422)
    data = archive.extractfile(member)
    if data is None:  # pragma: no cover - regular members always have data
        raise IntakeError(f"tar member {member.name!r} has no data", 422)
    tree.add_file(path, data, member.size, bool(member.mode & 0o111))


def receive_tar(body: Reader, dest: Path, *, expected_digest: str | None = None) -> TreeManifest:
    """Extract the tar stream ``body`` into the new directory ``dest``; its manifest.

    The manifest is built from the digests computed while writing and equals
    ``hash_tree(dest)``. On any failure ``dest`` is removed.
    """
    os.mkdir(dest, 0o755)
    try:
        tree = _TarTree(dest)
        _extract(body, tree)
        if not only_zeros_left(body):
            raise IntakeError("data follows the end of the tar archive", 422)
        os.sync()
        manifest = tree.manifest()
        check_expected(manifest, expected_digest, "the uploaded tree")
    except OSError as exc:
        remove_path(dest)
        if exc.errno == errno.ENOSPC:
            raise IntakeError("the scratch disk is full", 507) from None
        raise IntakeError(f"cannot extract into {dest}: {exc.strerror}", 500) from None
    except BaseException:
        remove_path(dest)
        raise
    return manifest
