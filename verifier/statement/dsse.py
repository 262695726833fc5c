"""DSSE envelopes (Dead Simple Signing Envelope, secure-systems-lab/dsse v1.0).

The certificate's statement travels as a DSSE envelope. Its pre-authentication
encoding (PAE) is what the agent signs with its attested key and what the TPM
quote binds through extraData, so both checks cover the exact payload bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import EnvelopeSignatureError, FormatError
from ..json_fields import b64decode, exact_members

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 SP LEN(type) SP type SP LEN(body) SP body, lengths in decimal ASCII."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def pae_sha256(self) -> bytes:
        """The value a quote's extraData must hold to bind this envelope."""
        return hashlib.sha256(self.pae()).digest()

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }


def parse_envelope(obj: object) -> Envelope:
    """The certificate's envelope: exactly payloadType, payload and one signature object."""
    if not isinstance(obj, Mapping):
        raise FormatError("DSSE envelope must be a JSON object")
    exact_members(obj, ("payloadType", "payload", "signatures"), "DSSE envelope")
    payload_type = obj["payloadType"]
    if not isinstance(payload_type, str):
        raise FormatError("DSSE envelope has no payloadType string")
    raw_sigs = obj["signatures"]
    if not isinstance(raw_sigs, list):
        raise FormatError("DSSE envelope has no signatures list")
    signatures = []
    for i, raw in enumerate(raw_sigs):
        if not isinstance(raw, Mapping):
            raise FormatError(f"DSSE signature {i} must be an object")
        exact_members(raw, ("keyid", "sig"), f"DSSE signature {i}")
        keyid = raw["keyid"]
        if not isinstance(keyid, str):
            raise FormatError(f"DSSE signature {i} keyid must be a string")
        signatures.append(Signature(keyid, b64decode(raw["sig"], f"DSSE signature {i}")))
    return Envelope(payload_type, b64decode(obj["payload"], "DSSE payload"), tuple(signatures))


def sign_envelope(
    payload_type: str, payload: bytes, key: ec.EllipticCurvePrivateKey, keyid: str
) -> Envelope:
    sig = key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    return Envelope(payload_type, payload, (Signature(keyid, sig),))


def verify_envelope(
    envelope: Envelope,
    key: ec.EllipticCurvePublicKey,
    keyid: str,
    *,
    signer: str = "the agent key",
) -> None:
    """Accept the envelope only if its one signature is ``keyid``'s and verifies under ``key``.

    Any further signature is refused, even a valid one: a generic DSSE consumer that
    trusts that other key would take the statement as signed by it.
    """
    if len(envelope.signatures) != 1:
        raise EnvelopeSignatureError(
            f"the envelope has {len(envelope.signatures)} signatures; an aicert statement "
            f"carries exactly one, by {signer}"
        )
    signature = envelope.signatures[0]
    if signature.keyid != keyid:
        raise EnvelopeSignatureError(
            f"the envelope is signed by {signature.keyid!r}, not by {signer} {keyid}"
        )
    try:
        key.verify(signature.sig, envelope.pae(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EnvelopeSignatureError(f"the envelope signature by {keyid} does not verify") from None
