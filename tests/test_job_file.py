"""The job file: full and minimal files parse; every mistake names the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aicert.builder.job_file import (
    AzurePlacement,
    GitSource,
    LocalSource,
    UrlSource,
    load_job_file,
)
from aicert.verifier.errors import FormatError, InputError

SHA = "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"

FULL = f"""
nonce = "{"11" * 16}"
command = ["python3", "train.py", "--epochs", "3"]
output = "model"

[code]
path = "train"
expected = "{SHA}"

[[data]]
name = "corpus"
url = "https://example.org/corpus.tar"
sha256 = "{SHA}"

[[data]]
name = "extra"
path = "/abs/extra.csv"

[base_model]
git = "https://example.org/base.git"
commit = "{COMMIT}"

[config]
epochs = 3
lr = 0.001
layers = [64, 32]
[config.optimizer]
name = "adam"

[azure]
vm_size = "Standard_NC4as_T4_v3"
scratch_gib = 256
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_full_job_file(tmp_path: Path) -> None:
    job = load_job_file(_write(tmp_path, FULL))
    assert job.nonce == "11" * 16
    assert not job.nonce_generated
    assert job.command == ("python3", "train.py", "--epochs", "3")
    assert job.output == "model"
    assert job.code.name == "code"
    assert job.code.role == "code"
    assert job.code.source == LocalSource(tmp_path / "train")
    assert job.code.expected_sha256 == SHA
    assert job.data[0].source == UrlSource("https://example.org/corpus.tar", SHA)
    assert job.data[1].source == LocalSource(Path("/abs/extra.csv"))
    assert job.base_model is not None
    assert job.base_model.role == "base-model"
    assert job.base_model.source == GitSource("https://example.org/base.git", COMMIT)
    assert job.config == {
        "epochs": 3,
        "lr": 0.001,
        "layers": [64, 32],
        "optimizer": {"name": "adam"},
    }
    assert [i.name for i in job.inputs] == ["code", "base-model", "corpus", "extra"]
    assert job.azure == AzurePlacement("Standard_NC4as_T4_v3", 256)


def test_minimal_job_file_gets_a_fresh_nonce(tmp_path: Path) -> None:
    text = 'command = ["./run"]\noutput = "out"\n[code]\npath = "."\n'
    first = load_job_file(_write(tmp_path, text))
    second = load_job_file(_write(tmp_path, text))
    assert first.nonce_generated
    assert len(first.nonce) == 64
    assert first.nonce != second.nonce
    assert first.data == ()
    assert first.base_model is None
    assert first.config == {}
    assert first.azure == AzurePlacement(None, None)


