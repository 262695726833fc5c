"""A strict decoder for the CBOR (RFC 8949) that Nitro attestation documents use.

Untrusted bytes: every length is checked against what is left before anything is
read, and nesting is capped. Arrays and maps may have indefinite length (NitroTPM
documents are an indefinite-length map); strings may not. Floats and simple values
other than false, true and null have no place in a document and are refused, so
is a map with a repeated key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ..errors import FormatError

MAX_DEPTH = 16
_INDEFINITE = 31
_BREAK = 0xFF


@dataclass(frozen=True)
class Tagged:
    """A tagged item (major type 6), e.g. COSE_Sign1's optional tag 18."""

    tag: int
    value: CborValue


CborKey: TypeAlias = int | bytes | str
CborValue: TypeAlias = (
    "int | bytes | str | bool | list[CborValue] | dict[CborKey, CborValue] | Tagged | None"
)


def head(major: int, argument: int) -> bytes:
    """A CBOR initial byte with its argument in the shortest form (for the few fixed
    structures this project encodes: COSE's Sig_structure, NitroTPM's request)."""
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
    raise ValueError(f"CBOR argument {argument} does not fit 64 bits")


def decode(data: bytes, what: str) -> CborValue:
    """The one CBOR item that is all of ``data``."""
    value, used = decode_prefix(data, what)
    if used != len(data):
        raise FormatError(f"{what}: {len(data) - used} bytes after the CBOR item")
    return value


def decode_prefix(data: bytes, what: str) -> tuple[CborValue, int]:
    """The CBOR item at the start of ``data`` and its length (what follows is ignored)."""
    return _Reader(data, what).item(0)


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.pos = 0

    def fail(self, message: str) -> FormatError:
        return FormatError(f"{self.what}: {message} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"needs {n} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def argument(self, info: int) -> int:
        if info < 24:
            return info
        if info > 27:
            raise self.fail(f"reserved additional information {info}")
        return int.from_bytes(self.take(1 << (info - 24)), "big")

    def at_break(self) -> bool:
        """Whether an indefinite-length container ends here (consuming the break)."""
        if self.pos >= len(self.data):
            raise self.fail("indefinite-length container has no break")
        if self.data[self.pos] == _BREAK:
            self.pos += 1
            return True
        return False

    def count(self, n: int, unit: int) -> int:
        # Each element takes at least ``unit`` bytes: a count beyond that is a lie.
        if n > (len(self.data) - self.pos) // unit:
            left = len(self.data) - self.pos
            raise self.fail(f"claims {n} elements, more than the {left} bytes left can hold")
        return n

    def item(self, depth: int) -> tuple[CborValue, int]:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        head = self.take(1)[0]
        major, info = head >> 5, head & 0x1F
        if major == 7:
            return self.simple(info), self.pos
        if info == _INDEFINITE:
            return self.indefinite(major, depth), self.pos
        n = self.argument(info)
        value: CborValue
        if major == 0:
            value = n
        elif major == 1:
            value = -1 - n
        elif major == 2:
            value = self.take(n)
        elif major == 3:
            try:
                value = self.take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("text string is not UTF-8") from None
        elif major == 4:
            value = [self.item(depth + 1)[0] for _ in range(self.count(n, 1))]
        elif major == 5:
            value = self.map(self.count(n, 2), depth)
        else:
            value = Tagged(n, self.item(depth + 1)[0])
        return value, self.pos

    def indefinite(self, major: int, depth: int) -> CborValue:
        if major == 4:
            items: list[CborValue] = []
            while not self.at_break():
                items.append(self.item(depth + 1)[0])
            return items
        if major == 5:
            out: dict[CborKey, CborValue] = {}
            while not self.at_break():
                self.entry(out, depth)
            return out
        raise self.fail("indefinite length is accepted for arrays and maps only")

    def map(self, n: int, depth: int) -> dict[CborKey, CborValue]:
        out: dict[CborKey, CborValue] = {}
        for _ in range(n):
            self.entry(out, depth)
        return out

    def entry(self, out: dict[CborKey, CborValue], depth: int) -> None:
        key = self.item(depth + 1)[0]
        if isinstance(key, bool) or not isinstance(key, int | bytes | str):
            raise self.fail("map key is not an integer, byte string or text string")
        if key in out:
            raise self.fail(f"map key {key!r} repeated")
        out[key] = self.item(depth + 1)[0]

    def simple(self, info: int) -> CborValue:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        raise self.fail(f"simple value or float (additional info {info}) is not accepted")
