"""The aicert certificate file: a DSSE envelope plus the TPM evidence that backs it.

A certificate is one JSON document (``*.aicert.json``)::

    {"mediaType": "application/vnd.aicert.certificate.v1+json",
     "envelope": <DSSE envelope of the in-toto statement>,
     "agentPublicKey": <base64 SPKI DER of the agent key measured at agent start>,
     "tpm": {"quote": {"attest": b64, "signature": b64},
             "pcrs": {"sha256": {"0": hex, ..., "15": hex}},
             "akPublic": b64 TPM2B_PUBLIC, "akCertificates": [b64 DER, leaf first],
             "firmwareEventLog": b64, "celLog": [CEL-JSON records],
             "nitroDocument": b64 COSE_Sign1}}

``nitroDocument`` is present only where the AK comes from AWS NitroTPM, which
certifies no AK: the Nitro attestation document that names the AK stands in for
``akCertificates`` (then empty).

Parsing checks shape only; every claim is checked by :mod:`..verify`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..input_file import MAX_CERTIFICATE_BYTES, read_input_file
from ..json_fields import b64decode, exact_members, lower_hex, pcr_index
from ..logs.cel import CelRecord, parse_cel
from .canonical_json import parse_json
from .dsse import Envelope, parse_envelope

MEDIA_TYPE = "application/vnd.aicert.certificate.v1+json"


@dataclass(frozen=True)
class TpmEvidence:
    attest: bytes
    signature: bytes
    pcrs: Mapping[int, bytes]
    ak_public: bytes
    ak_certificates: tuple[bytes, ...]
    firmware_event_log: bytes
    cel_log: tuple[CelRecord, ...]
    nitro_document: bytes = b""
    """The NitroTPM attestation document (COSE_Sign1) naming the AK; empty elsewhere."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "quote": {"attest": _b64(self.attest), "signature": _b64(self.signature)},
            "pcrs": {"sha256": {str(i): v.hex() for i, v in sorted(self.pcrs.items())}},
            "akPublic": _b64(self.ak_public),
            "akCertificates": [_b64(c) for c in self.ak_certificates],
            "firmwareEventLog": _b64(self.firmware_event_log),
            "celLog": [r.to_json() for r in self.cel_log],
        }
        if self.nitro_document:
            body["nitroDocument"] = _b64(self.nitro_document)
        return body


@dataclass(frozen=True)
class Certificate:
    envelope: Envelope
    agent_public_key: bytes
    tpm: TpmEvidence

    @property
    def agent_key_id(self) -> str:
        return agent_key_id(self.agent_public_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "mediaType": MEDIA_TYPE,
            "envelope": self.envelope.to_json(),
            "agentPublicKey": _b64(self.agent_public_key),
            "tpm": self.tpm.to_json(),
        }


def agent_key_id(spki_der: bytes) -> str:
    """The agent key's identity: hex SHA-256 of its SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki_der).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def load_certificate(path: Path) -> Certificate:
    data = read_input_file(path, "certificate", MAX_CERTIFICATE_BYTES)
    try:
        return parse_certificate(data)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc.message}") from None


def parse_certificate(data: bytes) -> Certificate:
    """Parse a certificate strictly: every field has exactly one accepted encoding.

    Unknown or missing members, PCR indices other than plain decimal (``"7"``, not
    ``"07"``), hex other than lower case, and base64 other than the standard padded
    alphabet are refused, so two different documents never carry the same evidence.
    """
    doc = _obj(parse_json(data, "certificate"), "certificate")
    if doc.get("mediaType") != MEDIA_TYPE:
        raise FormatError(f"not an aicert certificate (mediaType is not {MEDIA_TYPE})")
    exact_members(doc, _TOP_LEVEL, "certificate")
    tpm = _obj(doc["tpm"], "tpm")
    exact_members(tpm, _TPM_MEMBERS, "certificate: tpm", optional=("nitroDocument",))
    quote = _obj(tpm["quote"], "tpm.quote")
    exact_members(quote, ("attest", "signature"), "certificate: tpm.quote")
    banks = _obj(tpm["pcrs"], "tpm.pcrs")
    exact_members(banks, ("sha256",), "certificate: tpm.pcrs")
    certs = tpm["akCertificates"]
    # Empty where the platform certifies no AK (AWS NitroTPM): the ak-chain check decides.
    if not isinstance(certs, list):
        raise FormatError("certificate: tpm.akCertificates must be an array")
    return Certificate(
        envelope=parse_envelope(doc["envelope"]),
        agent_public_key=b64decode(doc["agentPublicKey"], "agentPublicKey"),
        tpm=TpmEvidence(
            attest=b64decode(quote["attest"], "tpm.quote.attest"),
            signature=b64decode(quote["signature"], "tpm.quote.signature"),
            pcrs=_pcrs(_obj(banks["sha256"], "tpm.pcrs.sha256")),
            ak_public=b64decode(tpm["akPublic"], "tpm.akPublic"),
            ak_certificates=tuple(
                b64decode(c, f"tpm.akCertificates[{i}]") for i, c in enumerate(certs)
            ),
            firmware_event_log=b64decode(tpm["firmwareEventLog"], "tpm.firmwareEventLog"),
            cel_log=parse_cel(tpm["celLog"]),
            nitro_document=_nitro_document(tpm) if "nitroDocument" in tpm else b"",
        ),
    )


_TOP_LEVEL = ("mediaType", "envelope", "agentPublicKey", "tpm")
_TPM_MEMBERS = ("quote", "pcrs", "akPublic", "akCertificates", "firmwareEventLog", "celLog")


def _nitro_document(tpm: Mapping[str, Any]) -> bytes:
    document = b64decode(tpm["nitroDocument"], "tpm.nitroDocument")
    if not document:
        raise FormatError("certificate: tpm.nitroDocument is empty (omit it instead)")
    if tpm["akCertificates"]:
        raise FormatError(
            "certificate: tpm carries both akCertificates and a nitroDocument; an AK is"
            " vouched for by one or the other"
        )
    return document


def _pcrs(raw: Mapping[str, Any]) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for key, value in raw.items():
        index = pcr_index(key)
        if index is None:
            raise FormatError(
                f"certificate: PCR index {key!r} is not 0-23 in plain decimal (no sign, "
                "no leading zero)"
            )
        pcrs[index] = lower_hex(value, 32, f"certificate: PCR {key}")
    return pcrs


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"certificate: {where} must be an object")
    return value
