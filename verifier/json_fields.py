"""The one accepted encoding of each kind of field in aicert's JSON documents.

Certificates and profiles are parsed so that two different documents never carry the
same evidence: a PCR index is plain decimal (``"7"``, never ``"07"``, ``"+7"`` or a
non-ASCII digit), hex is lower case with no separators, base64 is the standard padded
alphabet (RFC 4648 section 4) with zero pad bits, and an object holds exactly the
members its format names. Everything else is a FormatError.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping

from .errors import FormatError

MAX_PCR_INDEX = 23

_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,2})")
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def pcr_index(key: str) -> int | None:
    """The PCR number ``key`` spells in canonical decimal, or None."""
    if not _DECIMAL.fullmatch(key):
        return None
    index = int(key)
    return index if index <= MAX_PCR_INDEX else None


def lower_hex(value: object, size: int, where: str) -> bytes:
    """Exactly ``size`` bytes written as ``2 * size`` lower-case hex digits."""
    if not isinstance(value, str) or len(value) != 2 * size or not _LOWER_HEX.fullmatch(value):
        raise FormatError(f"{where} must be {2 * size} lower-case hex digits")
    return bytes.fromhex(value)


def b64decode(value: object, where: str) -> bytes:
    """Standard padded base64 whose re-encoding is the same text, nothing else."""
    if not isinstance(value, str):
        raise FormatError(f"{where} must be a base64 string")
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise FormatError(f"{where} is not standard padded base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{where} is not standard padded base64") from None
    if base64.b64encode(data).decode("ascii") != value:
        # Non-zero pad bits: another spelling of the same bytes.
        raise FormatError(f"{where} is not canonical base64 (non-zero padding bits)")
    return data


def exact_members(
    obj: Mapping[str, object],
    required: Collection[str],
    where: str,
    optional: Collection[str] = (),
) -> None:
    """Refuse an object that lacks a required member or has one the format does not name."""
    missing = [name for name in required if name not in obj]
    if missing:
        raise FormatError(f"{where} lacks {', '.join(map(repr, missing))}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise FormatError(f"{where} has unknown member(s) {', '.join(map(repr, unknown))}")
