"""DSSE pre-authentication encoding and envelope signatures."""

from __future__ import annotations

import base64
import contextlib

import pytest
from aicert.verifier.errors import EnvelopeSignatureError, FormatError
from aicert.verifier.statement.dsse import (
    Envelope,
    Signature,
    b64decode,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
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
    with pytest.raises(EnvelopeSignatureError, match="signed by 'k2', not by the agent key"):
        verify_envelope(Envelope("t", b"payload", (Signature("k2", b"x"),)), key.public_key(), "k1")


def test_a_second_signature_is_refused_even_when_valid() -> None:
    # A generic DSSE consumer trusting the second key would take the statement as its own.
    agent, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    env = sign_envelope("t", b"payload", agent, "agent")
    second = sign_envelope("t", b"payload", other, "other").signatures[0]
    for signatures in ((*env.signatures, second), (second, *env.signatures)):
        both = Envelope(env.payload_type, env.payload, signatures)
        with pytest.raises(EnvelopeSignatureError, match="2 signatures"):
            verify_envelope(both, agent.public_key(), "agent")
    with pytest.raises(EnvelopeSignatureError, match="0 signatures"):
        verify_envelope(Envelope("t", b"payload", ()), agent.public_key(), "agent")


@pytest.mark.parametrize(
    "text",
    ["-_8=", "+/8", "+/9=", "+/8=\n", " +/8=", "+/8==", "=+/8", 3, "not base64!"],
)
def test_base64_has_one_spelling(text: object) -> None:
    # URL-safe letters, missing padding, non-zero pad bits, white space: all refused.
    assert b64decode("+/8=", "x") == b"\xfb\xff"
    with pytest.raises(FormatError):
        b64decode(text, "x")


@given(st.binary(max_size=64))
def test_base64_round_trips_and_any_other_spelling_is_refused(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert b64decode(text, "x") == data
    for other in {text.rstrip("="), text.replace("+", "-").replace("/", "_"), text + "\n"}:
        if other != text:
            with pytest.raises(FormatError):
                b64decode(other, "x")


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"signatures": [{"keyid": "k", "sig": "AA==", "cert": "x"}]},
        {"signatures": [{"sig": "AA=="}]},
    ],
)
def test_envelope_members_are_exact(change: dict[str, object]) -> None:
    doc = {"payloadType": "t", "payload": "AA==", "signatures": [{"keyid": "k", "sig": "AA=="}]}
    parse_envelope(doc)
    with pytest.raises(FormatError):
        parse_envelope({**doc, **change})


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_parse_envelope_raises_only_format_errors(obj: object) -> None:
    with contextlib.suppress(FormatError):
        parse_envelope(obj)
