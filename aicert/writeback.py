"""Write a growing file's dirty pages to disk while it is still being written.

Without this, the kernel starts writeback only once dirty pages pass its background
threshold (10 % of RAM by default) or age (30 s), so a stream of a few GB sits in the page
cache until the final ``fsync``, which then waits for the whole file, after the hashing,
instead of during it. Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` queues a range
for writeback without waiting for it; Python has no binding, so it is called through
ctypes. It is only a hint: where it is missing or refused, nothing is queued early and
the final ``fsync`` alone makes the file durable (and reports any write error).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Final

SYNC_FILE_RANGE_WRITE: Final = 2
DEFAULT_STEP: Final = 8 * 1024 * 1024

_SyncFileRange = Callable[[int, int, int, int], int]


def _load_sync_file_range() -> _SyncFileRange | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range: Final = _load_sync_file_range()


class WriteBehind:
    """Queues each further ``step`` bytes written to ``fd`` for writeback, without waiting."""

    def __init__(self, fd: int, step: int = DEFAULT_STEP) -> None:
        self._fd = fd
        self._step = step
        self._written = 0
        self._queued = 0
        self._hint = _sync_file_range

    @property
    def enabled(self) -> bool:
        return self._hint is not None

    @property
    def queued(self) -> int:
        """Bytes from the start of the file queued for writeback so far."""
        return self._queued

    def wrote(self, nbytes: int) -> None:
        """Record ``nbytes`` more written at the end of the file."""
        self._written += nbytes
        pending = self._written - self._queued
        if self._hint is None or pending < self._step:
            return
        if self._hint(self._fd, self._queued, pending, SYNC_FILE_RANGE_WRITE) != 0:
            # Refused (e.g. EINVAL on a file system without it, ESPIPE on a pipe): stop
            # hinting; the final fsync still flushes the file and reports errors.
            self._hint = None
            return
        self._queued = self._written
