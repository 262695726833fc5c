"""COSE_Sign1 (RFC 9052 §4.2) as the Nitro hypervisor signs attestation documents.

Only what Nitro uses is accepted: ECDSA P-384 with SHA-384 (``alg`` -35 in the
protected header), no external data, an attached payload. The signature is the raw
``r || s`` pair COSE specifies, not DER.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import FormatError
from .cbor import Tagged, decode, head

COSE_SIGN1_TAG = 18
ALG = 1
ES384 = -35
_ES384_HALF = 48


@dataclass(frozen=True)
class CoseSign1:
    protected: bytes
    """The protected header exactly as signed (a CBOR map inside a byte string)."""
    payload: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        """Sig_structure: ["Signature1", protected, external_aad = b"", payload]."""
        return (
            b"\x84"
            + head(3, len(b"Signature1"))
            + b"Signature1"
            + head(2, len(self.protected))
            + self.protected
            + b"\x40"
            + head(2, len(self.payload))
            + self.payload
        )

    def verify(self, key: ec.EllipticCurvePublicKey) -> bool:
        """Whether ``key`` (P-384) made the signature."""
        if key.curve.name != "secp384r1" or len(self.signature) != 2 * _ES384_HALF:
            return False
        r = int.from_bytes(self.signature[:_ES384_HALF], "big")
        s = int.from_bytes(self.signature[_ES384_HALF:], "big")
        try:
            key.verify(encode_dss_signature(r, s), self.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            return False
        return True


def parse_cose_sign1(data: bytes, what: str) -> CoseSign1:
    """Parse ``[protected, unprotected, payload, signature]``, tagged 18 or not."""
    value = decode(data, what)
    if isinstance(value, Tagged):
        if value.tag != COSE_SIGN1_TAG:
            raise FormatError(f"{what}: CBOR tag {value.tag} is not COSE_Sign1 ({COSE_SIGN1_TAG})")
        value = value.value
    if not isinstance(value, list) or len(value) != 4:
        raise FormatError(f"{what} is not a COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = value
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise FormatError(f"{what}: COSE_Sign1 headers are not a byte string and a map")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise FormatError(f"{what}: COSE_Sign1 payload or signature is not a byte string")
    header = decode(protected, f"{what}: protected header")
    if not isinstance(header, dict) or header.get(ALG) != ES384:
        raise FormatError(f"{what}: the protected header does not name ES384 (alg -35)")
    if ALG in unprotected:
        raise FormatError(f"{what}: alg appears in the unprotected header")
    return CoseSign1(protected, payload, signature)
