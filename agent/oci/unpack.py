"""Applying image layers to a root file system directory, never leaving it.

Every member is placed relative to a directory file descriptor of the root: each
parent is opened with ``O_NOFOLLOW`` (a symbolic link on the way is refused, never
followed), names are plain relative paths (absolute names and ``..`` are refused),
files are created with ``O_EXCL | O_NOFOLLOW``, hard links must name a file already
inside the root, and whiteouts (``.wh.NAME``, ``.wh..wh..opq``) remove only what lies
under their own directory. Device files and FIFOs are refused: a training environment
needs none, and the runtime provides ``/dev``. Set-user-ID and set-group-ID bits are
dropped. The bytes written (plus a per-entry allowance, so millions of empty files
count too) are capped while unpacking; ``diff_ids`` are checked on the uncompressed
stream as it is read.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from .blobs import CHUNK, Reader
from .errors import OciError
from .tarheaders import BoundedTarInfo

WHITEOUT: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"
ENTRY_ALLOWANCE: Final = 512  # bytes charged per entry against the size cap
MODE_BITS: Final = 0o1777  # permissions and sticky; never set-user-ID or set-group-ID
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a layer member's name; () for the root itself.

    Refuses absolute names, ``..``, NUL bytes and over-long names. A leading ``./`` and
    empty components (``a//b``) are tolerated, as image tools write them.
    """
    if "\x00" in name:
        raise OciError(f"layer member {name[:200]!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise OciError(f"layer member {name[:200]!r} has an absolute name")
    if len(name.encode("utf-8", "surrogateescape")) > 4096:
        raise OciError(f"layer member {name[:200]!r}... has a name longer than 4096 bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise OciError(f"layer member {name[:200]!r} climbs out of the root with '..'")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise OciError(f"layer member {name[:200]!r} has a component longer than 255 bytes")
    return parts


def member_kind(member: tarfile.TarInfo) -> str:
    """What a member is: ``file``, ``dir``, ``symlink`` or ``hardlink``; refuses the rest."""
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        raise OciError(
            f"layer member {member.name[:200]!r} is a device file: environments may not "
            "carry device nodes (the runtime provides /dev)"
        )
    if member.isfifo():
        raise OciError(f"layer member {member.name[:200]!r} is a FIFO: not allowed in a layer")
    raise OciError(f"layer member {member.name[:200]!r} has unsupported tar type {member.type!r}")


class _HashingReader:
    """The uncompressed layer stream, hashed as tarfile reads it (for the diff ID)."""

    def __init__(self, source: IO[bytes] | Reader) -> None:
        self._source = source
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@contextlib.contextmanager
def _decompressed(source: Reader, compression: str, what: str) -> Iterator[IO[bytes] | Reader]:
    if compression == "":
        yield source
    elif compression == "gzip":
        with gzip.GzipFile(fileobj=source, mode="rb") as stream:  # type: ignore[call-overload]
            yield stream
    else:
        raise OciError(f"{what} has unknown compression {compression!r}")


class RootfsWriter:
    """A root file system being built, layer by layer, within ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        os.mkdir(root, 0o755)
        self.root = root
        self.max_bytes = max_bytes
        self.written = 0
        self._layer_paths: set[tuple[str, ...]] = set()

    # -- the walk ----------------------------------------------------------------------------

    def _open_dir(self, parts: tuple[str, ...], name: str, create: bool) -> int:
        """A descriptor of the directory ``parts`` under the root; refuses symbolic links."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, part in enumerate(parts):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._charge(0, name)
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._layer_paths.add(parts[: i + 1])
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise OciError(
                            f"layer member {name[:200]!r} lies under {'/'.join(parts[: i + 1])!r}, "
                            "which is not a directory (a symbolic link is never followed)"
                        ) from None
                    raise
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _charge(self, size: int, name: str) -> None:
        if self.written + size + ENTRY_ALLOWANCE > self.max_bytes:
            raise OciError(
                f"the environment grows beyond {self.max_bytes} bytes unpacked at layer member "
                f"{name[:200]!r}: it does not fit the scratch disk (use a bigger disk or a "
                "smaller image)",
                507,
            )
        self.written += size + ENTRY_ALLOWANCE

    @staticmethod
    def _remove(parent: int, leaf: str) -> None:
        try:
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(leaf, dir_fd=parent)
        else:
            os.unlink(leaf, dir_fd=parent)

    # -- layers ------------------------------------------------------------------------------

    def apply_layer(self, source: Reader, compression: str, diff_id: str | None, what: str) -> None:
        """Unpack one layer stream; with ``diff_id``, its uncompressed bytes must hash to it."""
        self._layer_paths = set()
        try:
            with _decompressed(source, compression, what) as stream:
                hashed = _HashingReader(stream)
                with tarfile.open(
                    fileobj=hashed, mode="r|", bufsize=CHUNK, tarinfo=BoundedTarInfo
                ) as archive:  # type: ignore[call-overload]
                    for member in archive:
                        self._apply(archive, member)
                hashed.drain()
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise OciError(f"{what} is not a well-formed layer: {exc}") from None
        except OSError as exc:
            if type(exc) is OSError and exc.errno is None:  # a decoder's, not the disk's
                raise OciError(f"{what} is not a well-formed layer: {exc}") from None
            raise _os_error(exc) from None
        actual = f"sha256:{hashed.hasher.hexdigest()}"
        if diff_id is not None and actual != diff_id:
            raise OciError(f"{what} uncompressed has digest {actual}, not its diff ID {diff_id}")

    def _apply(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = member_parts(member.name)
        kind = member_kind(member)
        if not parts:
            if kind != "dir":
                raise OciError(f"layer member {member.name!r} names the root but is a {kind}")
            return
        *parent_parts, leaf = parts
        if leaf.startswith(WHITEOUT) and kind != "dir":
            self._whiteout(tuple(parent_parts), leaf, member.name)
            return
        parent = self._open_dir(tuple(parent_parts), member.name, create=True)
        try:
            self._place(archive, member, kind, parent, leaf, parts)
        finally:
            os.close(parent)
        self._layer_paths.add(parts)

    def _whiteout(self, parent_parts: tuple[str, ...], leaf: str, name: str) -> None:
        try:
            parent = self._open_dir(parent_parts, name, create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        try:
            if leaf == OPAQUE:
                for entry in os.listdir(parent):
                    if (*parent_parts, entry) not in self._layer_paths:
                        self._remove(parent, entry)
                return
            hidden = leaf[len(WHITEOUT) :]
            if hidden in ("", ".", "..") or "/" in hidden:
                raise OciError(f"whiteout {name[:200]!r} does not name an entry of its directory")
            self._remove(parent, hidden)
        finally:
            os.close(parent)

    def _place(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        kind: str,
        parent: int,
        leaf: str,
        parts: tuple[str, ...],
    ) -> None:
        mode = member.mode & MODE_BITS
        if kind == "dir":
            self._charge(0, member.name)
            try:
                st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(leaf, dir_fd=parent)
                    os.mkdir(leaf, 0o755, dir_fd=parent)
            except FileNotFoundError:
                os.mkdir(leaf, 0o755, dir_fd=parent)
            os.chmod(leaf, mode | 0o700, dir_fd=parent, follow_symlinks=False)
            return
        self._remove(parent, leaf)
        if kind == "symlink":
            self._charge(len(member.linkname), member.name)
            os.symlink(member.linkname, leaf, dir_fd=parent)
        elif kind == "hardlink":
            self._charge(0, member.name)
            self._hardlink(member, parent, leaf)
        else:
            self._charge(member.size, member.name)
            data = archive.extractfile(member)
            if data is None:  # pragma: no cover - regular members always have data
                raise OciError(f"layer member {member.name!r} has no data")
            fd = os.open(leaf, _CREATE, mode, dir_fd=parent)
            try:
                while chunk := data.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        target = member_parts(member.linkname)
        if not target:
            raise OciError(f"hard link {member.name[:200]!r} points at the root")
        *target_parent, target_leaf = target
        try:
            source_dir = self._open_dir(tuple(target_parent), member.name, create=False)
        except FileNotFoundError:
            raise OciError(
                f"hard link {member.name[:200]!r} names {member.linkname[:200]!r}, "
                "which is not in the root"
            ) from None
        try:
            st = os.stat(target_leaf, dir_fd=source_dir, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise OciError(
                    f"hard link {member.name[:200]!r} names {member.linkname[:200]!r}, "
                    "which is not a regular file"
                )
            os.link(
                target_leaf,
                leaf,
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise OciError(
                f"hard link {member.name[:200]!r} names {member.linkname[:200]!r}, "
                "which is not in the root"
            ) from None
        finally:
            os.close(source_dir)


def _os_error(exc: OSError) -> OciError:
    if exc.errno == errno.ENOSPC:
        return OciError("the scratch disk is full while unpacking the environment", 507)
    return OciError(f"cannot unpack the environment: {exc.strerror}", 500)