BASE = 'command = ["./run"]\noutput = "out"\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('command = ["x"]\noutput = "o"\n', "code"),
        (BASE + "[code]\n", "code"),
        (BASE + '[code]\npath = "a"\ngit = "https://x/r.git"\ncommit = "' + COMMIT + '"\n', "code"),
        (BASE + '[code]\ngit = "https://x/r.git"\n', "code.commit"),
        (BASE + '[code]\ngit = "https://x/r.git"\ncommit = "main"\n', "code.commit"),
        (BASE + '[code]\ngit = "http://x/r.git"\ncommit = "' + COMMIT + '"\n', "code.git"),
        (BASE + '[code]\nurl = "https://x/c.tar"\n', "code.sha256"),
        (BASE + '[code]\nurl = "ftp://x/c.tar"\nsha256 = "' + SHA + '"\n', "code.url"),
        (BASE + '[code]\npath = "a"\nsha256 = "' + SHA + '"\n', "code.sha256"),
        (BASE + '[code]\npath = "a"\nexpected = "xyz"\n', "code.expected"),
        (BASE + '[code]\npath = "a"\ncolour = "red"\n', "code.colour"),
        (BASE + "[code]\npath = 3\n", "code.path"),
        (BASE + '[code]\npath = "a"\n[[data]]\npath = "d"\n', "data[0].name"),
        (BASE + '[code]\npath = "a"\n[[data]]\nname = "../d"\npath = "d"\n', "data[0].name"),
        (BASE + '[code]\npath = "a"\n[[data]]\nname = "code"\npath = "d"\n', "data[0]"),
        (BASE + '[code]\npath = "a"\n[[data]]\nname = "job-config"\npath = "d"\n', "data[0].name"),
        (BASE + '[code]\npath = "a"\ndata = "d"\n', "code.data"),
        ('output = "o"\n[code]\npath = "a"\n', "command"),
        ('command = []\noutput = "o"\n[code]\npath = "a"\n', "command"),
        ('command = ["x"]\noutput = "a/b"\n[code]\npath = "a"\n', "output"),
        ('nonce = "xyz"\n' + BASE + '[code]\npath = "a"\n', "nonce"),
        ('nonce = "0102"\n' + BASE + '[code]\npath = "a"\n', "nonce"),
        ('colour = "red"\n' + BASE + '[code]\npath = "a"\n', "colour"),
        (BASE + '[code]\npath = "a"\n[config]\nwhen = 2024-01-01\n', "config.when"),
        (BASE + '[code]\npath = "a"\n[config]\nx = nan\n', "config.x"),
        (BASE + '[code]\npath = "a"\n[config]\nx = [1, inf]\n', "config.x[1]"),
        (BASE + '[code]\npath = "a"\n[config]\nx = 9007199254740993\n', "config.x"),
        ("azure = 3\n" + BASE + '[code]\npath = "a"\n', "azure"),
        (BASE + '[code]\npath = "a"\n[azure]\nregion = "x"\n', "azure.region"),
        (BASE + '[code]\npath = "a"\n[azure]\nvm_size = "NC4as"\n', "azure.vm_size"),
        (
            BASE + '[code]\npath = "a"\n[azure]\nvm_size = "Standard_NCC40ads_H100_v5"\n',
            "azure.vm_size",
        ),
        (BASE + '[code]\npath = "a"\n[azure]\nscratch_gib = 0\n', "azure.scratch_gib"),
        (BASE + '[code]\npath = "a"\n[azure]\nscratch_gib = true\n', "azure.scratch_gib"),
        (BASE + '[code]\npath = "a"\n[azure]\nscratch_gib = 1.5\n', "azure.scratch_gib"),
    ],
)
def test_mistakes_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(FormatError) as refused:
        load_job_file(path)
    assert refused.value.message.startswith(f"{path}: {key}: ")


def test_not_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "command = [\n")
    with pytest.raises(FormatError, match="not valid TOML"):
        load_job_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_job_file(tmp_path / "nope.toml")


TRAINED = BASE + '[code]\npath = "a"\n'
EVALUATION = (
    '[[evaluation]]\nname = "accuracy"\ncode = { path = "eval" }\n'
    'command = ["python3", "evaluate.py"]\nresults = "metrics/results.json"\n'
)
WEIGHTS = 'weights = { path = "model", sha256 = "' + SHA + '" }\n'


def test_evaluations_after_training(tmp_path: Path) -> None:
    text = (
        TRAINED
        + EVALUATION
        + '[[evaluation.data]]\nname = "test-set"\nurl = "https://x/t.csv"\nsha256 = "'
        + SHA
        + '"\n[[evaluation]]\nname = "speed"\ncode = { git = "https://x/e.git", commit = "'
        + COMMIT
        + '" }\ncommand = ["./bench"]\nresults = "r.json"\n'
    )
    job = load_job_file(_write(tmp_path, text))
    assert not job.evaluation_only
    accuracy, speed = job.evaluations
    assert accuracy.name == "accuracy"
    assert accuracy.command == ("python3", "evaluate.py")
    assert accuracy.results == "metrics/results.json"
    assert [(i.name, i.role) for i in accuracy.inputs] == [
        ("code", "eval-code"),
        ("test-set", "eval-data"),
    ]
    assert accuracy.code.source == LocalSource(tmp_path / "eval")
    assert accuracy.data[0].source == UrlSource("https://x/t.csv", SHA)
    assert speed.code.source == GitSource("https://x/e.git", COMMIT)
    assert [i.name for i in job.inputs] == ["code"]


