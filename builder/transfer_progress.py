"""A one-line progress display for long transfers: bytes, rate and time left.

It draws only on a terminal; elsewhere (CI logs, pipes) it stays quiet.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class TransferProgress:
    """Progress through ``total`` bytes of a source, and the bytes actually sent.

    Thread-safe: upload workers call :meth:`sent`, the reader calls :meth:`advance`.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.2,
    ) -> None:
        self.total = total
        self.label = label
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._lock = threading.Lock()
        self._position = 0
        self._sent = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._min_interval = min_interval

    def advance(self, position: int) -> None:
        """The source has been read up to ``position``."""
        with self._lock:
            self._position = max(self._position, position)
            self._maybe_draw()

    def sent(self, n: int) -> None:
        with self._lock:
            self._sent += n
            self._maybe_draw()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self._position / elapsed
        left = (self.total - self._position) / rate if rate > 0 else 0.0
        percent = 100.0 * self._position / self.total if self.total else 100.0
        return (
            f"{self.label}: {percent:5.1f}% of {human_bytes(self.total)}, "
            f"{human_bytes(self._sent)} sent, {human_bytes(rate)}/s, ETA {_clock(left)}"
        )

    def _maybe_draw(self) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self._min_interval:
            self._last_draw = now
            self._stream.write("\r" + self.line() + "\x1b[K")
            self._stream.flush()

    def finish(self) -> None:
        if self._enabled:
            with self._lock:
                self._stream.write("\r" + self.line() + "\x1b[K\n")
                self._stream.flush()
