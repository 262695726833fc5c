"""Progress reporting for long hashing jobs: bytes done, rate and time left.

Hashing code calls a :class:`Progress`; callers plug in their own (the agent logs, a
builder UI draws) or take :func:`progress_for`, which draws on a terminal and stays quiet
when the stream is a pipe or a file. ``advance`` is called from worker threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    """Receives progress of one job: ``start`` once, ``advance`` per chunk, ``finish`` once."""

    def start(self, total_bytes: int | None) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, total_bytes: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``1.50 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` or ``M:SS``."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TerminalProgress:
    """Redraws one status line on ``stream`` at most every ``interval`` seconds."""

    def __init__(self, stream: TextIO, *, label: str = "hashing", interval: float = 0.2) -> None:
        self._stream = stream
        self._label = label
        self._interval = interval
        self._lock = threading.Lock()
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._last_draw = 0.0

    @property
    def done(self) -> int:
        return self._done

    def start(self, total_bytes: int | None) -> None:
        with self._lock:
            self._total = total_bytes
            self._done = 0
            self._started = self._last_draw = time.monotonic()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if now - self._last_draw >= self._interval:
                self._last_draw = now
                self._draw(now)

    def finish(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def status_line(self, now: float) -> str:
        """The text drawn at time ``now`` (``time.monotonic()``)."""
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        parts = [self._label, format_bytes(self._done)]
        if self._total is not None:
            parts[-1] += f" / {format_bytes(self._total)}"
        parts.append(f"{format_bytes(rate)}/s")
        if self._total is not None and rate > 0:
            parts.append(f"ETA {format_duration(max(self._total - self._done, 0) / rate)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        # \r and clear-to-end-of-line redraw in place without scrolling the terminal.
        self._stream.write("\r" + self.status_line(now) + "\x1b[K")
        self._stream.flush()


def progress_for(stream: TextIO | None = None, *, label: str = "hashing") -> Progress:
    """A terminal progress line on ``stream`` (default stderr) if it is a TTY, else silence."""
    target = sys.stderr if stream is None else stream
    if target.isatty():
        return TerminalProgress(target, label=label)
    return NullProgress()
