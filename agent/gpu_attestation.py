"""GPU attestation inside the VM: each CC-mode GPU's report, bound to this session.

The nonce asked of every GPU is :func:`aicert.verifier.gpu.record.gpu_nonce` of the session's
nonce and agent key. Evidence is collected and judged by NVIDIA's local GPU verifier
(``nv-local-gpu-verifier``, the ``gpu`` extra), then checked again here with the same
offline code ``aicert-verify`` runs (chain to NVIDIA's device root, signature, nonce),
so a certificate never carries evidence that its own verifier would refuse.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aicert.verifier.errors import AicertError, ToolError
from aicert.verifier.gpu.nvidia_evidence import GpuPolicy, bundled_nvidia_roots, check_evidence
from aicert.verifier.gpu.record import GpuAttestation, GpuRecord, gpu_nonce
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .gpu_inventory import GpuInfo, read_gpus

NVIDIA_VERIFIER = "nv-local-gpu-verifier"


class GpuAttestationError(AicertError):
    """A CC-mode GPU gave no evidence, or evidence that does not verify."""

    exit_code = 1


@dataclass(frozen=True)
class RawEvidence:
    """One GPU's answer: its UUID, the attestation report and the DER certificate chain."""

    uuid: str
    report: bytes
    certificates: tuple[bytes, ...]


class EvidenceSource(Protocol):
    name: str

    def collect(self, nonce: bytes) -> Sequence[RawEvidence]: ...

    def verdict(self, nonce: bytes) -> bool:
        """NVIDIA's verifier's overall result for the evidence last collected."""
        ...


class NvidiaLocalVerifier:
    """NVIDIA's ``nv-local-gpu-verifier`` (module ``verifier.cc_admin``) over NVML.

    Its verdict needs NVIDIA's OCSP responder and RIM service: the agent, unlike the
    sandboxed job, must reach them. ``test_no_gpu`` is NVIDIA's own test mode, which
    answers with its bundled Hopper sample instead of asking NVML.
    """

    name = NVIDIA_VERIFIER

    def __init__(self, *, test_no_gpu: bool = False) -> None:
        self._test_no_gpu = test_no_gpu
        try:
            # NVIDIA's package installs the top-level module ``verifier``.
            cc_admin = importlib.import_module("verifier.cc_admin")
        except ImportError:
            raise ToolError(
                "a GPU is in CC mode but nv-local-gpu-verifier is not installed: "
                "install aicert with the gpu extra"
            ) from None
        self._cc_admin: Any = cc_admin
        self._evidence: list[Any] = []

    def collect(self, nonce: bytes) -> Sequence[RawEvidence]:
        self._evidence = list(
            self._cc_admin.collect_gpu_evidence(
                nonce.hex(), no_gpu_mode=self._test_no_gpu, ppcie_mode=False
            )
        )
        return [
            RawEvidence(
                uuid=str(handler.get_uuid()),
                report=bytes(handler.get_attestation_report()),
                certificates=tuple(
                    c.to_cryptography().public_bytes(Encoding.DER)
                    for c in handler.get_attestation_cert_chain()
                ),
            )
            for handler in self._evidence
        ]

    def verdict(self, nonce: bytes) -> bool:
        options = {
            "verbose": False,
            "test_no_gpu": self._test_no_gpu,
            "driver_rim": None,
            "vbios_rim": None,
            "user_mode": True,
            "allow_hold_cert": False,
            "service_key": None,
            "nonce": nonce.hex(),
            "rim_root_cert": None,
            "rim_service_url": None,
            "ocsp_url": None,
            "ocsp_nonce_disabled": False,
            "claims_version": "2.0",
        }
        result, _claims = self._cc_admin.attest(options, nonce.hex(), self._evidence)
        return bool(result)


def attest_gpus(
    gpus: Sequence[GpuInfo],
    session_nonce: str,
    agent_key_sha256: str,
    source: EvidenceSource | None,
    roots: Sequence[x509.Certificate] = (),
) -> tuple[GpuRecord, ...]:
    """The statement's GPU records: CC-mode GPUs with evidence checked twice."""
    plain = tuple(
        GpuRecord(g.model, g.uuid, g.driver_version, g.vbios_version, g.cc_mode) for g in gpus
    )
    if not any(g.cc_mode != "off" for g in gpus):
        return plain
    source = source if source is not None else NvidiaLocalVerifier()
    nonce = gpu_nonce(session_nonce, agent_key_sha256)
    try:
        evidence = {e.uuid: e for e in source.collect(nonce)}
        verdict = source.verdict(nonce)
    except AicertError:
        raise
    except Exception as exc:  # NVIDIA's verifier raises bare Exceptions
        raise GpuAttestationError(f"{source.name} failed: {exc}") from None
    if not verdict:
        raise GpuAttestationError(f"{source.name} refused this VM's GPU evidence")
    policy = GpuPolicy(roots=tuple(roots) or bundled_nvidia_roots())
    records: list[GpuRecord] = []
    for record in plain:
        if record.cc_mode == "off":
            records.append(record)
            continue
        raw = evidence.get(record.uuid)
        if raw is None:
            raise GpuAttestationError(f"GPU {record.uuid} is in CC mode but gave no evidence")
        evidence_record = GpuAttestation(
            nonce.hex(), raw.report, raw.certificates, source.name, verdict
        )
        attested = GpuRecord(
            record.model,
            record.uuid,
            record.driver_version,
            record.vbios_version,
            record.cc_mode,
            evidence_record,
        )
        try:
            check_evidence(attested, evidence_record, nonce, policy, datetime.now(UTC))
        except AicertError as exc:
            raise GpuAttestationError(f"GPU evidence refused: {exc.message}") from None
        records.append(attested)
    return tuple(records)


def observe_gpus(session_nonce: str, agent_key_sha256: str) -> tuple[GpuRecord, ...]:
    """What the agent records at claim time: the inventory, attested where in CC mode."""
    return attest_gpus(read_gpus(), session_nonce, agent_key_sha256, None)
