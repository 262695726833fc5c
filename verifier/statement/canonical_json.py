"""RFC 8785 JSON Canonicalization Scheme (JCS).

CEL event contents and tree manifests are hashed in this form so any
implementation reproduces the same digest: object keys sorted by their UTF-16
code units, no insignificant white space, strings escaped minimally, numbers in
ECMAScript's shortest round-trip form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from ..errors import FormatError

JsonValue = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]

# Integers beyond 2**53 lose precision in ECMAScript; JCS serialises through doubles.
_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_SAFE_INTEGER_DIGITS = len(str(_MAX_SAFE_INTEGER))

_ESCAPES = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}


def canonicalize(value: JsonValue) -> bytes:
    """The JCS serialisation of ``value`` as UTF-8 bytes."""
    parts: list[str] = []
    _emit(value, parts)
    return "".join(parts).encode("utf-8")


def _emit(value: JsonValue, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise FormatError(f"integer {value} is outside the range JSON numbers keep exactly")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise FormatError("JSON object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise FormatError(f"cannot canonicalise a value of type {type(value).__name__}")


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise FormatError("JSON strings must not contain lone surrogates")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise FormatError("JSON has no representation for NaN or infinity")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires;
    # value = 0.DIGITS * 10**n.
    parts = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, parts.digits))
    n = len(digits) + int(parts.exponent)
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + exp
    return sign + body


def parse_json(data: bytes, what: str) -> object:
    """Parse untrusted JSON strictly: UTF-8, no duplicate keys, no NaN or infinity.

    Numbers must keep their value in an IEEE double, as RFC 8785 and I-JSON (RFC 7493)
    require: integers beyond 2**53 - 1 and decimals that overflow to infinity are
    refused, and so is any integer literal longer than that range before it is
    converted (Python's int conversion of huge literals is slow, and refused beyond
    4,300 digits).
    """

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        obj: dict[str, object] = {}
        for key, value in pairs:
            if key in obj:
                raise FormatError(f"{what}: duplicate key {key!r}")
            obj[key] = value
        return obj

    def no_constants(name: str) -> object:
        raise FormatError(f"{what}: {name} is not valid JSON")

    def exact_int(text: str) -> int:
        if len(text.lstrip("-")) > _MAX_SAFE_INTEGER_DIGITS or abs(int(text)) > _MAX_SAFE_INTEGER:
            raise FormatError(
                f"{what}: integer {_abbreviate(text)} is outside the range JSON numbers keep "
                f"exactly (±{_MAX_SAFE_INTEGER})"
            )
        return int(text)

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise FormatError(f"{what}: number {_abbreviate(text)} overflows a double")
        return value

    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constants,
            parse_int=exact_int,
            parse_float=finite_float,
        )
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from None


def _abbreviate(literal: str) -> str:
    return literal if len(literal) <= 24 else f"{literal[:12]}…({len(literal)} characters)"
