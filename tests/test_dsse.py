"""DSSE pre-authentication encoding and envelope signatures."""

from __future__ import annotations

import contextlib

import pytest
from aicert.verifier.dsse import (
    Envelope,
    Signature,
    b64decode,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from aicert.verifier.errors import EnvelopeSignatureError, FormatError
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st


def test_pae_matches_the_specification_example() -> None:
    # The example from the DSSE v1 protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "


def test_sign_verify_round_trip_through_json() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    env = sign_envelope("application/vnd.in-toto+json", b'{"a":1}', key, "k1")
    parsed = parse_envelope(env.to_json())
    assert parsed == env
    verify_envelope(parsed, key.public_key(), "k1")


def test_other_key_or_payload_fails() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    env = sign_envelope("t", b"payload", key, "k1")
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(EnvelopeSignatureError, match="does not verify"):
        verify_envelope(env, other.public_key(), "k1")
    tampered = Envelope(env.payload_type, b"payloaD", env.signatures)
    with pytest.raises(EnvelopeSignatureError, match="does not verify"):
        verify_envelope(tampered, key.public_key(), "k1")
    with pytest.raises(EnvelopeSignatureError, match="no signature"):
        verify_envelope(Envelope("t", b"payload", (Signature("k2", b"x"),)), key.public_key(), "k1")


def test_base64_accepts_url_safe_and_refuses_garbage() -> None:
    assert b64decode("-_8", "x") == b"\xfb\xff"
    with pytest.raises(FormatError):
        b64decode("not base64!", "x")
    with pytest.raises(FormatError):
        b64decode(3, "x")


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_parse_envelope_raises_only_format_errors(obj: object) -> None:
    with contextlib.suppress(FormatError):
        parse_envelope(obj)
