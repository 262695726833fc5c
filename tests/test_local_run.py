"""The local platform end to end: build, boot in QEMU, run the demo job, verify (system test)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aicert.builder.job_file import load_job_file
from aicert.builder.local_run import LocalRun, run_local
from aicert.verifier.cli import main as verify_main

DEMO_JOB = Path(__file__).resolve().parents[1] / "examples" / "demo" / "job.toml"


@pytest.mark.system
def test_demo_job_runs_in_the_measured_image_and_verifies(
    built_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = load_job_file(DEMO_JOB)
    said: list[str] = []
    outcome = run_local(
        LocalRun(image=built_image, output=tmp_path / "out", ca_dir=tmp_path / "ca"),
        job,
        say=said.append,
        log_sink=lambda _chunk: None,
    )
    assert outcome.report.ok
    checks = {r.check: r.status.value for r in outcome.report.results}
    for check in ("boot-pcrs", "platform-profile", "firmware-log", "cel-log", "weights"):
        assert checks[check] == "passed", (check, checks)
    assert checks["evaluations"] == "passed"
    results = outcome.output_dir / "evaluations" / "accuracy" / "results.json"
    assert json.loads(results.read_text())["accuracy"] > 0.8

    args = [
        str(outcome.certificate),
        "--recipe",
        str(built_image / "recipe.json"),
        "--platform-profile",
        "qemu",
        "--trust-root",
        str(outcome.output_dir / "local-ca-root.pem"),
        "--nonce",
        job.nonce,
        "--weights",
        str(outcome.weights),
        "--results",
        f"accuracy={results}",
    ]
    with pytest.raises(SystemExit) as verified:
        verify_main(args)
    assert verified.value.code == 0, capsys.readouterr().out

    # Benchmark linking: altered results or evaluation data are refused as well.
    forged = tmp_path / "results.json"
    forged.write_text(results.read_text().replace('"accuracy": 0.', '"accuracy": 1.'))
    out = _refused([*args[:-1], f"accuracy={forged}"], capsys)
    assert "NOT VERIFIED: files: " in out
    assert "results file of evaluation 'accuracy'" in out
    test_set = tmp_path / "digits-test.csv"
    data = (DEMO_JOB.parent / "data" / "digits-test.csv").read_text()
    test_set.write_text(data.replace("\n0,", "\n1,", 1))
    out = _refused([*args, "--input", f"accuracy/digits-test={test_set}"], capsys)
    assert "is not the input 'accuracy/digits-test'" in out

    tampered = tmp_path / "tampered"
    shutil.copytree(outcome.weights, tampered)
    weights = tampered / "weights.json"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    args[args.index(str(outcome.weights))] = str(tampered)
    with pytest.raises(SystemExit) as refused:
        verify_main(args)
    assert refused.value.code == 1
    assert "NOT VERIFIED: weights:" in capsys.readouterr().out


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as refused:
        verify_main(args)
    assert refused.value.code == 1
    return capsys.readouterr().out
