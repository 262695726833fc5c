"""Blobs checked against their descriptor while they arrive: one pass, no second read.

:func:`receive_blob` writes a stream to a new file on the scratch disk, hashing each
chunk as it is written; more bytes than the descriptor's size are never read, and a
wrong size or digest removes the file. :func:`read_blob` does the same in memory for
the small JSON blobs (manifests, configs).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Final, Protocol

from .errors import OciError
from .media import MAX_CONFIG_BYTES, Descriptor

CHUNK: Final = 1024 * 1024
MAX_SMALL_BLOB: Final = MAX_CONFIG_BYTES  # the largest JSON blob ever read into memory
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _mismatch(what: str, descriptor: Descriptor, actual: str) -> OciError:
    return OciError(
        f"{what} has digest sha256:{actual}, not the {descriptor.digest} it was asked for; "
        "it was discarded"
    )


def _too_long(what: str, descriptor: Descriptor) -> OciError:
    return OciError(f"{what} is longer than the {descriptor.size} bytes its descriptor says")


def read_blob(source: Reader, descriptor: Descriptor, what: str) -> bytes:
    """All of a small blob (a manifest, index or config), checked."""
    if descriptor.size > MAX_SMALL_BLOB:
        raise OciError(f"{what} is {descriptor.size} bytes, more than the {MAX_SMALL_BLOB} allowed")
    data = source.read(descriptor.size + 1)
    while len(data) <= descriptor.size and (more := source.read(descriptor.size + 1 - len(data))):
        data += more
    if len(data) > descriptor.size:
        raise _too_long(what, descriptor)
    if len(data) < descriptor.size:
        raise OciError(f"{what} ended after {len(data)} of {descriptor.size} bytes")
    actual = hashlib.sha256(data).hexdigest()
    if f"sha256:{actual}" != descriptor.digest:
        raise _mismatch(what, descriptor, actual)
    return data


def receive_blob(
    source: Reader,
    dest: Path,
    descriptor: Descriptor,
    what: str,
    stop: threading.Event | None = None,
) -> None:
    """Write exactly ``descriptor.size`` bytes of ``source`` to the new file ``dest``,
    hashing each chunk as it is written; a short stream or another digest removes it.

    Nothing beyond the size is read: :func:`check_end` refuses a longer registry answer.
    ``stop``, once set, ends the transfer early (another part of the intake failed).
    """
    try:
        fd = os.open(dest, _CREATE, 0o644)
    except OSError as exc:
        raise _os_error(exc, dest) from None
    try:
        hasher = hashlib.sha256()
        left = descriptor.size
        while left > 0:
            if stop is not None and stop.is_set():
                raise OciError(f"{what}: stopped, another part of the image was refused")
            data = source.read(min(CHUNK, left))
            if not data:
                raise OciError(
                    f"{what} ended after {descriptor.size - left} of {descriptor.size} bytes"
                )
            left -= len(data)
            hasher.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        actual = hasher.hexdigest()
        if f"sha256:{actual}" != descriptor.digest:
            raise _mismatch(what, descriptor, actual)
    except OSError as exc:
        os.close(fd)
        _remove(dest)
        raise _os_error(exc, dest) from None
    except BaseException:
        os.close(fd)
        _remove(dest)
        raise
    os.close(fd)


def check_end(source: Reader, descriptor: Descriptor, what: str) -> None:
    """Refuse a stream that goes on past its descriptor's size (a registry response)."""
    if source.read(1):
        raise _too_long(what, descriptor)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _os_error(exc: OSError, dest: Path) -> OciError:
    if exc.errno == errno.ENOSPC:
        return OciError(f"the scratch disk is full while writing {dest}", 507)
    return OciError(f"cannot write {dest}: {exc.strerror}", 500)
