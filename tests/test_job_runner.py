"""The platform-independent job flow against a real agent on a real swtpm."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_harness import running_agent, write_toy_job
from aicert.builder.job_file import load_job_file
from aicert.builder.job_runner import (
    CERTIFICATE_NAME,
    JobFailedError,
    Verification,
    run_job,
)
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import InputError
from conftest import ProvisionedSwtpm

pytestmark = pytest.mark.swtpm


def test_a_job_runs_and_its_verified_result_appears(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    job = load_job_file(write_toy_job(tmp_path))
    ca = provisioned_swtpm.ca
    said: list[str] = []
    with running_agent(provisioned_swtpm.tcti, ca) as agent:
        outcome = run_job(
            agent.client(),
            job,
            tmp_path / "out",
            Verification((ca.root_certificate,), None, None),
            say=said.append,
            log_sink=lambda _chunk: None,
        )
    assert outcome.output_dir == tmp_path / "out"
    assert (outcome.output_dir / CERTIFICATE_NAME).is_file()
    assert (outcome.weights / "weights.bin").read_bytes() == b"w" * 1000
    assert outcome.report.ok
    assert outcome.report.provenance is not None
    assert outcome.report.provenance.subjects[0].sha256 == hash_tree(outcome.weights).digest
    assert any(line.startswith("agent attested") for line in said)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial")] == []


def test_evaluations_are_run_downloaded_and_verified(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    job = load_job_file(write_toy_job(tmp_path, evaluate=True))
    ca = provisioned_swtpm.ca
    said: list[str] = []
    with running_agent(provisioned_swtpm.tcti, ca) as agent:
        outcome = run_job(
            agent.client(),
            job,
            tmp_path / "out",
            Verification((ca.root_certificate,), None, None),
            say=said.append,
            log_sink=lambda _chunk: None,
        )
    results = outcome.output_dir / "evaluations" / "size" / "results.json"
    assert results.is_file()
    assert "evaluation size: score = 0.5, size = 1000" in said
    statuses = {r.check: r.status.value for r in outcome.report.results}
    assert statuses["evaluations"] == statuses["files"] == "passed"


def test_a_failed_job_leaves_nothing(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> None:
    job = load_job_file(write_toy_job(tmp_path, exit_status=3))
    ca = provisioned_swtpm.ca
    with (
        running_agent(provisioned_swtpm.tcti, ca) as agent,
        pytest.raises(JobFailedError, match="no certificate"),
    ):
        run_job(
            agent.client(),
            job,
            tmp_path / "out",
            Verification((ca.root_certificate,), None, None),
            say=lambda _line: None,
            log_sink=lambda _chunk: None,
        )
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())


def test_a_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    from aicert.builder.job_runner import staging_dir

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        staging_dir(tmp_path / "out")
