"""A test stand-in for the AWS Nitro Attestation PKI: a P-384 CA chain and NitroTPM
attestation documents signed with it (COSE_Sign1, ES384), shaped as Nitro sends them.

The chain is root (self-signed, CA) -> intermediate (CA) -> leaf (digitalSignature);
a document carries the leaf as ``certificate`` and ``[root, intermediate]`` as
``cabundle`` (root first, as AWS orders it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

# COSE header label 1 (alg) = -35 (ES384), RFC 9053.
PROTECTED_HEADER = cbor2.dumps({1: -35})
MODULE_ID = "i-0123456789abcdef0-tpm0123456789abcdef"
_P384_BYTES = 48


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aicert test Nitro PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30 if ca else 1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class NitroPki:
    """A root, an intermediate and a signing leaf, all P-384."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> NitroPki:
        root_key = ec.generate_private_key(ec.SECP384R1())
        root = _certificate("aicert test Nitro root", root_key, None, root_key, ca=True)
        intermediate_key = ec.generate_private_key(ec.SECP384R1())
        intermediate = _certificate(
            "aicert test Nitro intermediate", intermediate_key, root, root_key, ca=True
        )
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        leaf = _certificate(
            "aicert test NitroTPM", leaf_key, intermediate, intermediate_key, ca=False
        )
        return cls(root, intermediate, leaf, leaf_key)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def payload(
        self,
        pcrs: Mapping[int, bytes],
        *,
        user_data: bytes | None,
        nonce: bytes | None,
        public_key: bytes | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """The document's CBOR map over SHA-384 ``pcrs``, made at ``at`` (default now)."""
        der = serialization.Encoding.DER
        return {
            "module_id": MODULE_ID,
            "digest": "SHA384",
            "timestamp": int((at or datetime.now(UTC)).timestamp() * 1000),
            "nitrotpm_pcrs": dict(sorted(pcrs.items())),
            "certificate": self.leaf.public_bytes(der),
            "cabundle": [self.root.public_bytes(der), self.intermediate.public_bytes(der)],
            "public_key": public_key,
            "user_data": user_data,
            "nonce": nonce,
        }

    def sign(
        self, payload: Mapping[str, Any], *, key: ec.EllipticCurvePrivateKey | None = None
    ) -> bytes:
        """COSE_Sign1 of ``payload``, by the leaf's key unless another is given."""
        return sign_cose(cbor2.dumps(dict(payload)), key or self.leaf_key)

    def document(
        self,
        pcrs: Mapping[int, bytes],
        *,
        user_data: bytes | None,
        nonce: bytes | None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A signed attestation document over SHA-384 ``pcrs``, made now."""
        return self.sign(
            self.payload(pcrs, user_data=user_data, nonce=nonce, public_key=public_key)
        )


def sign_cose(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """An untagged COSE_Sign1 [protected, {}, payload, r||s] over ``payload`` (ES384)."""
    to_sign = cbor2.dumps(["Signature1", PROTECTED_HEADER, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(_P384_BYTES, "big") + s.to_bytes(_P384_BYTES, "big")
    return cbor2.dumps([PROTECTED_HEADER, {}, payload, signature])
