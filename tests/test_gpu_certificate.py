"""A certificate of a session with GPUs, end to end on a real swtpm: the agent's session
records each GPU in the statement and in PCR 15, ``aicert-verify`` checks the evidence,
prints the GPUs and enforces ``--require-gpus`` and ``--require-gpu-cc``; the BOM lists
them as devices."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from aicert.agent.gpu_attestation import attest_gpus
from aicert.agent.gpu_inventory import parse_nvidia_smi_xml
from aicert.verifier.cli import main as verify_main
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.session_events import GpuObserved, parse_event
from certgen import IssuedCertificate, issue_certificate
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from gpu_evidence_builder import (
    FakeDeviceCa,
    FakeEvidenceSource,
    FakeRimSigner,
    measurement_values,
    rim_xml,
)

pytestmark = pytest.mark.swtpm

SAMPLES = Path(__file__).parent / "data" / "nvidia-smi"


def _issue(
    swtpm: ProvisionedSwtpm, tmp_path: Path, sample: str, ca: FakeDeviceCa
) -> IssuedCertificate:
    inventory = parse_nvidia_smi_xml((SAMPLES / sample).read_bytes())
    source = FakeEvidenceSource(
        ca, tuple(g.uuid for g in inventory), vbios=inventory[0].vbios_version
    )

    def gpus(nonce: str, agent_key: str) -> Sequence[GpuRecord]:
        return attest_gpus(inventory, nonce, agent_key, source, roots=(ca.root,))

    intermediate = swtpm.ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
    return issue_certificate(swtpm.tcti, (intermediate,), tmp_path, gpus=gpus)


def _verify(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_two_attested_h100s_verify_print_and_reach_the_bom(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = FakeDeviceCa()
    issued = _issue(provisioned_swtpm, tmp_path, "h100-cc-on.xml", ca)
    events = [parse_event(r.content, "") for r in issued.certificate.tpm.cel_log]
    assert [type(e) for e in events[2:4]] == [GpuObserved, GpuObserved]
    root = tmp_path / "gpu-root.pem"
    root.write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    rim = tmp_path / "vbios.swidtag"
    signer = FakeRimSigner()
    rim.write_bytes(rim_xml(measurement_values(), signer))
    rim_root = tmp_path / "rim-root.pem"
    rim_root.write_bytes(signer.root.public_bytes(serialization.Encoding.PEM))
    bom = tmp_path / "bom.json"
    base = [
        str(issued.path),
        "--trust-root",
        str(provisioned_swtpm.ca.root_path),
        "--any-image",
        "--gpu-root",
        str(root),
    ]
    code, out, err = _verify(
        [
            *base,
            "--gpu-rim",
            str(rim),
            "--gpu-rim-root",
            str(rim_root),
            "--require-gpus",
            "2",
            "--require-gpu-cc",
            "--export-bom",
            "cyclonedx",
            str(bom),
        ],
        capsys,
    )
    assert code == 0, out + err
    assert "2 GPU(s), 2 with NVIDIA attestation verified, measurements match 1 RIM(s)" in out
    assert (
        "NVIDIA H100 80GB HBM3 GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91  driver 550.90.07, "
        "VBIOS 96.00.9F.00.01, CC on, attested" in out
    )
    devices = [c for c in json.loads(bom.read_text())["components"] if c["type"] == "device"]
    assert sorted(c["bom-ref"] for c in devices) == [
        "aicert:gpu:GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91",
        "aicert:gpu:GPU-a2b4c6d8-1e3f-4a5b-8c7d-9e0f1a2b3c4d",
    ]

    code, out, err = _verify([*base, "--require-gpus", "3"], capsys)
    assert code == 1
    assert err.strip() == (
        "aicert-verify: error: gpus: the certificate records 2 GPU(s); the policy requires 3"
    )
    # Without --gpu-root the bundled NVIDIA root applies: this chain does not lead there.
    code, out, err = _verify(base[:4], capsys)
    assert code == 1
    assert "not at a trusted NVIDIA root" in err


def test_a_devtools_gpu_is_refused_when_the_policy_requires_cc(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = FakeDeviceCa()
    issued = _issue(provisioned_swtpm, tmp_path, "h200-devtools.xml", ca)
    root = tmp_path / "gpu-root.pem"
    root.write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    base = [
        str(issued.path),
        "--trust-root",
        str(provisioned_swtpm.ca.root_path),
        "--any-image",
        "--gpu-root",
        str(root),
    ]
    code, out, _err = _verify(base, capsys)
    assert code == 0, out
    assert "CC devtools, attested" in out
    code, out, err = _verify([*base, "--require-gpu-cc"], capsys)
    assert code == 1
    assert "CC mode 'devtools'; the policy requires 'on'" in err


def test_a_certificate_without_gpus_says_none_and_fails_a_gpu_requirement(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)
    base = [str(issued.path), "--trust-root", str(provisioned_swtpm.ca.root_path), "--any-image"]
    code, out, _err = _verify([*base, "--json"], capsys)
    assert code == 0
    checks = {c["check"]: c["status"] for c in json.loads(out)["checks"]}
    assert checks["gpus"] == "skipped"
    code, out, err = _verify([*base, "--require-gpus", "1"], capsys)
    assert code == 1
    assert "records 0 GPU(s); the policy requires 1" in err
