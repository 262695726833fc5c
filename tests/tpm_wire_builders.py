"""Encoders of TPM wire structures for tests: keys and quotes made by software keys.

They let tests reach code paths a real TPM never produces (non-restricted keys,
forged magic, mismatched schemes). Fixed vectors from real TPMs live in the tests
that use go-attestation's data and swtpm.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.tpm.pcr import SHA256, HashAlgorithm
from aicert.verifier.tpm.tpm2_structures import (
    ALG_ECC,
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ATTR_FIXED_PARENT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_SIGN,
    ATTR_USER_WITH_AUTH,
    ST_ATTEST_QUOTE,
    TPM_GENERATED_VALUE,
    PcrSelection,
    encode_pcr_selection,
)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# shared/ sits beside the repository, on a workstation and in CI alike.
SHARED = Path(__file__).resolve().parents[2] / "shared"
GCP_VECTOR = SHARED / "testdata" / "go-attestation" / "windows_gcp_shielded_vm.json"

AK_ATTRIBUTES = (
    ATTR_FIXED_TPM
    | ATTR_FIXED_PARENT
    | ATTR_SENSITIVE_DATA_ORIGIN
    | ATTR_USER_WITH_AUTH
    | ATTR_RESTRICTED
    | ATTR_SIGN
)

CURVE_IDS = {"secp256r1": 0x0003, "secp384r1": 0x0004, "secp521r1": 0x0005}
CRYPTO_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384}


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def tpm2b(data: bytes) -> bytes:
    return u16(len(data)) + data


@dataclass(frozen=True)
class GcpVector:
    """go-attestation's Windows GCP Shielded VM evidence, decoded."""

    ak_public: bytes  # a bare TPMT_PUBLIC (go-attestation stores it without the size)
    quote: bytes
    signature: bytes
    pcrs: dict[int, bytes]
    create_attestation: bytes
    create_signature: bytes


def load_gcp_vector() -> GcpVector:
    doc = json.loads(GCP_VECTOR.read_text())
    return GcpVector(
        ak_public=base64.b64decode(doc["AK"]["Public"]),
        quote=base64.b64decode(doc["Quote"]["Quote"]),
        signature=base64.b64decode(doc["Quote"]["Signature"]),
        pcrs={p["Index"]: base64.b64decode(p["Digest"]) for p in doc["Log"]["PCRs"]},
        create_attestation=base64.b64decode(doc["AK"]["CreateAttestation"]),
        create_signature=base64.b64decode(doc["AK"]["CreateSignature"]),
    )


def tpmt_public(
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    attributes: int = AK_ATTRIBUTES,
    scheme: int = ALG_NULL,
    scheme_hash: HashAlgorithm = SHA256,
    name_alg: HashAlgorithm = SHA256,
) -> bytes:
    """TPMT_PUBLIC bytes of a software key, as a TPM would describe it."""
    head = u16(name_alg.tpm_id) + u32(attributes) + tpm2b(b"")
    scheme_bytes = u16(scheme) + (u16(scheme_hash.tpm_id) if scheme != ALG_NULL else b"")
    symmetric = u16(ALG_NULL)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        exponent = 0 if numbers.e == 65537 else numbers.e
        modulus = numbers.n.to_bytes(key.key_size // 8, "big")
        return (
            u16(ALG_RSA)
            + head
            + symmetric
            + scheme_bytes
            + u16(key.key_size)
            + u32(exponent)
            + tpm2b(modulus)
        )
    size = (key.curve.key_size + 7) // 8
    point = key.public_numbers()
    return (
        u16(ALG_ECC)
        + head
        + symmetric
        + scheme_bytes
        + u16(CURVE_IDS[key.curve.name])
        + u16(ALG_NULL)
        + tpm2b(point.x.to_bytes(size, "big"))
        + tpm2b(point.y.to_bytes(size, "big"))
    )


def quote_attest(
    selection: PcrSelection,
    pcr_digest: bytes,
    *,
    extra_data: bytes = b"",
    magic: int = TPM_GENERATED_VALUE,
    attest_type: int = ST_ATTEST_QUOTE,
) -> bytes:
    """TPMS_ATTEST bytes of a quote."""
    return (
        u32(magic)
        + u16(attest_type)
        + tpm2b(u16(SHA256.tpm_id) + bytes(32))
        + tpm2b(extra_data)
        + (1234).to_bytes(8, "big")
        + u32(1)
        + u32(0)
        + b"\x01"
        + (0x2023).to_bytes(8, "big")
        + encode_pcr_selection(selection)
        + tpm2b(pcr_digest)
    )


def sign(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    message: bytes,
    *,
    scheme: int,
    hash_alg: HashAlgorithm = SHA256,
) -> bytes:
    """A TPMT_SIGNATURE over ``message`` made with a software key."""
    digest = CRYPTO_HASHES[hash_alg.name]()
    head = u16(scheme) + u16(hash_alg.tpm_id)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        assert scheme == ALG_ECDSA
        size = (private_key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(digest)))
        return head + tpm2b(r.to_bytes(size, "big")) + tpm2b(s.to_bytes(size, "big"))
    if scheme == ALG_RSAPSS:
        pad: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(digest), salt_length=digest.digest_size
        )
    else:
        assert scheme == ALG_RSASSA
        pad = padding.PKCS1v15()
    return head + tpm2b(private_key.sign(message, pad, digest))
