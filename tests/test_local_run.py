"""The README's main command end to end, as a newcomer runs it (system test).

``make demo OUT=...`` into a folder whose parent does not exist yet: it builds the image,
boots it in QEMU, runs the demo job, verifies the certificate and refuses tampered
weights. The test then checks the verified output further as an auditor would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aicert.verifier.cli import main as verify_main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
NONCE = "5eed" * 8


@pytest.mark.system
def test_make_demo_from_scratch_verifies_and_refuses_tampering(
    built_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "not" / "yet" / "there"
    env = {**os.environ, "AICERT_DEMO_NONCE": NONCE, "NO_COLOR": "1"}
    demo = subprocess.run(
        ["make", "-C", str(REPO), "demo", f"OUT={out}"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    said = demo.stdout + demo.stderr
    assert demo.returncode == 0, said[-4000:]
    assert "VERIFIED on a local test platform, no hardware root of trust" in demo.stdout
    assert "demo: the tampered weights were refused, as they must be." in demo.stdout
    assert "\033[" not in said, "NO_COLOR is honoured"

    # The training ran in the numpy + scikit-learn environment, the evaluation in the
    # image's own root, and the report says so.
    assert "runs in      environment environment\n" in demo.stdout
    assert "runs in    the image's own root file system (no environment)" in demo.stdout
    image, result = out / "image", out / "demo"
    results = result / "evaluations" / "accuracy" / "results.json"
    assert json.loads(results.read_text())["accuracy"] > 0.85
    training = json.loads((result / "model" / "training.json").read_text())
    assert training["framework"].startswith("scikit-learn ")
    assert len(training["epochs"]) == 8
    args = [
        str(result / "certificate.aicert.json"),
        *("--recipe", str(image / "recipe.json"), "--platform-profile", "qemu"),
        *("--trust-root", str(result / "local-ca-root.pem"), "--nonce", NONCE),
        *("--json", "--weights", str(result / "model")),
        *("--results", f"accuracy={results}"),
    ]
    report = _verify(args, capsys, expect=0)
    assert report["verified"] is True
    assert report["root_of_trust"]["hardware"] is False, "the local CA is no hardware root"
    checks = {r["check"]: r["status"] for r in report["checks"]}
    for check in ("boot-pcrs", "platform-profile", "firmware-log", "cel-log", "weights"):
        assert checks[check] == "passed", (check, checks)
    assert checks["evaluations"] == "passed"

    # Benchmark linking: altered results or evaluation data are refused as well.
    forged = tmp_path / "results.json"
    forged.write_text(results.read_text().replace('"accuracy": 0.', '"accuracy": 1.'))
    text = json.dumps(_verify([*args[:-1], f"accuracy={forged}"], capsys, expect=1))
    assert "results file of evaluation 'accuracy'" in text
    test_set = tmp_path / "digits-test.csv"
    data = (DEMO / "data" / "digits-test.csv").read_text()
    test_set.write_text(data.replace("\n0,", "\n1,", 1))
    text = json.dumps(
        _verify([*args, "--input", f"accuracy/digits-test={test_set}"], capsys, expect=1)
    )
    assert "is not the input 'accuracy/digits-test'" in text

    # A weights file added next to the verified ones is refused too.
    extra = tmp_path / "extra"
    shutil.copytree(result / "model", extra)
    (extra / "README").write_text("not trained\n")
    args[args.index(str(result / "model"))] = str(extra)
    text = json.dumps(_verify(args, capsys, expect=1))
    assert '"weights"' in text


def _verify(args: list[str], capsys: pytest.CaptureFixture[str], expect: int) -> dict[str, Any]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        verify_main(args)
    out = capsys.readouterr().out
    assert exited.value.code == expect, out
    report: dict[str, Any] = json.loads(out)
    return report
