"""The NitroTPM attestation document: a real one from EC2 against the bundled AWS
root, documents from a test Nitro PKI for each refusal, and the CBOR decoder under
property tests (cbor2 encodes, ours decodes)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from aicert.verifier.aws.cbor import Tagged, decode, decode_prefix
from aicert.verifier.aws.cose_sign1 import parse_cose_sign1
from aicert.verifier.aws.nitro_document import (
    bundled_nitro_roots,
    parse_nitro_document,
    verify_nitro_document,
)
from aicert.verifier.errors import AkChainError, FormatError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from nitro_documents import EARLIER_FIXTURE, real_document, real_fixture
from nitro_pki import NitroPki

PCRS = {i: bytes([i]) * 48 for i in range(24)}
AWS_ROOT_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


def test_bundled_root_is_aws_nitro_root() -> None:
    (root,) = bundled_nitro_roots()
    assert root.fingerprint(hashes.SHA256()).hex() == AWS_ROOT_SHA256
    assert root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"


def test_real_ec2_document_verifies_to_the_aws_root() -> None:
    verified = verify_nitro_document(real_document(), bundled_nitro_roots())
    doc = verified.document
    assert doc.module_id == "i-01cfb383223e42522-tpm0000000000000000"
    assert doc.timestamp == datetime(2026, 2, 3, 10, 12, 2, 437000, UTC)
    assert sorted(doc.pcrs) == list(range(24))
    fixture = real_fixture()
    assert {str(i): v.hex() for i, v in doc.pcrs.items()} == fixture["pcrs"]["sha384"]
    assert doc.nonce == bytes.fromhex(fixture["nonce"])
    assert doc.user_data is None
    assert len(verified.chain) == 5
    assert verified.root == bundled_nitro_roots()[0]


def test_two_real_instances_agree_on_pcrs_0_2_3_7_and_differ_in_pcr_1() -> None:
    """What docs/aws.md reports of real EC2 firmware PCRs (both documents AWS-signed)."""
    roots = bundled_nitro_roots()
    newer = verify_nitro_document(real_document(), roots).document
    older = verify_nitro_document(real_document(EARLIER_FIXTURE), roots).document
    assert older.module_id != newer.module_id
    assert all(older.pcrs[p] == newer.pcrs[p] for p in (0, 2, 3, 7))
    assert older.pcrs[1] != newer.pcrs[1]
    assert newer.pcrs[2] == hashlib.sha384(bytes(48) + hashlib.sha384(bytes(4)).digest()).digest()


def test_real_document_names_the_key_that_signed_the_real_quote() -> None:
    """On EC2 the requester's field reaches the signed document: the key in
    ``public_key`` is the TPM key whose quote (over this nonce) the fixture carries."""
    fixture = real_fixture()
    doc = verify_nitro_document(real_document(), bundled_nitro_roots()).document
    assert doc.public_key is not None
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), doc.public_key)
    quote = fixture["attestation"]["tpm"]["ecc_p256"]
    attest = bytes.fromhex(quote["attest_data"])
    key.verify(bytes.fromhex(quote["signature"]), attest, ec.ECDSA(hashes.SHA256()))
    assert doc.nonce is not None
    assert doc.nonce in attest


def test_a_flipped_payload_byte_breaks_the_signature() -> None:
    data = bytearray(real_document())
    data[200] ^= 0x01
    with pytest.raises((AkChainError, FormatError)):
        verify_nitro_document(bytes(data), bundled_nitro_roots())


def test_real_document_does_not_chain_to_another_root() -> None:
    with pytest.raises(AkChainError, match="does not chain to a trusted root"):
        verify_nitro_document(real_document(), [NitroPki.generate().root])


@pytest.mark.parametrize("cut", [0, 1, 100, 4000, -1])
def test_truncated_document_is_a_format_error(cut: int) -> None:
    with pytest.raises(FormatError):
        verify_nitro_document(real_document()[:cut], bundled_nitro_roots())


def test_test_pki_document_verifies_and_keeps_the_callers_fields() -> None:
    pki = NitroPki.generate()
    data = pki.sign(pki.payload(PCRS, user_data=b"ak-name", nonce=b"n" * 32))
    verified = verify_nitro_document(data, [pki.root])
    assert verified.document.user_data == b"ak-name"
    assert verified.document.nonce == b"n" * 32
    assert verified.document.pcrs == PCRS
    assert verified.root == pki.root


def test_tagged_cose_sign1_is_accepted() -> None:
    pki = NitroPki.generate()
    untagged = cbor2.loads(pki.sign(pki.payload(PCRS, user_data=None, nonce=None)))
    tagged = cbor2.dumps(cbor2.CBORTag(18, untagged))
    assert verify_nitro_document(tagged, [pki.root]).document.user_data is None


def test_signature_by_another_key_is_refused() -> None:
    pki = NitroPki.generate()
    other = ec.generate_private_key(ec.SECP384R1())
    data = pki.sign(pki.payload(PCRS, user_data=None, nonce=None), key=other)
    with pytest.raises(AkChainError, match="signature does not verify"):
        verify_nitro_document(data, [pki.root])


def test_document_outside_its_certificates_validity_is_refused() -> None:
    pki = NitroPki.generate()
    late = datetime.now(UTC) + timedelta(days=5)
    data = pki.sign(pki.payload(PCRS, user_data=None, nonce=None, at=late))
    with pytest.raises(AkChainError, match="does not chain"):
        verify_nitro_document(data, [pki.root])


def test_missing_intermediate_is_refused() -> None:
    pki = NitroPki.generate()
    payload = pki.payload(PCRS, user_data=None, nonce=None)
    payload["cabundle"] = payload["cabundle"][:1]
    with pytest.raises(AkChainError, match="does not chain"):
        verify_nitro_document(pki.sign(payload), [pki.root])


def test_no_root_is_refused() -> None:
    with pytest.raises(AkChainError, match="no trusted root"):
        verify_nitro_document(real_document(), [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"digest": "SHA256"}, "not 'SHA384'"),
        ({"timestamp": -5}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"module_id": ""}, "module_id"),
        ({"nitrotpm_pcrs": {0: b"\0" * 32}}, "48-byte"),
        ({"nitrotpm_pcrs": {24: b"\0" * 48}}, "not 0-23"),
        ({"nitrotpm_pcrs": {}}, "non-empty map"),
        ({"cabundle": []}, "cabundle"),
        ({"cabundle": ["text"]}, "cabundle"),
        ({"certificate": b"not DER"}, "not a valid DER"),
        ({"user_data": "text"}, "user_data"),
        ({"nonce": b"x" * 2000}, "nonce"),
    ],
)
def test_malformed_fields_are_refused(override: dict[str, Any], message: str) -> None:
    pki = NitroPki.generate()
    payload = pki.payload(PCRS, user_data=None, nonce=None)
    payload.update(override)
    with pytest.raises(FormatError, match=message):
        verify_nitro_document(pki.sign(payload), [pki.root])


def test_enclave_document_is_not_a_nitrotpm_document() -> None:
    pki = NitroPki.generate()
    payload = pki.payload(PCRS, user_data=None, nonce=None)
    payload["pcrs"] = payload.pop("nitrotpm_pcrs")
    with pytest.raises(FormatError, match="Nitro Enclaves document"):
        parse_nitro_document(cbor2.dumps(payload))


def test_other_algorithms_are_refused() -> None:
    pki = NitroPki.generate()
    protected, _u, payload, sig = cbor2.loads(
        pki.sign(pki.payload(PCRS, user_data=None, nonce=None))
    )
    for header in ({1: -7}, {}, {1: "ES384"}):
        data = cbor2.dumps([cbor2.dumps(header), {}, payload, sig])
        with pytest.raises(FormatError, match="ES384"):
            parse_cose_sign1(data, "doc")
    with pytest.raises(FormatError, match="unprotected"):
        parse_cose_sign1(cbor2.dumps([protected, {1: -35}, payload, sig]), "doc")


# --------------------------------------------------------------------------- CBOR

_leaves = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32)
    | st.booleans()
    | st.none()
)
_keys = (
    st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=8) | st.binary(max_size=8)
)
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


@given(_values)
def test_decoding_what_cbor2_encodes_gives_the_value_back(value: Any) -> None:
    assert decode(cbor2.dumps(value), "t") == value


@given(_values)
def test_indefinite_length_containers_decode_like_definite_ones(value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    indefinite = b"\x9f" + b"".join(cbor2.dumps(v) for v in items) + b"\xff"
    assert decode(indefinite, "t") == items


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_format_error(data: bytes) -> None:
    # Any other exception fails the test: a parser of untrusted bytes raises nothing else.
    with contextlib.suppress(FormatError):
        decode(data, "t")


@given(_values, st.binary(max_size=20))
def test_decode_prefix_stops_after_the_first_item(value: Any, tail: bytes) -> None:
    encoded = cbor2.dumps(value)
    assert decode_prefix(encoded + tail, "t") == (value, len(encoded))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x5f\x41a\xff", "arrays and maps only"),
        (b"\xf9\x3c\x00", "float"),
        (b"\xa2\x01\x01\x01\x02", "repeated"),
        (b"\xa1\x80\x01", "map key"),
        (b"\x9f\x01", "no break"),
        (b"\x9b" + b"\xff" * 8, "claims"),
        (b"\x5a\xff\xff\xff\xff", "needs"),
        (b"\x1c", "reserved"),
        (b"\x63\xff\xfe\xfd", "UTF-8"),
        (b"\x81" * 17 + b"\x00", "nesting"),
        (b"\x00\x00", "after the CBOR item"),
    ],
)
def test_malformed_cbor_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode(data, "t")


def test_tags_are_kept() -> None:
    assert decode(b"\xd2\x80", "t") == Tagged(18, [])


def test_real_document_payload_is_an_indefinite_map() -> None:
    envelope = parse_cose_sign1(real_document(), "doc")
    assert envelope.payload[0] == 0xBF
