"""NVIDIA's own nv-local-gpu-verifier (the ``gpu`` extra), where it is installed.

Its no-GPU test mode answers with NVIDIA's bundled Hopper sample: the agent's collector
turns that into evidence that aicert's offline checks accept. Its verdict needs NVIDIA's
OCSP responder, which no test reaches, so only the collection is exercised here.
"""

from __future__ import annotations

import datetime
import importlib.util

import pytest
from aicert.agent.gpu_attestation import NvidiaLocalVerifier
from aicert.verifier.gpu.nvidia_evidence import GpuPolicy, bundled_nvidia_roots, check_evidence
from aicert.verifier.gpu.record import GpuAttestation, GpuRecord


def _installed() -> bool:
    try:
        spec = importlib.util.find_spec("verifier.cc_admin")
    except ModuleNotFoundError:
        return False
    return spec is not None


pytestmark = pytest.mark.skipif(not _installed(), reason="nv-local-gpu-verifier not installed")

SAMPLE_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")


def test_nvidias_collector_yields_evidence_aicert_accepts() -> None:
    (raw,) = NvidiaLocalVerifier(test_no_gpu=True).collect(SAMPLE_NONCE)
    record = GpuRecord(
        "NVIDIA H100",
        raw.uuid,
        "550.90.07",
        "96.00.9f.00.01",
        "on",
        GpuAttestation(SAMPLE_NONCE.hex(), raw.report, raw.certificates, "x", True),
    )
    assert record.attestation is not None
    at = datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)
    check_evidence(record, record.attestation, SAMPLE_NONCE, GpuPolicy(bundled_nvidia_roots()), at)
