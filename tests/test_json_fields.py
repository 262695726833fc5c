"""One spelling per field: PCR indices, hex, object members (base64: test_dsse.py)."""

from __future__ import annotations

import pytest
from aicert.verifier.errors import FormatError
from aicert.verifier.json_fields import exact_members, lower_hex, pcr_index
from hypothesis import given
from hypothesis import strategies as st


@given(st.integers(min_value=0, max_value=23))
def test_canonical_pcr_indices_parse(index: int) -> None:
    assert pcr_index(str(index)) == index


@given(st.text(max_size=6))
def test_a_pcr_index_is_accepted_only_in_its_canonical_spelling(key: str) -> None:
    index = pcr_index(key)
    if index is not None:
        assert str(index) == key
        assert 0 <= index <= 23


@pytest.mark.parametrize(
    "key", ["07", "00", "+7", "-0", " 7", "7 ", "7.0", "\u0667", "24", "", "0x7"]
)
def test_other_spellings_of_pcr_indices_are_refused(key: str) -> None:
    assert pcr_index(key) is None


@given(st.binary(min_size=32, max_size=32))
def test_lower_hex_round_trips(data: bytes) -> None:
    assert lower_hex(data.hex(), 32, "x") == data


@given(st.text(alphabet="0123456789abcdefABCDEF ", min_size=64, max_size=64))
def test_lower_hex_accepts_only_lower_case_digits(text: str) -> None:
    if text == text.lower() and " " not in text:
        assert lower_hex(text, 32, "x").hex() == text
    else:
        with pytest.raises(FormatError):
            lower_hex(text, 32, "x")


@pytest.mark.parametrize("value", ["00" * 31, "00" * 33, "0" * 63 + "g", None, 0, "00" * 31 + "0 "])
def test_lower_hex_refuses_wrong_length_and_type(value: object) -> None:
    with pytest.raises(FormatError):
        lower_hex(value, 32, "x")


def test_exact_members_names_what_is_missing_or_unknown() -> None:
    exact_members({"a": 1, "b": 2}, ("a",), "doc", optional=("b",))
    with pytest.raises(FormatError, match="lacks 'a'"):
        exact_members({}, ("a",), "doc")
    with pytest.raises(FormatError, match=r"unknown member.*'c'"):
        exact_members({"a": 1, "c": 2}, ("a",), "doc")
