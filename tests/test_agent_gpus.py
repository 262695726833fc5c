"""The agent's claim records the VM's GPUs: through the real HTTPS API on a swtpm."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from agent_harness import running_agent
from aicert.agent.gpu_attestation import attest_gpus
from aicert.agent.gpu_inventory import parse_nvidia_smi_xml
from aicert.builder.agent_client import AgentRequestError
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.session_events import GpuObserved, parse_event
from conftest import ProvisionedSwtpm
from gpu_evidence_builder import FakeDeviceCa, FakeEvidenceSource

pytestmark = pytest.mark.swtpm

INVENTORY = parse_nvidia_smi_xml(
    (Path(__file__).parent / "data" / "nvidia-smi" / "h100-cc-on.xml").read_bytes()
)


def _observer(source: FakeEvidenceSource) -> Callable[[str, str], Sequence[GpuRecord]]:
    def gpus(nonce: str, agent_key: str) -> Sequence[GpuRecord]:
        return attest_gpus(INVENTORY, nonce, agent_key, source, roots=(source.ca.root,))

    return gpus


def test_a_claim_measures_one_gpu_event_per_gpu(provisioned_swtpm: ProvisionedSwtpm) -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), tuple(g.uuid for g in INVENTORY))
    with running_agent(
        provisioned_swtpm.tcti, provisioned_swtpm.ca, gpus=_observer(source)
    ) as live:
        client = live.client()
        client.attest()
        client.claim(secrets.token_hex(16))
        session = live.agent._session  # the measured records themselves
        assert session is not None
        events = [parse_event(r.content, "") for r in session.records]
        assert [e.kind for e in events] == ["agent-start", "session-claim", "gpu", "gpu"]
        first = events[2]
        assert isinstance(first, GpuObserved)
        assert (first.uuid, first.cc_mode) == (INVENTORY[0].uuid, "on")
        assert len(first.evidence_sha256) == 64


def test_refused_gpu_evidence_fails_the_session(provisioned_swtpm: ProvisionedSwtpm) -> None:
    source = FakeEvidenceSource(
        FakeDeviceCa(), tuple(g.uuid for g in INVENTORY), answer_nonce=bytes(32)
    )
    with running_agent(
        provisioned_swtpm.tcti, provisioned_swtpm.ca, gpus=_observer(source)
    ) as live:
        client = live.client()
        client.attest()
        with pytest.raises(AgentRequestError) as refused:
            client.claim(secrets.token_hex(16))
        assert (refused.value.status, refused.value.code) == (500, "gpu-attestation")
        assert "answers nonce 0000" in refused.value.message
        assert live.agent.status()["state"] == "failed"
