"""The GPUs a session saw, as the statement records them (``predicate.aicert_gpus``).

One record per GPU: model, UUID, driver and VBIOS versions and confidential-computing
mode, as NVML reported them inside the VM, plus, for a GPU in CC mode, its attestation
evidence (SPDM GET_MEASUREMENTS request and response, and the device's certificate
chain) and what NVIDIA's own verifier said about it in the VM. The evidence's nonce is
bound to the session by :func:`gpu_nonce`. See docs/certificate-format.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError
from ..statement.canonical_json import JsonValue, canonicalize

CC_MODES = ("on", "devtools", "off")
"""``on``: CC enforced; ``devtools``: CC with debugging open (not confidential); ``off``."""

GPU_NONCE_DOMAIN = b"aicert-gpu-attestation-v1\x00"
MAX_GPUS = 64
MAX_REPORT_BYTES = 64 * 1024
MAX_CHAIN_CERTS = 8
MAX_CERT_BYTES = 16 * 1024
MAX_TEXT = 256


@dataclass(frozen=True)
class GpuAttestation:
    """One GPU's attestation evidence and the in-VM verdict of NVIDIA's verifier."""

    nonce: str
    report: bytes
    certificates: tuple[bytes, ...]
    verifier: str
    verifier_result: bool

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "nonce": self.nonce,
            "report": base64.b64encode(self.report).decode(),
            "certificateChain": [base64.b64encode(c).decode() for c in self.certificates],
            "nvidiaVerifier": {"name": self.verifier, "result": self.verifier_result},
        }

    def sha256(self) -> str:
        """The digest the CEL ``gpu`` event carries for this evidence."""
        return hashlib.sha256(canonicalize(self.to_json())).hexdigest()


@dataclass(frozen=True)
class GpuRecord:
    model: str
    uuid: str
    driver_version: str
    vbios_version: str
    cc_mode: str
    attestation: GpuAttestation | None = None

    def to_json(self) -> dict[str, JsonValue]:
        doc: dict[str, JsonValue] = {
            "model": self.model,
            "uuid": self.uuid,
            "driverVersion": self.driver_version,
            "vbiosVersion": self.vbios_version,
            "ccMode": self.cc_mode,
        }
        if self.attestation is not None:
            doc["attestation"] = self.attestation.to_json()
        return doc

    @property
    def evidence_sha256(self) -> str:
        return self.attestation.sha256() if self.attestation is not None else ""


def gpu_nonce(session_nonce: str, agent_key_sha256: str) -> bytes:
    """The 32-byte SPDM nonce asked of every GPU of a session.

    SHA-256 over a domain-separation string, the client's session nonce and the digest
    of the agent's key (both as bytes): fresh per job, and bound to this boot's agent.
    """
    try:
        nonce = bytes.fromhex(session_nonce)
        key = bytes.fromhex(agent_key_sha256)
    except ValueError:
        raise FormatError("the session nonce and agent key digest must be hex") from None
    return hashlib.sha256(GPU_NONCE_DOMAIN + nonce + key).digest()


def parse_gpus(raw: object) -> tuple[GpuRecord, ...]:
    """Read ``predicate.aicert_gpus`` (absent: no GPU) strictly."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FormatError("statement: aicert_gpus must be an array")
    if len(raw) > MAX_GPUS:
        raise FormatError(f"statement: aicert_gpus lists more than {MAX_GPUS} GPUs")
    gpus = tuple(_gpu(g, i) for i, g in enumerate(raw))
    if len({g.uuid for g in gpus}) != len(gpus):
        raise FormatError("statement: two aicert_gpus entries have the same UUID")
    return gpus


_GPU_KEYS = {"model", "uuid", "driverVersion", "vbiosVersion", "ccMode"}


def _gpu(raw: object, i: int) -> GpuRecord:
    where = f"aicert_gpus {i}"
    obj = _obj(raw, where)
    unknown = set(obj) - _GPU_KEYS - {"attestation"}
    if unknown or not set(obj) >= _GPU_KEYS:
        raise FormatError(f"statement: {where} must hold exactly {sorted(_GPU_KEYS)}")
    cc_mode = _text(obj["ccMode"], f"{where} ccMode")
    if cc_mode not in CC_MODES:
        raise FormatError(f"statement: {where} ccMode must be one of {', '.join(CC_MODES)}")
    attestation = None
    if "attestation" in obj:
        attestation = _attestation(obj["attestation"], where)
    return GpuRecord(
        model=_text(obj["model"], f"{where} model"),
        uuid=_text(obj["uuid"], f"{where} uuid"),
        driver_version=_text(obj["driverVersion"], f"{where} driverVersion"),
        vbios_version=_text(obj["vbiosVersion"], f"{where} vbiosVersion"),
        cc_mode=cc_mode,
        attestation=attestation,
    )


def _attestation(raw: object, where: str) -> GpuAttestation:
    where = f"{where} attestation"
    obj = _obj(raw, where)
    if set(obj) != {"nonce", "report", "certificateChain", "nvidiaVerifier"}:
        raise FormatError(
            f"statement: {where} must hold nonce, report, certificateChain, nvidiaVerifier"
        )
    nonce = _text(obj["nonce"], f"{where} nonce")
    if len(nonce) != 64 or any(c not in "0123456789abcdef" for c in nonce):
        raise FormatError(f"statement: {where} nonce must be 64 lowercase hex digits")
    chain = obj["certificateChain"]
    if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_CHAIN_CERTS:
        raise FormatError(f"statement: {where} certificateChain must list 1-{MAX_CHAIN_CERTS}")
    verdict = _obj(obj["nvidiaVerifier"], f"{where} nvidiaVerifier")
    if set(verdict) != {"name", "result"} or not isinstance(verdict["result"], bool):
        raise FormatError(f"statement: {where} nvidiaVerifier must hold name and result")
    return GpuAttestation(
        nonce=nonce,
        report=_b64(obj["report"], f"{where} report", MAX_REPORT_BYTES),
        certificates=tuple(
            _b64(c, f"{where} certificate {j}", MAX_CERT_BYTES) for j, c in enumerate(chain)
        ),
        verifier=_text(verdict["name"], f"{where} nvidiaVerifier name"),
        verifier_result=verdict["result"],
    )


def _b64(value: object, where: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > (limit * 4) // 3 + 4:
        raise FormatError(f"statement: {where} must be base64 of at most {limit} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise FormatError(f"statement: {where} is not valid base64") from None
    if not data:
        raise FormatError(f"statement: {where} is empty")
    return data


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"statement: {where} must be an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise FormatError(f"statement: {where} must be a string of 1-{MAX_TEXT} characters")
    if not value.isprintable():
        raise FormatError(f"statement: {where} holds control characters")
    return value
