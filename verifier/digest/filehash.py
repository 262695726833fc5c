"""The digest of one file's contents, and hashing one byte range of a file on disk.

A file's digest depends on its bytes and the shard size ``S`` only:

* ``S == 0`` or ``size <= S``: the plain SHA-256 of the contents (what ``sha256sum`` prints);
* ``size > S``: SHA-256 over ``b"aicert-shards-v1\\0" || u64be(S) || u64be(size)`` followed by
  the SHA-256 of each ``S``-byte shard in file order (the last shard may be shorter).

Plain SHA-256 is inherently sequential, so one large file can only be hashed on several
cores if its digest is built from independently hashed shards. The construction does not
depend on how many workers hash the shards. See ``docs/tree-digest.md``.
:class:`StreamingHasher` computes the same digest from chunks fed in file order.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from typing import Final

from ..errors import InputError
from ..progress import Progress

MiB: Final = 1024 * 1024

# 256 MiB: at ~2 GB/s per core a shard takes ~0.13 s, so the idle tail when shards do not
# divide evenly among workers stays short, while a 100 GB file still has only ~400 shard
# digests; files up to 256 MiB (configs, tokenizers, small weights) keep a plain SHA-256.
DEFAULT_SHARD_SIZE: Final = 256 * MiB

# A manifest from elsewhere names its shard size; a tiny one would make re-hashing do one
# SHA-256 per few bytes, so anything below 64 KiB is refused.
MIN_SHARD_SIZE: Final = 64 * 1024

# Largest integer a JSON number keeps exactly (RFC 8785 serialises through doubles).
MAX_JSON_INT: Final = 2**53 - 1

# One reused buffer per worker; 1 MiB stays in the L2 cache and was as fast as larger reads.
READ_SIZE: Final = 1 * MiB

SHARD_DOMAIN: Final = b"aicert-shards-v1\x00"

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class FileDigest:
    """The digest of one file's contents.

    ``digest`` is the manifest digest under ``shard_size`` (hex); ``sha256`` is the plain
    SHA-256 of the contents (hex) when it is known: always when the file is no larger than
    one shard, otherwise only if it was asked for.
    """

    size: int
    shard_size: int
    digest: str
    sha256: str | None


@dataclass(frozen=True)
class StatSnapshot:
    """What identifies a file's state: its inode and the fields a write changes."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatSnapshot:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_shard_size(shard_size: int) -> None:
    """Refuse a shard size outside ``0`` (no sharding) or ``[MIN_SHARD_SIZE, 2**53)``."""
    if shard_size != 0 and not MIN_SHARD_SIZE <= shard_size <= MAX_JSON_INT:
        raise InputError(
            f"shard size {shard_size} is invalid: use 0 (plain SHA-256 per file) "
            f"or at least {MIN_SHARD_SIZE} bytes"
        )


def is_sharded(size: int, shard_size: int) -> bool:
    """Whether a file of ``size`` bytes gets the shard construction rather than plain SHA-256."""
    return shard_size != 0 and size > shard_size


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` of each shard; one range covering the file if it is not sharded."""
    if not is_sharded(size, shard_size):
        return [(0, size)]
    return [(start, min(shard_size, size - start)) for start in range(0, size, shard_size)]


def combine_shards(shard_size: int, size: int, shard_digests: list[bytes]) -> bytes:
    """The digest of a sharded file from the SHA-256 of each of its shards, in order."""
    expected = len(shard_ranges(size, shard_size))
    if not is_sharded(size, shard_size) or len(shard_digests) != expected:
        raise ValueError(f"{len(shard_digests)} shard digests for a {size}-byte file")
    outer = hashlib.sha256(SHARD_DOMAIN)
    outer.update(struct.pack(">QQ", shard_size, size))
    for digest in shard_digests:
        outer.update(digest)
    return outer.digest()


def open_listed(path: str, listed: StatSnapshot, *, follow: bool) -> int:
    """Open ``path`` for reading, refusing anything but the very file seen when it was listed.

    ``O_NOFOLLOW`` refuses a symlink swapped in (unless ``follow``); ``O_NONBLOCK`` keeps a
    FIFO swapped in from blocking the open; the inode and change fields must match.
    """
    flags = _OPEN_FLAGS & ~os.O_NOFOLLOW if follow else _OPEN_FLAGS
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{path}: vanished while the tree was being hashed") from None
    except PermissionError:
        raise InputError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or StatSnapshot.of(st) != listed:
            raise InputError(f"{path}: was replaced or modified after it was listed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def hash_range(
    path: str,
    listed: StatSnapshot,
    *,
    offset: int,
    length: int,
    buf: bytearray,
    progress: Progress,
    follow: bool = False,
) -> bytes:
    """SHA-256 of ``length`` bytes of ``path`` at ``offset``, read into the reused ``buf``.

    Fails if the file is not the one listed, is short, or changes while it is read.
    """
    fd = open_listed(path, listed, follow=follow)
    try:
        if length:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
        hasher = hashlib.sha256()
        view = memoryview(buf)
        done = 0
        while done < length:
            want = min(len(buf), length - done)
            try:
                got = os.preadv(fd, [view[:want]], offset + done)
            except OSError as exc:
                raise InputError(f"{path}: read failed: {exc.strerror}") from None
            if got == 0:
                raise InputError(f"{path}: became shorter while it was being hashed")
            hasher.update(view[:got])
            done += got
            progress.advance(got)
        if StatSnapshot.of(os.fstat(fd)) != listed:
            raise InputError(f"{path}: changed while it was being hashed")
        return hasher.digest()
    finally:
        os.close(fd)


class StreamingHasher:
    """The digest of a byte stream under ``shard_size``, fed chunk by chunk in file order.

    With ``plain_sha256`` the plain SHA-256 is also computed for streams longer than one
    shard (for shorter ones the digest already is the plain SHA-256).
    """

    def __init__(self, shard_size: int = DEFAULT_SHARD_SIZE, *, plain_sha256: bool = False) -> None:
        check_shard_size(shard_size)
        self.shard_size = shard_size
        self.size = 0
        self._shard = hashlib.sha256()
        self._shard_fill = 0
        self._shards: list[bytes] = []
        self._plain = hashlib.sha256() if plain_sha256 and shard_size else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._plain is not None:
            self._plain.update(view)
        self.size += len(view)
        if not self.shard_size:
            self._shard.update(view)
            return
        while view:
            # A shard is closed only when more bytes follow it, so a stream of exactly k
            # shards ends with a full open shard rather than an empty one.
            if self._shard_fill == self.shard_size:
                self._shards.append(self._shard.digest())
                self._shard = hashlib.sha256()
                self._shard_fill = 0
            take = min(len(view), self.shard_size - self._shard_fill)
            self._shard.update(view[:take])
            self._shard_fill += take
            view = view[take:]

    def result(self) -> FileDigest:
        if not self._shards:
            plain = self._shard.hexdigest()
            return FileDigest(self.size, self.shard_size, plain, plain)
        shards = [*self._shards, self._shard.digest()]
        digest = combine_shards(self.shard_size, self.size, shards).hex()
        sha256 = None if self._plain is None else self._plain.hexdigest()
        return FileDigest(self.size, self.shard_size, digest, sha256)
