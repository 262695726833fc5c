"""RFC 8785 canonicalisation, checked against the independent ``rfc8785`` package."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
import rfc8785
from aicert.verifier.errors import FormatError
from aicert.verifier.statement.canonical_json import canonicalize, parse_json
from hypothesis import given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_matches_rfc8785_reference(value: object) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


@given(st.binary(min_size=8, max_size=8))
def test_every_finite_double_matches_reference(raw: bytes) -> None:
    (x,) = struct.unpack("<d", raw)
    if math.isfinite(x):
        assert canonicalize(x) == rfc8785.dumps(x)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (123.0, b"123"),
        (-0.0, b"0"),
        (0.000001, b"0.000001"),
        ({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}'),
        ("\u20ac\n\x01", b'"\xe2\x82\xac\\n\\u0001"'),
        # Keys sort by UTF-16 code units: U+FB33 (one unit) after U+1F600 (a surrogate pair).
        ({"\ufb33": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ufb33":1}'.encode()),
    ],
)
def test_fixed_vectors(value: object, expected: bytes) -> None:
    assert canonicalize(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**60, {1: 2}, b"bytes", "\ud800"])
def test_refuses_what_json_cannot_hold(bad: object) -> None:
    with pytest.raises(FormatError):
        canonicalize(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [b'{"a":1,"a":2}', b"[NaN]", b'{"a":Infinity}', b"\xff", b"{", b"[" * 100_000],
)
def test_parse_json_is_strict(text: bytes) -> None:
    with pytest.raises(FormatError):
        parse_json(text, "test")


@given(st.binary(max_size=200))
def test_parse_json_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_json(data, "fuzz")


@pytest.mark.parametrize(
    "text",
    [
        b"7" * 5000,  # beyond Python's 4,300-digit conversion limit
        b'{"a": -' + b"1" * 4301 + b"}",
        b"9007199254740992",
        b"[-9007199254740992]",
        b"1e400",
        b"-1e400",
    ],
)
def test_numbers_json_cannot_keep_exactly_are_format_errors(text: bytes) -> None:
    with pytest.raises(FormatError):
        parse_json(text, "doc")


@settings(deadline=None)  # timing is not what is tested
@given(st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1))
def test_exact_integers_parse(n: int) -> None:
    assert parse_json(str(n).encode(), "doc") == n


# Bounded so that str() in the test itself stays below Python's digit limit.
@settings(deadline=None)
@given(st.integers(min_value=-(10**400), max_value=10**400).filter(lambda n: abs(n) > 2**53 - 1))
def test_inexact_integers_are_refused(n: int) -> None:
    with pytest.raises(FormatError, match="outside the range"):
        parse_json(str(n).encode(), "doc")
