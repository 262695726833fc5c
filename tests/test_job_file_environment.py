"""The job file's ``environment``: an OCI image by digest or an image-layout archive, for
the training and for each evaluation; each mistake is one line naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aicert.builder.job_file import ArchiveSource, ImageSource, load_job_file
from aicert.builder.job_plan import plan_job, render_plan
from aicert.verifier.errors import FormatError, InputError

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example/team/trainer@{DIGEST}"
TRAINING = """
command = ["python3", "train.py"]
output = "model"
[code]
path = "train"
"""
EVALUATION = """
[[evaluation]]
name = "accuracy"
code = { path = "eval" }
command = ["python3", "eval.py"]
results = "results.json"
"""


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "job.toml"
    path.write_text(textwrap.dedent(text))
    return load_job_file(path)


def test_training_and_evaluation_environments(tmp_path: Path) -> None:
    job = _load(
        tmp_path,
        TRAINING
        + f'[environment]\nimage = "{IMAGE}"\n'
        + EVALUATION
        + 'environment = { path = "eval-env.oci.tar" }\n',
    )
    assert job.environment is not None
    assert (job.environment.name, job.environment.role) == ("environment", "environment")
    assert job.environment.source == ImageSource(IMAGE)
    assert [i.name for i in job.inputs] == ["environment", "code"]
    evaluation = job.evaluations[0]
    assert evaluation.environment is not None
    assert evaluation.environment.role == "eval-environment"
    assert evaluation.environment.source == ArchiveSource(tmp_path / "eval-env.oci.tar")
    assert [i.name for i in evaluation.inputs] == ["environment", "code"]


@pytest.mark.parametrize(
    "registry", ["127.0.0.1:5000", "10.0.2.101:5000", "169.254.1.1", "192.168.1.2", "[::1]:80"]
)
def test_plain_http_to_a_local_address(tmp_path: Path, registry: str) -> None:
    job = _load(
        tmp_path, TRAINING + f'[environment]\nimage = "{registry}/t@{DIGEST}"\nplain_http = true\n'
    )
    assert job.environment is not None
    assert job.environment.source == ImageSource(f"{registry}/t@{DIGEST}", plain_http=True)


def test_absent_environment(tmp_path: Path) -> None:
    job = _load(tmp_path, TRAINING + EVALUATION)
    assert job.environment is None
    assert job.evaluations[0].environment is None
    assert [i.name for i in job.inputs] == ["code"]


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            '[environment]\nimage = "registry.example/team/trainer:latest"\n',
            "environment.image",
            "no digest: pulls are by digest only",
        ),
        (
            '[environment]\nimage = "registry.example/t@sha256:abc"\n',
            "environment.image",
            "64 lowercase hex",
        ),
        (
            f'[environment]\nimage = "trainer@{DIGEST}"\n',
            "environment.image",
            "does not name its registry",
        ),
        (
            f'[environment]\nimage = "{IMAGE}"\npath = "env.tar"\n',
            "environment",
            "exactly one of image",
        ),
        ("[environment]\n", "environment", "exactly one of image"),
        (
            f'[environment]\nimage = "{IMAGE}"\nplain_http = true\n',
            "environment.plain_http",
            "plain HTTP is allowed only for a loopback, link-local or private IP address",
        ),
        (
            f'[environment]\nimage = "10.0.2.101:5000/t@{DIGEST}"\nplain_http = "yes"\n',
            "environment.plain_http",
            "true or false",
        ),
        (
            '[environment]\npath = "e.tar"\nplain_http = true\n',
            "environment.plain_http",
            "only an image pulled from a registry",
        ),
        ('[environment]\nurl = "https://x"\n', "environment.url", "unknown key"),
        ('[environment]\npath = ""\n', "environment.path", "non-empty string"),
        (
            '[[data]]\nname = "environment"\npath = "d"\n[environment]\npath = "e.tar"\n',
            "data[0]",
            "also used by environment",
        ),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    with pytest.raises(FormatError) as info:
        _load(tmp_path, TRAINING + text)
    assert info.value.message.startswith(f"{tmp_path / 'job.toml'}: {key}: ")
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_environment_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"job\.toml: environment: must be a table"):
        _load(tmp_path, "environment = 3\n" + TRAINING)


def test_evaluation_environment_mistake(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"evaluation\[0\]\.environment\.image: .*no digest"):
        _load(tmp_path, TRAINING + EVALUATION + 'environment = { image = "r.example/x:1" }\n')


def test_evaluation_only_job_has_no_training_environment(tmp_path: Path) -> None:
    text = f'weights = {{ path = "w" }}\n[environment]\nimage = "{IMAGE}"\n' + EVALUATION
    with pytest.raises(FormatError, match="environment: an evaluation-only job"):
        _load(tmp_path, text)
    job = _load(
        tmp_path,
        'weights = { path = "w" }\n' + EVALUATION + f'environment = {{ image = "{IMAGE}" }}\n',
    )
    assert job.evaluations[0].environment is not None


def test_the_plan_checks_environments_before_boot(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.py").write_text("print(1)\n")
    (tmp_path / "env.oci.tar").write_bytes(b"x" * 1000)
    job = _load(
        tmp_path,
        TRAINING
        + '[environment]\npath = "env.oci.tar"\n'
        + EVALUATION
        + f'environment = {{ image = "{IMAGE}" }}\n',
    )
    (tmp_path / "eval").mkdir()
    plan = plan_job(job)
    planned = {item.name: item for item in plan.inputs}
    assert list(planned) == ["environment", "code", "accuracy/environment", "accuracy/code"]
    archive = planned["environment"]
    assert (archive.role, archive.how, archive.kind, archive.size_bytes) == (
        "environment",
        "upload",
        "oci-archive",
        1000,
    )
    image = planned["accuracy/environment"]
    assert (image.role, image.how, image.source) == ("eval-environment", "image", IMAGE)
    assert "eval-environment  accuracy/environment  image (agent)" in render_plan(plan)
    (tmp_path / "env.oci.tar").unlink()
    with pytest.raises(InputError, match=r"input environment: .*env\.oci\.tar does not exist"):
        plan_job(job)
    (tmp_path / "env.oci.tar").mkdir()
    with pytest.raises(InputError, match="is a directory, not an OCI image-layout archive"):
        plan_job(job)
