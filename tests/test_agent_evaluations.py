"""Benchmark linking through the agent: evaluations after training, evaluation-only jobs.

Real swtpm, real HTTPS agent, real sandbox, real client and verifier, as in
tests/test_agent_api.py.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import SYSTEM_PYTHON, RunningAgent, running_agent
from aicert.builder.agent_client import AgentClient, AgentRequestError, send_inputs
from aicert.builder.job_file import EvaluationRun, JobFile, load_job_file
from aicert.builder.platforms.local.provision import provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import EvaluationError, InputDigestError, WeightsError
from aicert.verifier.logs.session_events import EvaluationMeasured, InputMeasured, SessionLocked
from aicert.verifier.verify import Policy, Status, verify_certificate
from certgen import issue_certificate
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.swtpm

TRAIN = textwrap.dedent(
    """
    import hashlib, os
    inputs, output = os.environ["AICERT_INPUTS"], os.environ["AICERT_OUTPUT"]
    data = open(os.path.join(inputs, "data"), "rb").read()
    try:
        os.listdir(os.path.join(os.path.dirname(inputs), "evaluations"))
        print("evaluation inputs visible", flush=True)
    except PermissionError:
        print("evaluation inputs hidden", flush=True)
    open(os.path.join(output, "weights.bin"), "wb").write(hashlib.sha256(data).digest() * 32)
    """
)

EVALUATE = textwrap.dedent(
    """
    import json, os, sys
    weights, inputs = os.environ["AICERT_WEIGHTS"], os.environ["AICERT_INPUTS"]
    results = os.environ["AICERT_RESULTS"]
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    rows = open(os.path.join(inputs, "test-set")).read().splitlines()[1:]
    w = open(os.path.join(weights, "weights.bin"), "rb").read()
    print("evaluating", len(w), "bytes of weights on", len(rows), "rows", flush=True)
    if mode == "write-weights":
        open(os.path.join(weights, "weights.bin"), "ab").write(b"tampered")
    if mode == "exit":
        sys.exit(1)
    if mode == "symlink":
        os.symlink(os.path.join(weights, "weights.bin"), results)
        sys.exit(0)
    with open(results, "w") as out:
        if mode == "not-json":
            out.write("accuracy: high\\n")
        elif mode == "nan":
            out.write('{"accuracy": NaN}')
        elif mode == "boolean":
            out.write('{"accuracy": true}')
        else:
            json.dump({"accuracy": (w[0] % 100) / 100, "samples": len(rows)}, out)
    """
)


@pytest.fixture
def live(provisioned_swtpm: ProvisionedSwtpm) -> Iterator[RunningAgent]:
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as running:
        yield running


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Training code and data, evaluation code and a test set, side by side."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.py").write_text(TRAIN)
    (tmp_path / "data.bin").write_bytes(b"training data\n" * 100)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "evaluate.py").write_text(EVALUATE)
    (tmp_path / "test.csv").write_text("x,y\n" + "1,2\n" * 360)
    return tmp_path


def _job(project: Path, *, mode: str = "ok", test_set_expected: str = "") -> JobFile:
    expected = f'expected = "{test_set_expected}"' if test_set_expected else ""
    path = project / "job.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            command = ["{SYSTEM_PYTHON}", "train.py"]
            output = "model"
            [code]
            path = "train"
            [[data]]
            name = "data"
            path = "data.bin"

            [[evaluation]]
            name = "accuracy"
            code = {{ path = "eval" }}
            command = ["{SYSTEM_PYTHON}", "evaluate.py", "{mode}"]
            results = "results.json"
            [[evaluation.data]]
            name = "test-set"
            path = "test.csv"
            {expected}
            """
        )
    )
    return load_job_file(path)


def _run(live: RunningAgent, job: JobFile) -> tuple[AgentClient, bytes]:
    client = live.client()
    client.attest()
    client.claim(job.nonce)
    send_inputs(client, job)
    client.start_job(job.command, job.output, job.config, evaluations=job.evaluations)
    log = bytearray()
    client.wait(log.extend, poll_interval=0.1, timeout=120)
    return client, bytes(log)


