"""A bounds-checked cursor over untrusted bytes.

Every parser of TPM structures, event logs and PE files reads through
:class:`Reader`, so a truncated or lying length field becomes a
:class:`~aicert.verifier.errors.FormatError` naming what was being read, never an
``IndexError`` or a silent short read.
"""

from __future__ import annotations

from typing import Literal

from .errors import FormatError

Endian = Literal["big", "little"]


class Reader:
    """Reads integers and byte strings from ``data``, refusing to read past its end."""

    __slots__ = ("_data", "_endian", "_pos", "what")

    def __init__(self, data: bytes, *, endian: Endian, what: str) -> None:
        self._data = memoryview(data).toreadonly()
        self._endian: Endian = endian
        self._pos = 0
        self.what = what

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise FormatError(
                f"{self.what}: truncated reading {field} at offset {self._pos}: "
                f"need {n} bytes, {self.remaining} left"
            )
        chunk = self._data[self._pos : self._pos + n].tobytes()
        self._pos += n
        return chunk

    def uint(self, size: Literal[1, 2, 4, 8], field: str) -> int:
        return int.from_bytes(self.take(size, field), self._endian)

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def u32(self, field: str) -> int:
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        return self.uint(8, field)

    def sized(self, size_bytes: Literal[1, 2, 4], field: str, *, limit: int | None = None) -> bytes:
        """A length-prefixed byte string (TPM2B_*, TCG event data)."""
        n = self.uint(size_bytes, f"{field} size")
        if limit is not None and n > limit:
            raise FormatError(f"{self.what}: {field} is {n} bytes, more than the {limit} allowed")
        return self.take(n, field)

    def skip(self, n: int, field: str) -> None:
        self.take(n, field)

    def sub(self, n: int, field: str) -> Reader:
        """A reader over the next ``n`` bytes (consumed here)."""
        return Reader(self.take(n, field), endian=self._endian, what=f"{self.what}: {field}")

    def expect_end(self) -> None:
        if not self.at_end():
            raise FormatError(
                f"{self.what}: {self.remaining} unexpected trailing bytes at offset {self._pos}"
            )
