"""Parsers of TPM 2.0 wire structures: real vectors, limits, and random input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from aicert.verifier.errors import AicertError, FormatError, QuoteStructureError
from aicert.verifier.tpm.pcr import SHA1, SHA256, SHA384
from aicert.verifier.tpm.tpm2_structures import (
    ALG_ECDSA,
    ALG_RSA,
    ALG_RSASSA,
    ATTR_DECRYPT,
    EcdsaSignature,
    PcrBank,
    PcrSelection,
    RsaParameters,
    RsaSignature,
    encode_pcr_selection,
    parse_attest,
    parse_pcr_selection,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm_wire_builders import (
    AK_ATTRIBUTES,
    load_gcp_vector,
    quote_attest,
    sign,
    tpm2b,
    tpmt_public,
    u16,
    u32,
)

GCP = load_gcp_vector()


# --------------------------------------------------------------------------- real vectors


def test_gcp_ak_public_area() -> None:
    ak = parse_tpmt_public(GCP.ak_public)
    assert ak.type == ALG_RSA
    assert ak.name_alg == SHA256
    assert ak.object_attributes == 0x00050472
    assert ak.fixed_tpm
    assert ak.sensitive_data_origin
    assert ak.is_restricted_signing_key
    assert isinstance(ak.parameters, RsaParameters)
    assert ak.parameters.key_bits == 2048
    assert ak.parameters.exponent == 0
    assert ak.scheme.scheme == ALG_RSASSA
    assert ak.scheme.hash_alg == SHA1
    key = ak.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.public_numbers().e == 65537
    assert key.key_size == 2048


def test_gcp_ak_name_matches_the_tpm_creation_record() -> None:
    # TPM2_CertifyCreation's TPMS_CREATION_INFO names the object it certifies: the
    # TPM's own computation of the AK's name.
    body = GCP.create_attestation
    assert body[4:6] == b"\x80\x1a"  # TPM_ST_ATTEST_CREATION
    offset = 6
    for _ in range(2):  # qualifiedSigner, extraData
        offset += 2 + int.from_bytes(body[offset : offset + 2], "big")
    offset += 17 + 8  # clockInfo, firmwareVersion
    size = int.from_bytes(body[offset : offset + 2], "big")
    object_name = body[offset + 2 : offset + 2 + size]
    assert parse_tpmt_public(GCP.ak_public).name() == object_name


def test_gcp_quote_attest() -> None:
    attest = parse_attest(GCP.quote)
    assert attest.extra_data == b""
    assert attest.clock_info.safe is True
    assert attest.qualified_signer[:2] == u16(SHA256.tpm_id)
    assert attest.pcr_selection == PcrSelection((PcrBank(SHA1, tuple(range(24)), 3),))
    assert attest.pcr_digest.hex().startswith("a610f27b")
    assert attest.raw == GCP.quote


def test_gcp_creation_attestation_is_refused_as_not_a_quote() -> None:
    with pytest.raises(QuoteStructureError, match="TPM_ST_ATTEST_CREATION"):
        parse_attest(GCP.create_attestation)


def test_gcp_signature() -> None:
    sig = parse_signature(GCP.signature)
    assert isinstance(sig, RsaSignature)
    assert sig.sig_alg == ALG_RSASSA
    assert sig.hash_alg == SHA1
    assert len(sig.signature) == 256


# --------------------------------------------------------------------------- public areas


def test_tpm2b_public_wraps_tpmt_public_exactly() -> None:
    inner = GCP.ak_public
    assert parse_tpm2b_public(tpm2b(inner)).raw == inner
    with pytest.raises(FormatError, match="trailing"):
        parse_tpm2b_public(tpm2b(inner) + b"\0")
    with pytest.raises(FormatError, match="trailing"):
        parse_tpmt_public(inner + b"\0")
    with pytest.raises(FormatError, match="truncated"):
        parse_tpm2b_public(tpm2b(inner)[:-1])


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ecc_public_area_round_trip(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve).public_key()
    ak = parse_tpm2b_public(tpm2b(tpmt_public(key, scheme=ALG_ECDSA)))
    assert ak.public_key().public_numbers() == key.public_numbers()
    assert ak.is_restricted_signing_key
    assert ak.scheme.scheme == ALG_ECDSA


def test_rsa_public_area_keeps_a_non_default_exponent() -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=2048).public_key()
    ak = parse_tpmt_public(tpmt_public(key))
    assert ak.public_key().public_numbers() == key.public_numbers()


def test_ecc_point_off_the_curve_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = bytearray(tpmt_public(key))
    data[-1] ^= 1  # last byte of y
    ak = parse_tpmt_public(bytes(data))
    with pytest.raises(FormatError, match="not a valid public key"):
        ak.public_key()


def test_restricted_decrypt_key_is_not_a_signing_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ak = parse_tpmt_public(tpmt_public(key, attributes=AK_ATTRIBUTES | ATTR_DECRYPT))
    assert not ak.is_restricted_signing_key


def _rsa_public(key_bits: int, modulus: bytes, exponent: int = 0) -> bytes:
    return (
        u16(ALG_RSA)
        + u16(SHA256.tpm_id)
        + u32(AK_ATTRIBUTES)
        + tpm2b(b"")
        + u16(0x0010)
        + u16(0x0010)
        + u16(key_bits)
        + u32(exponent)
        + tpm2b(modulus)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_rsa_public(512, b"\x80" * 64), "RSA key size"),
        (_rsa_public(16384, b"\x80" * 16), "RSA key size"),
        (_rsa_public(2048, b"\x80" * 255), "RSA modulus"),
        (_rsa_public(2048, b"\x00" * 256), "RSA modulus"),
        (_rsa_public(2048, b"\x80" * 256, exponent=4), "exponent"),
        (u16(0x0008) + b"\0" * 20, "symmetric object"),
        (u16(0x1234) + b"\0" * 20, "unknown object type"),
        (u16(ALG_RSA) + u16(0x0012) + b"\0" * 20, "nameAlg"),
        (u16(ALG_RSA) + u16(SHA256.tpm_id) + u32(0) + tpm2b(b"\0" * 65), "authPolicy"),
    ],
)
def test_public_area_limits(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_tpmt_public(data)


def test_unsupported_curve_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = bytearray(tpmt_public(key))
    # curveID follows type, nameAlg, attributes, empty authPolicy, NULL symmetric, NULL scheme.
    offset = 2 + 2 + 4 + 2 + 2 + 2
    data[offset : offset + 2] = u16(0x0010)  # TPM_ECC_BN_P256
    with pytest.raises(FormatError, match="ECC curve"):
        parse_tpmt_public(bytes(data))


# --------------------------------------------------------------------------- PCR selection


def test_pcr_selection_encoding_matches_the_tpm() -> None:
    # tpm2_quote -l sha256:0,1,15 sends exactly these bytes.
    selection = PcrSelection.of({SHA256: [15, 0, 1]})
    assert encode_pcr_selection(selection).hex() == "00000001" + "000b" + "03" + "038000"
    assert parse_pcr_selection(encode_pcr_selection(selection)) == selection


@given(
    st.dictionaries(
        st.sampled_from([SHA1, SHA256, SHA384]),
        st.sets(st.integers(0, 23)),
        max_size=3,
    )
)
def test_pcr_selection_round_trip(banks: dict) -> None:  # type: ignore[type-arg]
    selection = PcrSelection.of(banks)
    parsed = parse_pcr_selection(encode_pcr_selection(selection))
    assert parsed == selection
    for alg, pcrs in banks.items():
        bank = parsed.bank(alg)
        assert bank is not None
        assert bank.pcrs == tuple(sorted(pcrs))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (u32(17), "17 banks"),
        (u32(1) + u16(SHA256.tpm_id) + b"\x05" + b"\xff" * 5, "sizeofSelect 5"),
        (u32(1) + u16(0x0012) + b"\x03" + b"\xff" * 3, "not a supported hash"),
        (u32(2) + (u16(SHA256.tpm_id) + b"\x03\x01\x00\x00") * 2, "twice"),
        (u32(1) + u16(SHA256.tpm_id) + b"\x03\x01", "truncated"),
        (u32(0) + b"\0", "trailing"),
    ],
)
def test_pcr_selection_limits(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_pcr_selection(data)


def test_pcr_selection_refuses_indexes_beyond_its_bitmap() -> None:
    with pytest.raises(FormatError):
        PcrSelection.of({SHA256: [24]})
    with pytest.raises(FormatError):
        encode_pcr_selection(PcrSelection((PcrBank(SHA256, (8,), 1),)))


# --------------------------------------------------------------------------- attest


SELECTION = PcrSelection.of({SHA256: [0, 1, 15]})


def test_attest_magic_and_type() -> None:
    with pytest.raises(QuoteStructureError, match="magic"):
        parse_attest(quote_attest(SELECTION, bytes(32), magic=0xFF544348))
    with pytest.raises(QuoteStructureError, match="TPM_ST_ATTEST_CERTIFY"):
        parse_attest(quote_attest(SELECTION, bytes(32), attest_type=0x8017))
    with pytest.raises(FormatError, match="unknown attestation type"):
        parse_attest(quote_attest(SELECTION, bytes(32), attest_type=0x8000))


def test_attest_limits() -> None:
    good = quote_attest(SELECTION, bytes(32), extra_data=b"x" * 32)
    assert parse_attest(good).extra_data == b"x" * 32
    with pytest.raises(FormatError, match="trailing"):
        parse_attest(good + b"\0")
    with pytest.raises(FormatError, match="extraData"):
        parse_attest(quote_attest(SELECTION, bytes(32), extra_data=b"x" * 67))
    with pytest.raises(FormatError, match="pcrDigest"):
        parse_attest(quote_attest(SELECTION, bytes(65)))
    unsafe = bytearray(good)
    safe_offset = 6 + 2 + 34 + 2 + 32 + 16
    assert unsafe[safe_offset] == 1
    unsafe[safe_offset] = 2
    with pytest.raises(FormatError, match="safe"):
        parse_attest(bytes(unsafe))


# --------------------------------------------------------------------------- signature


def test_ecdsa_signature_parse() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    sig = parse_signature(sign(key, b"m", scheme=ALG_ECDSA, hash_alg=SHA384))
    assert isinstance(sig, EcdsaSignature)
    assert sig.hash_alg == SHA384
    assert sig.r > 0
    assert sig.s > 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (u16(0x0005) + u16(SHA256.tpm_id), "scheme 0x0005"),  # HMAC
        (u16(0x0010), "scheme 0x0010"),  # NULL
        (u16(ALG_RSASSA) + u16(0x0099) + tpm2b(b"\1" * 256), "hash"),
        (u16(ALG_RSASSA) + u16(SHA256.tpm_id) + tpm2b(b"\1" * 64), "too short"),
        (u16(ALG_RSASSA) + u16(SHA256.tpm_id) + tpm2b(b"\1" * 1025), "more than"),
        (u16(ALG_ECDSA) + u16(SHA256.tpm_id) + tpm2b(b"\1" * 67) + tpm2b(b"\1"), "more than"),
        (u16(ALG_RSASSA) + u16(SHA256.tpm_id) + tpm2b(b"\1" * 256) + b"\0", "trailing"),
    ],
)
def test_signature_limits(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_signature(data)


# --------------------------------------------------------------------------- random input

PARSERS = [
    parse_tpm2b_public,
    parse_tpmt_public,
    parse_attest,
    parse_signature,
    parse_pcr_selection,
]
SEEDS = [
    tpm2b(GCP.ak_public),
    GCP.ak_public,
    GCP.quote,
    GCP.signature,
    encode_pcr_selection(SELECTION),
]


def _call(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(AicertError):
        parser(data)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_project_errors(data: bytes) -> None:
    for parser in PARSERS:
        _call(parser, data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(PARSERS) - 1),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10_000),
)
def test_mutated_vectors_raise_only_project_errors(
    which: int, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SEEDS[which])
    for position, value in edits:
        data[position % len(data)] = value
    _call(PARSERS[which], bytes(data))
    _call(PARSERS[which], bytes(data[: cut % (len(data) + 1)]))
    if which in (0, 1):
        with contextlib.suppress(AicertError):
            parse_tpmt_public(bytes(data)).public_key()