def _policy(live: RunningAgent, nonce: str, **extra: object) -> Policy:
    return Policy(
        trust_roots=(live.ca.root_certificate,),
        expected_nonce=nonce,
        accept_any_image=True,
        tree_digest=lambda p: hash_tree(p).digest,
        **extra,  # type: ignore[arg-type]
    )


def test_training_with_an_evaluation_verifies(
    live: RunningAgent, project: Path, tmp_path: Path
) -> None:
    job = _job(project)
    client, log = _run(live, job)
    result = client.job()
    assert result.succeeded, result.message
    assert b"evaluation inputs hidden" in log
    assert b"evaluating 1024 bytes of weights on 360 rows" in log

    out = tmp_path / "out"
    client.download_outputs(out / "model")
    saved = client.download_results(out)
    results = out / "evaluations" / "accuracy" / "results.json"
    assert saved == {"accuracy": results}
    metrics = json.loads(results.read_text())
    assert metrics["samples"] == 360
    assert [(e.name, dict(e.metrics)) for e in result.evaluations] == [("accuracy", metrics)]

    certificate = client.certificate().certificate
    policy = _policy(
        live,
        job.nonce,
        weights_path=out / "model",
        results_paths={"accuracy": results},
        input_paths={"accuracy/test-set": project / "test.csv", "data": project / "data.bin"},
    )
    report = verify_certificate(certificate, policy)
    assert report.ok, report.error
    statuses = {r.check: r.status for r in report.results}
    for check in ("cel-log", "evaluations", "weights", "files"):
        assert statuses[check] is Status.PASSED, check
    assert report.provenance is not None
    (evaluation,) = report.provenance.evaluations
    assert evaluation.metrics == metrics
    assert evaluation.results_sha256 == hash_tree(results).digest
    assert evaluation.weights_sha256 == result.output_sha256
    assert evaluation.command == (SYSTEM_PYTHON, "evaluate.py", "ok")
    assert [(i.name, i.role) for i in evaluation.inputs] == [
        ("accuracy/code", "eval-code"),
        ("accuracy/test-set", "eval-data"),
    ]
    # The evaluation's inputs are measured after the outputs, right before it ran.
    kinds = [r.content["event"] for r in certificate.tpm.cel_log]
    assert kinds[-5:] == ["output", "input", "input", "evaluation", "lock"]

    results.write_text(json.dumps({**metrics, "accuracy": 0.999}))
    altered = verify_certificate(certificate, policy)
    assert isinstance(altered.error, EvaluationError)
    assert "altered" in altered.error.message

    (out / "model" / "weights.bin").write_bytes(b"other weights")
    report = verify_certificate(certificate, _policy(live, job.nonce, weights_path=out / "model"))
    assert isinstance(report.error, WeightsError)

    (project / "test.csv").write_text("x,y\n1,2\n")
    report = verify_certificate(
        certificate,
        _policy(live, job.nonce, input_paths={"accuracy/test-set": project / "test.csv"}),
    )
    assert isinstance(report.error, InputDigestError)


def test_evaluation_data_altered_before_upload_is_refused(
    live: RunningAgent, project: Path
) -> None:
    digest = hash_tree(project / "test.csv").digest
    job = _job(project, test_set_expected=digest)
    (project / "test.csv").write_text("x,y\n" + "1,2\n" * 359 + "9,9\n")
    client = live.client()
    client.attest()
    client.claim(job.nonce)
    with pytest.raises(AgentRequestError) as refused:
        send_inputs(client, job)
    assert refused.value.status == 422
    status = client.status()
    assert status["evaluationInputs"] == [
        {
            "evaluation": "accuracy",
            "name": "code",
            "role": "eval-code",
            "sha256": hash_tree(project / "eval").digest,
            "source": "urn:aicert:upload:accuracy/code",
        }
    ]
    # Hashed on arrival, measured only when the evaluation runs: nothing of it in PCR 15.
    events = client.attest().events
    assert not any(isinstance(e, InputMeasured) and e.role.startswith("eval") for e in events)
    with pytest.raises(AgentRequestError) as certificate:
        client.certificate()
    assert certificate.value.status == 409


