"""The certificate container's one encoding, as properties over generated documents."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aicert.verifier.errors import FormatError
from aicert.verifier.logs.cel import make_record
from aicert.verifier.statement.certificate import MEDIA_TYPE, parse_certificate
from hypothesis import given, settings
from hypothesis import strategies as st

b64 = st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
pcr_values = st.dictionaries(
    st.integers(min_value=0, max_value=23), st.binary(min_size=32, max_size=32), max_size=24
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed certificate containers (shape only: nothing here is signed)."""
    records = [
        make_record(i, {"event": "x", "n": i}).to_json() for i in range(draw(st.integers(0, 3)))
    ]
    return {
        "mediaType": MEDIA_TYPE,
        "envelope": {
            "payloadType": "application/vnd.in-toto+json",
            "payload": draw(b64),
            "signatures": [{"keyid": draw(st.text(max_size=8)), "sig": draw(b64)}],
        },
        "agentPublicKey": draw(b64),
        "tpm": {
            "quote": {"attest": draw(b64), "signature": draw(b64)},
            "pcrs": {"sha256": {str(i): v.hex() for i, v in draw(pcr_values).items()}},
            "akPublic": draw(b64),
            "akCertificates": draw(st.lists(b64, min_size=1, max_size=3)),
            "firmwareEventLog": draw(b64),
            "celLog": records,
        },
    }


def _parse(doc: dict[str, Any]) -> object:
    return parse_certificate(json.dumps(doc).encode())


@settings(deadline=None)  # timing is not what is tested
@given(documents())
def test_every_well_formed_document_round_trips(doc: dict[str, Any]) -> None:
    assert parse_certificate(json.dumps(doc).encode()).to_json() == doc


@settings(deadline=None)  # timing is not what is tested
@given(documents(), st.integers(min_value=0, max_value=23), st.sampled_from(["0", "00", "+", " "]))
def test_a_pcr_index_with_any_prefix_is_refused(
    doc: dict[str, Any], index: int, prefix: str
) -> None:
    doc["tpm"]["pcrs"]["sha256"][prefix + str(index)] = "00" * 32
    with pytest.raises(FormatError, match="PCR index"):
        _parse(doc)


@settings(deadline=None)  # timing is not what is tested
@given(
    documents(),
    st.sampled_from([(), ("tpm",), ("tpm", "quote"), ("envelope",)]),
    st.text(min_size=1, max_size=12),
)
def test_an_unknown_member_anywhere_is_refused(
    doc: dict[str, Any], where: tuple[str, ...], name: str
) -> None:
    target = doc
    for key in where:
        target = target[key]
    if name in target:
        return
    target[name] = 0
    with pytest.raises(FormatError, match="unknown member"):
        _parse(doc)
