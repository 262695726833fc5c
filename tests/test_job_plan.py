"""``aicert-build run --check``: the job and its local inputs, checked before any boot."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.job_file import load_job_file
from aicert.builder.job_plan import plan_job
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import EvaluationError, InputError
from certgen import issue_certificate
from click.testing import CliRunner
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"
# The demo without an environment (job.toml's needs a built archive to plan).
STDLIB_JOB = "job-stdlib.toml"


def test_the_demo_plan_lists_every_input_in_sending_order(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_main,
        ["run", "--check", "--json", str(DEMO / STDLIB_JOB), "--image", str(tmp_path / "none")],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["command"] == ["python3", "train.py"]
    assert plan["nonce_generated"] is True
    inputs = {item["name"]: item for item in plan["inputs"]}
    assert list(inputs) == ["code", "digits", "accuracy/code", "accuracy/digits-test"]
    train = DEMO / "data" / "digits-train.csv"
    assert inputs["digits"] == {
        "name": "digits",
        "role": "data",
        "how": "upload",
        "source": str(train),
        "kind": "file",
        "files": 1,
        "size_bytes": train.stat().st_size,
        "expected_sha256": None,
    }
    assert inputs["code"]["kind"] == "directory"
    assert inputs["accuracy/code"]["role"] == "eval-code"
    assert plan["evaluations"] == [
        {"name": "accuracy", "command": ["python3", "evaluate.py"], "results": "results.json"}
    ]
    assert not (tmp_path / "none").exists()


def _demo_copy(root: Path) -> Path:
    for name in ("code", "data", "eval"):
        shutil.copytree(DEMO / name, root / name)
    shutil.copy(DEMO / STDLIB_JOB, root / "job.toml")
    return root / "job.toml"


def test_the_text_plan_is_a_table(tmp_path: Path) -> None:
    job = _demo_copy(tmp_path)
    result = CliRunner().invoke(build_main, ["run", "--check", str(job), "--nonce", "AB" * 16])
    assert result.exit_code == 0, result.output
    assert "nothing was booted or sent" in result.stdout
    assert f"nonce     {'ab' * 16}\n" in result.stdout
    assert "eval-data  accuracy/digits-test  upload file" in result.stdout


def _rename_code(d: Path) -> None:
    (d / "code").rename(d / "kode")


def _link_inside(d: Path) -> None:
    (d / "code" / "link").symlink_to("/etc/hostname")


def _fifo_inside(d: Path) -> None:
    os.mkfifo(d / "eval" / "pipe")


def _linked_directory(d: Path) -> None:
    shutil.rmtree(d / "code")
    (d / "code").symlink_to(d / "eval", target_is_directory=True)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_rename_code, "input code: {d}/code does not exist"),
        (_link_inside, "input code: {d}/code/link: is a symbolic link"),
        (_fifo_inside, "input accuracy/code: {d}/eval/pipe: is a FIFO"),
        (_linked_directory, "input code: {d}/code is a symbolic link to a directory"),
    ],
    ids=["missing", "link-inside", "fifo-inside", "linked-directory"],
)
def test_a_bad_local_input_is_refused_before_boot(
    tmp_path: Path, setup: Callable[[Path], None], message: str
) -> None:
    job = _demo_copy(tmp_path)
    setup(tmp_path)
    with pytest.raises(InputError) as info:
        plan_job(load_job_file(job))
    assert message.format(d=tmp_path) in info.value.message


def test_an_expected_digest_is_part_of_the_plan(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print(1)\n")
    digest = hash_tree(code).digest
    (tmp_path / "job.toml").write_text(
        'command = ["python3", "train.py"]\noutput = "model"\n'
        f'[code]\npath = "code"\nexpected = "{digest}"\n'
    )
    (only,) = plan_job(load_job_file(tmp_path / "job.toml")).inputs
    assert (only.expected_sha256, only.files, only.size_bytes) == (digest, 1, 9)


@pytest.mark.swtpm
def test_a_linked_certificate_of_other_weights_is_refused_before_boot(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path / "trained")
    shutil.copytree(DEMO / "eval", tmp_path / "eval")
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"not the certified weights")
    job = tmp_path / "evaluate.toml"
    for weights, ok in ((issued.weights, True), (other, False)):
        job.write_text(
            f'weights = {{ path = "{weights}" }}\nlinked_certificate = "{issued.path}"\n'
            '[[evaluation]]\nname = "accuracy"\ncode = { path = "eval" }\n'
            'command = ["python3", "evaluate.py"]\nresults = "results.json"\n'
        )
        if ok:
            names = [item.name for item in plan_job(load_job_file(job)).inputs]
            assert names == ["weights", "training-certificate", "accuracy/code"]
        else:
            with pytest.raises(EvaluationError, match=f"not {other}"):
                plan_job(load_job_file(job))