@pytest.mark.parametrize("mode", ["not-json", "nan", "boolean", "symlink", "exit", "write-weights"])
def test_failed_evaluation_gets_no_certificate(
    live: RunningAgent, project: Path, mode: str
) -> None:
    client, log = _run(live, _job(project, mode=mode))
    result = client.job()
    assert result.state == "failed"
    assert result.exit_status == 0  # the training itself succeeded
    assert "evaluation 'accuracy'" in result.message
    with pytest.raises(AgentRequestError) as refused:
        client.certificate()
    assert refused.value.status == 409
    assert not (live.scratch / "certificate.json").exists()
    events = client.attest().events
    assert isinstance(events[-1], SessionLocked)
    assert not any(isinstance(e, EvaluationMeasured) for e in events)
    if mode == "write-weights":
        assert b"Read-only file system" in log
        assert hash_tree(live.scratch / "outputs" / "model").digest == result.output_sha256
    if mode == "exit":
        assert "status 1" in result.message


def _intermediates(swtpm: ProvisionedSwtpm) -> tuple[bytes, ...]:
    return (swtpm.ca.intermediate_certificate.public_bytes(serialization.Encoding.DER),)


def _evaluation_only_job(project: Path, weights: Path, certificate: Path, sha256: str) -> JobFile:
    path = project / "evaluate.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            weights = {{ path = "{weights}", sha256 = "{sha256}" }}
            linked_certificate = "{certificate}"
            [[evaluation]]
            name = "accuracy"
            code = {{ path = "eval" }}
            data = [{{ name = "test-set", path = "test.csv" }}]
            command = ["{SYSTEM_PYTHON}", "evaluate.py"]
            results = "results.json"
            """
        )
    )
    return load_job_file(path)


def test_evaluation_only_job_links_the_training_certificate(
    provisioned_swtpm: ProvisionedSwtpm, project: Path, tmp_path: Path
) -> None:
    ca = provisioned_swtpm.ca
    training_job = dataclasses.replace(_job(project), evaluations=())
    with running_agent(provisioned_swtpm.tcti, ca) as first:
        client, _ = _run(first, training_job)
        assert client.job().succeeded
        weights = tmp_path / "trained" / "model"
        client.download_outputs(weights)
        training_certificate = tmp_path / "trained" / "model.aicert.json"
        training_certificate.write_bytes(client.certificate().raw)

    job = _evaluation_only_job(project, weights, training_certificate, hash_tree(weights).digest)
    assert job.evaluation_only
    # A second boot: a fresh TPM, provisioned by the same CA.
    with Swtpm.tcp(tmp_path / "tpm2") as second:
        provision_like_azure(second.tcti, ca, "second-vm")
        with running_agent(second.tcti, ca) as evaluator:
            client, _ = _run(evaluator, job)
            result = client.job()
            assert result.succeeded, result.message
            assert result.output_sha256 is None
            with pytest.raises(AgentRequestError) as no_outputs:
                client.download_outputs(tmp_path / "nothing")
            assert no_outputs.value.code == "no-outputs"
            saved = client.download_results(tmp_path / "evaluated")
            certificate = client.certificate().certificate

    policy = Policy(
        trust_roots=(ca.root_certificate,),
        expected_nonce=job.nonce,
        accept_any_image=True,
        weights_path=weights,
        tree_digest=lambda p: hash_tree(p).digest,
        linked_certificates=(training_certificate,),
        results_paths=saved,
    )
    report = verify_certificate(certificate, policy)
    assert report.ok, report.error
    assert report.provenance is not None
    assert report.provenance.evaluation_only
    roles = {d.name: d.role for d in report.provenance.dependencies}
    assert roles["weights"] == "weights"
    assert roles["training-certificate"] == "certificate"
    assert report.provenance.evaluations[0].metrics == json.loads(saved["accuracy"].read_text())

    unlinked = Policy(
        trust_roots=(ca.root_certificate,), accept_any_image=True, weights_path=weights
    )
    assert isinstance(verify_certificate(certificate, unlinked).error, EvaluationError)


def test_linked_certificate_of_other_weights_is_refused(
    provisioned_swtpm: ProvisionedSwtpm, project: Path, tmp_path: Path
) -> None:
    ca = provisioned_swtpm.ca
    with Swtpm.tcp(tmp_path / "tpm2") as second:
        provision_like_azure(second.tcti, ca, "second-vm")
        issued = issue_certificate(second.tcti, _intermediates(provisioned_swtpm), tmp_path / "t")
    other = tmp_path / "other-weights"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"not the certified weights" * 50)
    job = _evaluation_only_job(project, other, issued.path, hash_tree(other).digest)

    with running_agent(provisioned_swtpm.tcti, ca) as live:
        client = live.client()
        client.attest()
        client.claim(job.nonce)
        with pytest.raises(EvaluationError, match="certifies weights"):
            send_inputs(client, job)
        status = client.status()
        assert status["inputs"] == []
        assert status["evaluationInputs"] == []

        # The agent refuses the mismatch too when a client sends it regardless.
        client.upload_input("weights", other, "weights")
        client.upload_input("training-certificate", issued.path, "certificate")
        client.upload_input("code", project / "eval", "eval-code", evaluation="accuracy")
        with pytest.raises(AgentRequestError) as refused:
            client.start_job(None, None, evaluations=job.evaluations)
        assert refused.value.code == "certificate-mismatch"
        assert client.status()["state"] == "claimed"


def test_inputs_that_do_not_fit_the_job_are_refused(live: RunningAgent, project: Path) -> None:
    client = live.client()
    client.attest()
    client.claim("ab" * 16)
    with pytest.raises(AgentRequestError) as untagged:
        client.upload_input("test-set", project / "test.csv", "eval-data")
    assert untagged.value.status == 400
    with pytest.raises(AgentRequestError) as wrong_role:
        client.upload_input("code", project / "eval", "code", evaluation="accuracy")
    assert wrong_role.value.status == 400
    client.upload_input("test-set", project / "test.csv", "eval-data", evaluation="accuracy")
    with pytest.raises(AgentRequestError) as twice:
        client.upload_input("test-set", project / "test.csv", "eval-data", evaluation="accuracy")
    assert twice.value.code == "duplicate-input"
    run = [EvaluationRun("accuracy", (SYSTEM_PYTHON, "evaluate.py"), "results.json")]
    with pytest.raises(AgentRequestError) as no_eval_code:
        client.start_job(None, None, evaluations=run)
    assert no_eval_code.value.code == "no-eval-code"
    client.upload_input("code", project / "eval", "eval-code", evaluation="accuracy")
    with pytest.raises(AgentRequestError) as no_weights:
        client.start_job(None, None, evaluations=run)
    assert no_weights.value.code == "no-weights"
    client.upload_input("code", project / "train", "code")
    with pytest.raises(AgentRequestError) as unknown:
        client.start_job([SYSTEM_PYTHON, "train.py"], "model")
    assert unknown.value.code == "unknown-evaluation"
    with pytest.raises(AgentRequestError) as no_training:
        client.start_job(None, None, evaluations=run)
    assert no_training.value.code == "job-inputs"
    with pytest.raises(AgentRequestError) as bad_results:
        client.start_job(
            [SYSTEM_PYTHON, "train.py"],
            "model",
            evaluations=[EvaluationRun("accuracy", ("true",), "../escape.json")],
        )
    assert bad_results.value.status == 400
    assert client.status()["state"] == "claimed"
    # Only the training code is measured: no evaluation input, no job configuration.
    measured = [e for e in client.attest().events if isinstance(e, InputMeasured)]
    assert [(e.role, e.name) for e in measured] == [("code", "code")]
