"""The environment's ``use_entrypoint`` key in job files."""

from __future__ import annotations

from pathlib import Path

import pytest
from aicert.builder.job_file import load_job_file
from aicert.verifier.errors import InputError

IMAGE = "registry.example/team/trainer@sha256:" + "ab" * 32


def _job(tmp_path: Path, environment: str, evaluation_environment: str = "") -> Path:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "train.py").write_text("print('hi')\n")
    job = tmp_path / "job.toml"
    job.write_text(
        'command = ["python3", "train.py"]\noutput = "model"\n'
        f'code = {{ path = "code" }}\nenvironment = {environment}\n'
        + (
            "[[evaluation]]\n"
            'name = "accuracy"\ncode = { path = "code" }\ncommand = ["python3", "e.py"]\n'
            f'results = "r.json"\nenvironment = {evaluation_environment}\n'
            if evaluation_environment
            else ""
        )
    )
    return job


def test_default_is_the_command_alone(tmp_path: Path) -> None:
    job = load_job_file(_job(tmp_path, f'{{ image = "{IMAGE}" }}'))
    assert job.use_entrypoint is False
    assert job.environment is not None


def test_use_entrypoint_for_training_and_evaluation(tmp_path: Path) -> None:
    job = load_job_file(
        _job(
            tmp_path,
            f'{{ image = "{IMAGE}", use_entrypoint = true }}',
            '{ path = "code/train.py", use_entrypoint = true }',
        )
    )
    assert job.use_entrypoint is True
    assert job.evaluations[0].use_entrypoint is True
    assert job.evaluations[0].environment is not None


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            '{ image = "' + IMAGE + '", use_entrypoint = "yes" }',
            "use_entrypoint: must be true or false",
        ),
        ("{ use_entrypoint = true }", "give exactly one of image"),
        ('{ image = "' + IMAGE + '", entrypoint = true }', "environment.entrypoint: unknown key"),
    ],
)
def test_refused(tmp_path: Path, environment: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_job_file(_job(tmp_path, environment))
