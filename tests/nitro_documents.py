"""NitroTPM attestation documents for tests: a real one from EC2, and a test Nitro PKI
that signs documents of the same shape (COSE_Sign1, ES384, root-first cabundle).

The real document is from lockboot/vaportpm (MIT OR Apache-2.0), commit
eb643add961b72c8aa43a7674ff824d9db02646b, ``crates/vaportpm-verify/test-nitro-fixture.json``:
an EC2 instance (type not recorded) in us-east-1 on 2026-02-03, with the TPM2_Quote its agent made
with the ECC P-256 key named in the document's ``public_key``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REAL_FIXTURE = Path(__file__).parent / "data" / "aws" / "nitrotpm-us-east-1-vaportpm.json"
EARLIER_FIXTURE = REAL_FIXTURE.with_name("nitrotpm-us-east-1-2026-02-01-vaportpm.json")


def real_fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REAL_FIXTURE.read_text())
    return data


def real_document(fixture: Path = REAL_FIXTURE) -> bytes:
    data = json.loads(fixture.read_text())
    return bytes.fromhex(data["attestation"]["nitro"]["document"])


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aicert test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    usage.update(
        {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
        if ca
        else {"digital_signature": True}
    )
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


@dataclass
class NitroTestPki:
    """A root, one intermediate and a signing leaf, all ECDSA P-384 like AWS's."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, *, valid_from: datetime | None = None) -> NitroTestPki:
        start = valid_from or datetime.now(UTC) - timedelta(hours=1)
        end = start + timedelta(days=2)
        root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP384R1()) for _ in "rml")
        root = _certificate(
            "test.nitro-root", root_key, None, root_key, ca=True, not_before=start, not_after=end
        )
        mid = _certificate(
            "test.zonal.nitro", mid_key, root, root_key, ca=True, not_before=start, not_after=end
        )
        leaf = _certificate(
            "i-0123456789abcdef0-tpm0123456789abcdef.test",
            leaf_key,
            mid,
            mid_key,
            ca=False,
            not_before=start,
            not_after=end,
        )
        return cls(root, mid, leaf, leaf_key)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def payload(
        self,
        pcrs: dict[int, bytes],
        *,
        user_data: bytes | None,
        nonce: bytes | None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        der = serialization.Encoding.DER
        body: dict[str, Any] = {
            "module_id": "i-0123456789abcdef0-tpm0123456789abcdef",
            "digest": "SHA384",
            "timestamp": int((at or datetime.now(UTC)).timestamp() * 1000),
            "nitrotpm_pcrs": pcrs,
            "certificate": self.leaf.public_bytes(der),
            "cabundle": [self.root.public_bytes(der), self.intermediate.public_bytes(der)],
            "public_key": None,
            "user_data": user_data,
            "nonce": nonce,
        }
        return body

    def sign(
        self, payload: dict[str, Any] | bytes, *, key: ec.EllipticCurvePrivateKey | None = None
    ) -> bytes:
        """COSE_Sign1 of ``payload`` (a map, or bytes taken as already encoded)."""
        raw = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
        protected = cbor2.dumps({1: -35})
        to_sign = cbor2.dumps(["Signature1", protected, b"", raw])
        der = (key or self.leaf_key).sign(to_sign, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return cbor2.dumps([protected, {}, raw, r.to_bytes(48, "big") + s.to_bytes(48, "big")])
