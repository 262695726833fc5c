"""The agent on a NitroTPM: its own AK, and the attestation document that names it.

A real swtpm (no persistent AK, no GCE templates) sits behind the NitroTPM stand-in
(tests/nitro_standin.py), which answers NitroTPM's attestation command; without the
stand-in the same swtpm is a TPM that is not a NitroTPM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import cbor2
import pytest
from agent_harness import running_agent
from aicert.agent import nitro
from aicert.agent.nitro import (
    check_vendor_response,
    encode_request,
    parse_answer,
    request_attestation_document,
)
from aicert.agent.tpm import NITRO_AK, AgentTpm
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import TpmError
from aicert.verifier.tpm.tpm2_structures import (
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_USER_WITH_AUTH,
    parse_tpm2b_public,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from nitro_pki import PROTECTED_HEADER
from nitro_standin import NitroStandin, standin_for

NONCE = hashlib.sha256(b"agent key").digest()


@pytest.fixture
def standin(running_swtpm: Swtpm) -> Iterator[NitroStandin]:
    with standin_for(running_swtpm) as proxy:
        yield proxy


@pytest.fixture
def tpm(standin: NitroStandin) -> Iterator[AgentTpm]:
    with AgentTpm(standin.tcti) as agent_tpm:
        yield agent_tpm


def open_document(document: bytes) -> dict[str, object]:
    """The payload of a COSE_Sign1 document, after checking its ES384 signature with the
    certificate it carries (the chain is the verifier's business)."""
    envelope = cbor2.loads(document)
    assert isinstance(envelope, list)
    assert len(envelope) == 4
    protected, unprotected, payload, signature = envelope
    assert protected == PROTECTED_HEADER
    assert unprotected == {}
    fields = cbor2.loads(payload)
    leaf = x509.load_der_x509_certificate(fields["certificate"]).public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    der_signature = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    leaf.verify(der_signature, to_sign, ec.ECDSA(hashes.SHA384()))
    assert isinstance(fields, dict)
    return fields


# --------------------------------------------------------------------------- the AK


@pytest.mark.swtpm
def test_the_ak_is_the_agents_own_restricted_signing_key(tpm: AgentTpm) -> None:
    assert tpm.ak_source() == NITRO_AK
    public = tpm.ak_public()
    ak = parse_tpm2b_public(public)
    assert ak.is_restricted_signing_key
    assert ak.fixed_tpm
    assert ak.fixed_parent
    assert ak.object_attributes & ATTR_SENSITIVE_DATA_ORIGIN
    assert ak.object_attributes & ATTR_USER_WITH_AUTH
    key = ak.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    # The TPM's Name of it: nameAlg SHA-256, then SHA-256 of the TPMT_PUBLIC.
    assert tpm.ak_name() == b"\x00\x0b" + hashlib.sha256(public[2:]).digest()
    assert tpm.ak_public() == public  # one AK for the connection, not one per call


@pytest.mark.swtpm
def test_the_ak_is_the_same_key_on_every_connection(standin: NitroStandin) -> None:
    """A primary from the owner seed: every agent start of the boot gets the same AK."""
    with AgentTpm(standin.tcti) as first:
        public = first.ak_public()
    with AgentTpm(standin.tcti) as second:
        assert second.ak_public() == public


# --------------------------------------------------------------------------- the document


@pytest.mark.swtpm
def test_the_document_names_the_ak_and_the_nonce_and_shows_the_sha384_pcrs(
    tpm: AgentTpm, standin: NitroStandin
) -> None:
    tpm.extend(15, b"something measured")
    before = tpm.nv_indices()
    document = request_attestation_document(tpm, user_data=tpm.ak_name(), nonce=NONCE)
    fields = open_document(document)
    assert fields["user_data"] == tpm.ak_name()
    assert fields["nonce"] == NONCE
    assert fields["public_key"] is None
    assert fields["digest"] == "SHA384"
    assert fields["nitrotpm_pcrs"] == tpm.read_pcrs("sha384")
    assert standin.requests == [{"user_data": tpm.ak_name(), "nonce": NONCE, "public_key": None}]
    # The request index is gone: neither swtpm nor the stand-in holds it.
    assert tpm.nv_indices() == before
    assert standin.held == {}


@pytest.mark.swtpm
def test_ak_evidence_is_a_document_over_the_agent_key_and_no_certificate(
    tpm: AgentTpm,
) -> None:
    agent_key = b"an agent SubjectPublicKeyInfo"
    evidence = tpm.ak_evidence(agent_key, intermediates=(b"never used",))
    assert evidence.certificates == ()
    fields = open_document(evidence.nitro_document)
    assert fields["user_data"] == tpm.ak_name()
    assert fields["nonce"] == hashlib.sha256(agent_key).digest()


@pytest.mark.swtpm
def test_an_nsm_error_is_a_one_line_tpm_error_and_leaves_no_index(
    tpm: AgentTpm, standin: NitroStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the agent's own limit, NitroTPM (here the stand-in) answers InputTooLarge."""
    monkeypatch.setattr(nitro, "MAX_USER_DATA", 4096)
    before = tpm.nv_indices()
    with pytest.raises(TpmError, match=r"NitroTPM refused .*: InputTooLarge") as info:
        request_attestation_document(tpm, user_data=b"u" * 600, nonce=NONCE)
    assert "\n" not in str(info.value)
    assert len(standin.requests) == 1
    assert tpm.nv_indices() == before
    assert standin.held == {}


@pytest.mark.swtpm
@pytest.mark.parametrize(
    ("user_data", "nonce", "message"),
    [(b"u" * 513, b"", "user_data is 513 bytes"), (b"", b"n" * 513, "nonce is 513 bytes")],
)
def test_oversize_fields_are_refused_before_anything_is_sent(
    tpm: AgentTpm, standin: NitroStandin, user_data: bytes, nonce: bytes, message: str
) -> None:
    before = tpm.nv_indices()
    with pytest.raises(TpmError, match=f"{message}; NitroTPM takes at most 512"):
        request_attestation_document(tpm, user_data=user_data, nonce=nonce)
    assert standin.requests == []
    assert tpm.nv_indices() == before


@pytest.mark.swtpm
def test_a_tpm_that_is_not_a_nitrotpm_says_so(running_swtpm: Swtpm) -> None:
    """swtpm itself: its NV indices are too small for NitroTPM's answer."""
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.ak_source() == NITRO_AK
        before = tpm.nv_indices()
        with pytest.raises(TpmError, match="no AK certificate and is not a NitroTPM") as info:
            tpm.ak_evidence(b"agent key")
        assert "Trusted Launch or Shielded VM" in str(info.value)
        assert "\n" not in str(info.value)
        assert tpm.nv_indices() == before


@pytest.mark.swtpm
def test_the_agent_stops_at_start_on_a_tpm_that_vouches_for_no_ak(
    running_swtpm: Swtpm, local_ca: LocalCa
) -> None:
    """Before agent-start is measured: PCR 15 stays as it was, for a later agent."""
    with AgentTpm(running_swtpm.tcti) as tpm:
        pcr15 = tpm.read_pcrs(pcrs=[15])
    with (
        pytest.raises(TpmError, match="no AK certificate and is not a NitroTPM"),
        running_agent(running_swtpm.tcti, local_ca),
    ):
        pass
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.read_pcrs(pcrs=[15]) == pcr15


@pytest.mark.swtpm
def test_a_tpm_without_the_attestation_command_says_so(running_swtpm: Swtpm) -> None:
    """Large NV indices but no vendor command: swtpm answers TPM_RC_COMMAND_CODE."""
    with standin_for(running_swtpm, answers_attestation=False) as proxy:
        with AgentTpm(proxy.tcti) as tpm:
            before = tpm.nv_indices()
            with pytest.raises(TpmError, match="does not know the attestation command 0x20000001"):
                request_attestation_document(tpm, user_data=b"", nonce=NONCE)
            assert tpm.nv_indices() == before
        assert proxy.held == {}


# --------------------------------------------------------------------------- the wire


_FIELD = st.none() | st.binary(max_size=600)


@given(user_data=_FIELD, nonce=_FIELD, public_key=_FIELD)
def test_the_request_is_serdes_cbor_of_request_attestation(
    user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> None:
    encoded = encode_request(user_data=user_data, nonce=nonce, public_key=public_key)
    expected = {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
    assert cbor2.loads(encoded) == expected
    # Definite lengths, shortest heads, fields in serde's order: what cbor2 writes too.
    assert encoded == cbor2.dumps(expected)


def test_the_answer_is_the_first_cbor_item_and_padding_is_ignored() -> None:
    answer = cbor2.dumps({"Attestation": {"document": b"\x84cose"}})
    assert parse_answer(answer + bytes(100)) == b"\x84cose"
    assert parse_answer(answer + b"\xff" * 100) == b"\x84cose"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (cbor2.dumps({"Error": "BufferTooSmall"}), "refused the attestation document request"),
        (cbor2.dumps({"Error": "Teapot"}), "unknown error: 'Teapot'"),
        (cbor2.dumps({"Attestation": {"document": b""}}), "neither"),
        (cbor2.dumps({"Attestation": {"doc": b"x"}}), "neither"),
        (cbor2.dumps([1, 2]), "neither"),
        (b"\x5f", "not NitroTPM's"),
        (bytes(16), "neither"),
    ],
)
def test_answers_other_than_a_document_are_one_line_tpm_errors(answer: bytes, message: str) -> None:
    with pytest.raises(TpmError, match=message) as info:
        parse_answer(answer)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        # What a TPM answers, and what Linux's /dev/tpmrm0 makes up with its layer 0x0b.
        (bytes.fromhex("80010000000a00000143"), "not a NitroTPM"),
        (bytes.fromhex("80010000000a000b0143"), "not a NitroTPM"),
        (bytes.fromhex("80010000000a0000098e"), "failed with TPM response code 0x98e"),
        (bytes.fromhex("80010000000b00000000"), "says 11 bytes and has 10"),
        (bytes.fromhex("8001"), "with 2 bytes"),
    ],
)
def test_vendor_command_failures_are_one_line_tpm_errors(response: bytes, message: str) -> None:
    with pytest.raises(TpmError, match=message) as info:
        check_vendor_response(response)
    assert "\n" not in str(info.value)


def test_a_vendor_command_success_is_accepted() -> None:
    # parameterSize 0, then an empty nonce, continueSession, an empty hmac.
    check_vendor_response(bytes.fromhex("8002 00000013 00000000 00000000 0000 01 0000"))
