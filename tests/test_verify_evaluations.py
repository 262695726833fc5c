"""Benchmark linking: evaluations bound to the certified weights, and evaluation-only jobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from aicert.builder.platforms.local.provision import provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.cli import main as verify_main
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.errors import EvaluationError, InputDigestError, WeightsError
from aicert.verifier.verify import Policy, Report, Status, verify_certificate
from certgen import IssuedCertificate, issue_certificate, issue_evaluation_only, write_weights
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.swtpm


def _intermediates(swtpm: ProvisionedSwtpm) -> tuple[bytes, ...]:
    return (swtpm.ca.intermediate_certificate.public_bytes(serialization.Encoding.DER),)


@pytest.fixture
def evaluated(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    return issue_certificate(
        provisioned_swtpm.tcti, _intermediates(provisioned_swtpm), tmp_path, evaluate=True
    )


def _policy(swtpm: ProvisionedSwtpm, issued: IssuedCertificate, **extra: object) -> Policy:
    return Policy(
        trust_roots=(swtpm.ca.root_certificate,),
        expected_nonce=issued.nonce,
        accept_any_image=True,
        weights_path=issued.weights,
        tree_digest=tree_digest_of,
        **extra,  # type: ignore[arg-type]
    )


def _status(report: Report, check: str) -> Status:
    return next(r.status for r in report.results if r.check == check)


def test_evaluation_results_verify(
    provisioned_swtpm: ProvisionedSwtpm, evaluated: IssuedCertificate
) -> None:
    assert evaluated.results is not None
    policy = _policy(
        provisioned_swtpm,
        evaluated,
        results_paths={"accuracy": evaluated.results},
        input_paths={"code": evaluated.code},
    )
    report = verify_certificate(evaluated.certificate, policy)
    assert report.ok, report.error
    assert _status(report, "evaluations") is Status.PASSED
    assert _status(report, "files") is Status.PASSED
    assert report.provenance is not None
    assert report.provenance.evaluations[0].metrics == {"accuracy": 0.93, "samples": 360}


def test_altered_results_file_fails(
    provisioned_swtpm: ProvisionedSwtpm, evaluated: IssuedCertificate
) -> None:
    assert evaluated.results is not None
    evaluated.results.write_text('{"accuracy": 0.99, "samples": 360}\n')
    policy = _policy(provisioned_swtpm, evaluated, results_paths={"accuracy": evaluated.results})
    report = verify_certificate(evaluated.certificate, policy)
    assert isinstance(report.error, EvaluationError)
    assert "altered" in report.error.message


def test_altered_input_fails(
    provisioned_swtpm: ProvisionedSwtpm, evaluated: IssuedCertificate
) -> None:
    (evaluated.code / "train.py").write_text("print('something else')\n")
    policy = _policy(provisioned_swtpm, evaluated, input_paths={"code": evaluated.code})
    assert isinstance(verify_certificate(evaluated.certificate, policy).error, InputDigestError)


def test_altered_weights_fail_with_evaluations(
    provisioned_swtpm: ProvisionedSwtpm, evaluated: IssuedCertificate
) -> None:
    (evaluated.weights / "config.json").write_text('{"layers": 3}\n')
    report = verify_certificate(evaluated.certificate, _policy(provisioned_swtpm, evaluated))
    assert isinstance(report.error, WeightsError)


def test_evaluation_only_job_links_the_training_certificate(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = issue_certificate(
        provisioned_swtpm.tcti, _intermediates(provisioned_swtpm), tmp_path / "train"
    )
    # A second boot: a fresh TPM (PCR 15 starts at zero) provisioned by the same CA.
    with Swtpm.tcp(tmp_path / "tpm2") as second:
        provision_like_azure(second.tcti, provisioned_swtpm.ca, "second-vm")
        evaluation = issue_evaluation_only(
            second.tcti,
            _intermediates(provisioned_swtpm),
            tmp_path / "eval",
            training.weights,
            training.path,
        )
    policy = _policy(provisioned_swtpm, evaluation, linked_certificates=(training.path,))
    report = verify_certificate(evaluation.certificate, policy)
    assert report.ok, report.error
    assert report.provenance is not None
    assert report.provenance.evaluation_only

    without_link = _policy(provisioned_swtpm, evaluation)
    error = verify_certificate(evaluation.certificate, without_link).error
    assert isinstance(error, EvaluationError)
    assert "--linked-certificate" in error.message

    bom = tmp_path / "bom.json"
    args = [
        str(evaluation.path),
        "--trust-root",
        str(provisioned_swtpm.ca.root_path),
        "--any-image",
        "--linked-certificate",
        str(training.path),
        "--results",
        f"accuracy={evaluation.results}",
        "--export-bom",
        "cyclonedx",
        str(bom),
    ]
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "metric     accuracy" in out
    model = json.loads(bom.read_text())["metadata"]["component"]
    properties = {p["name"]: p["value"] for p in model["properties"]}
    assert (
        properties["aicert:tree-sha256"] == evaluation.certificate.tpm.cel_log[2].content["sha256"]
    )
    assert {c["name"]: c["hashes"][0]["content"] for c in model["components"]} == {
        f"weights/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
        for f in training.weights.iterdir()
    }
    metrics = model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"accuracy": "0.93", "samples": "360"}


def _second_boot(
    swtpm: ProvisionedSwtpm, workdir: Path, weights: Path, linked: Path | None
) -> IssuedCertificate:
    """An evaluation-only certificate from a fresh TPM provisioned by the same CA."""
    with Swtpm.tcp(workdir / "tpm") as tpm:
        provision_like_azure(tpm.tcti, swtpm.ca, workdir.name)
        return issue_evaluation_only(tpm.tcti, _intermediates(swtpm), workdir, weights, linked)


def test_a_chain_that_never_reaches_a_training_run_is_reported_and_can_be_refused(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = write_weights(tmp_path / "uploaded")
    # Evaluation-only over uploaded weights, then another evaluation linking that one.
    first = _second_boot(provisioned_swtpm, tmp_path / "first", weights, None)
    second = _second_boot(provisioned_swtpm, tmp_path / "second", weights, first.path)
    policy = _policy(provisioned_swtpm, second, linked_certificates=(first.path,))
    report = verify_certificate(second.certificate, policy)
    assert report.ok, report.error
    assert report.reaches_training is False
    assert [link.kind for link in report.lineage] == [
        "evaluation only",
        "evaluation only, of uploaded weights",
    ]
    evaluations = next(r for r in report.results if r.check == "evaluations")
    assert "which no training certificate links" in evaluations.detail

    strict = dataclasses.replace(policy, require_training=True)
    error = verify_certificate(second.certificate, strict).error
    assert isinstance(error, EvaluationError)
    assert "no training run certifies them" in error.message

    args = [
        str(second.path),
        "--trust-root",
        str(provisioned_swtpm.ca.root_path),
        "--any-image",
        "--linked-certificate",
        str(first.path),
    ]
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "reaches NO training run" in out
    with pytest.raises(SystemExit) as exit_info:
        verify_main([*args, "--require-training"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert err.count("\n") == 1
    assert "--require-training" in err


def test_a_chain_of_linked_certificates_is_followed_to_the_training_run(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    training = issue_certificate(
        provisioned_swtpm.tcti, _intermediates(provisioned_swtpm), tmp_path / "train"
    )
    middle = _second_boot(provisioned_swtpm, tmp_path / "middle", training.weights, training.path)
    last = _second_boot(provisioned_swtpm, tmp_path / "last", training.weights, middle.path)
    chain = (middle.path, training.path)
    policy = _policy(provisioned_swtpm, last, linked_certificates=chain, require_training=True)
    report = verify_certificate(last.certificate, policy)
    assert report.ok, report.error
    assert report.reaches_training is True
    assert [str(link) for link in report.lineage] == [
        "this certificate (evaluation only)",
        f"{middle.path} (evaluation only; local test platform, no hardware root of trust)",
        f"{training.path} (training run; local test platform, no hardware root of trust)",
    ]
    # One certificate short: the middle one's link cannot be checked.
    short = dataclasses.replace(policy, linked_certificates=(middle.path,))
    error = verify_certificate(last.certificate, short).error
    assert isinstance(error, EvaluationError)
    assert "--linked-certificate" in error.message
    # One too many: the training certificate links nothing.
    long = dataclasses.replace(policy, linked_certificates=(*chain, training.path))
    assert isinstance(verify_certificate(last.certificate, long).error, EvaluationError)


def test_linked_certificate_on_a_training_certificate_is_refused(
    provisioned_swtpm: ProvisionedSwtpm, evaluated: IssuedCertificate
) -> None:
    policy = _policy(provisioned_swtpm, evaluated, linked_certificates=(evaluated.path,))
    report = verify_certificate(evaluated.certificate, policy)
    assert isinstance(report.error, EvaluationError)
    assert "training certificate" in report.error.message
    assert _status(report, "evaluations") is Status.FAILED