def test_evaluation_only_job(tmp_path: Path) -> None:
    text = WEIGHTS + 'linked_certificate = "model.aicert.json"\n' + EVALUATION
    job = load_job_file(_write(tmp_path, text))
    assert job.evaluation_only
    assert job.code is None
    assert job.command == ()
    assert job.linked_certificate == tmp_path / "model.aicert.json"
    assert [(i.name, i.role, i.source, i.expected_sha256) for i in job.inputs] == [
        ("weights", "weights", LocalSource(tmp_path / "model"), SHA),
        ("training-certificate", "certificate", LocalSource(tmp_path / "model.aicert.json"), None),
    ]
    unlinked = load_job_file(_write(tmp_path, 'weights = { path = "/m" }\n' + EVALUATION))
    assert [i.name for i in unlinked.inputs] == ["weights"]
    assert unlinked.weights is not None
    assert unlinked.weights.expected_sha256 is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (TRAINED + EVALUATION.replace('name = "accuracy"', 'name = "a/b"'), "evaluation[0].name"),
        (TRAINED + EVALUATION + EVALUATION, "evaluation[1].name"),
        (TRAINED + EVALUATION.replace('code = { path = "eval" }\n', ""), "evaluation[0].code"),
        (
            TRAINED + EVALUATION.replace('"metrics/results.json"', '"../r.json"'),
            "evaluation[0].results",
        ),
        (
            TRAINED + EVALUATION.replace('"metrics/results.json"', '"/r.json"'),
            "evaluation[0].results",
        ),
        (TRAINED + EVALUATION.replace('["python3", "evaluate.py"]', "[]"), "evaluation[0].command"),
        (TRAINED + EVALUATION + 'colour = "red"\n', "evaluation[0].colour"),
        (TRAINED + EVALUATION + 'data = [{ path = "t.csv" }]\n', "evaluation[0].data[0].name"),
        (
            TRAINED + EVALUATION + 'data = [{ name = "code", path = "t" }]\n',
            "evaluation[0].data[0]",
        ),
        ('evaluation = "x"\n' + TRAINED, "evaluation"),
        (WEIGHTS + TRAINED + EVALUATION, "command"),
        (WEIGHTS, "evaluation"),
        ('weights = "model"\n' + EVALUATION, "weights"),
        ('weights = { path = "m", sha256 = "x" }\n' + EVALUATION, "weights.sha256"),
        ('weights = { path = "m", git = "https://x" }\n' + EVALUATION, "weights.git"),
        ('weights = { sha256 = "' + SHA + '" }\n' + EVALUATION, "weights.path"),
        ('linked_certificate = "c.json"\n' + TRAINED, "linked_certificate"),
        (WEIGHTS + "linked_certificate = 3\n" + EVALUATION, "linked_certificate"),
    ],
)
def test_evaluation_mistakes_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(FormatError) as refused:
        load_job_file(path)
    assert refused.value.message.startswith(f"{path}: {key}: ")


def test_a_nonce_from_the_command_line_replaces_the_files(tmp_path: Path) -> None:
    from aicert.builder.job_file import with_nonce

    (tmp_path / "code").mkdir()
    job_path = tmp_path / "job.toml"
    job_path.write_text('command = ["python3", "t.py"]\noutput = "m"\n[code]\npath = "code"\n')
    job = with_nonce(load_job_file(job_path), "ab" * 16)
    assert job.nonce == "ab" * 16
    assert not job.nonce_generated
    with pytest.raises(InputError, match="nonce"):
        with_nonce(job, "xyz")
