"""Jobs that bring an environment: a real agent on swtpm runs them through the real crun.

The environment is a real OCI image (Debian's static busybox as its one layer), uploaded
as an image-layout archive through the builder's client; the certificate is checked by
the real verifier. These need root, crun and tini, as the agent has in the image.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import SYSTEM_PYTHON, RunningAgent, running_agent
from aicert.agent import container
from aicert.builder.agent_client import AgentClient, AgentRequestError, send_inputs
from aicert.builder.job_file import JobFile, load_job_file
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.logs.session_events import IMAGE_ROOT, CommandStarted, parse_event
from aicert.verifier.verify import Policy, verify_certificate
from conftest import ProvisionedSwtpm
from container_host import busybox_layer_entries, unified_cgroups
from oci_support import file, layer_tar, layout_archive, make_image

pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(os.geteuid() != 0, reason="crun needs root, as in the image"),
]

TRAIN = """\
set -e
out="$AICERT_OUTPUT"
cat /etc/marker > "$out/root.txt"
echo "${MARK:-no entrypoint}" > "$out/mark.txt"
id -u > "$out/uid.txt"
ls /sys/class/net > "$out/net.txt"
if echo tampered 2>/dev/null > "$AICERT_INPUTS/numbers"
then echo writable > "$out/inputs.txt"
else echo read-only > "$out/inputs.txt"
fi
sha256sum < "$AICERT_INPUTS/numbers" | cut -c1-64 > "$out/weights.bin"
sleep 3217 &
echo "trained in $(cat /etc/marker)"
"""

EVALUATE = """\
size=$(wc -c < "$AICERT_WEIGHTS/weights.bin")
if echo x 2>/dev/null >> "$AICERT_WEIGHTS/weights.bin"; then exit 3; fi
printf '{"size": %d, "root": %d}' "$size" "$(grep -c environment /etc/marker)" > "$AICERT_RESULTS"
"""


@pytest.fixture(scope="module", autouse=True)
def _cgroups() -> None:
    unified_cgroups()


@pytest.fixture
def live(provisioned_swtpm: ProvisionedSwtpm) -> Iterator[RunningAgent]:
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as running:
        yield running


def _environment(path: Path, *extra: bytes, entrypoint: list[str] | None = None) -> str:
    """A busybox image (plus ``extra`` layers) as an OCI archive at ``path``; its digest."""
    config = {"Env": ["PATH=/bin", "FROM_IMAGE=1"]}
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    image = make_image([layer_tar(busybox_layer_entries()), *extra], config=config)
    path.write_bytes(layout_archive(image))
    return image.digest


def _project(tmp_path: Path, *, use_entrypoint: bool = False, evaluate: bool = True) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.sh").write_text(TRAIN)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "evaluate.sh").write_text(EVALUATE)
    (tmp_path / "numbers.txt").write_text("1 2 3\n")
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            command = ["/bin/sh", "train.sh"]
            output = "model"
            [environment]
            path = "env.oci.tar"
            use_entrypoint = {str(use_entrypoint).lower()}
            [code]
            path = "code"
            [[data]]
            name = "numbers"
            path = "numbers.txt"
            """
        )
    )
    if evaluate:
        with job.open("a") as f:
            f.write(
                textwrap.dedent(
                    """
                    [[evaluation]]
                    name = "size"
                    command = ["sh", "evaluate.sh"]
                    results = "results.json"
                    environment = { path = "env.oci.tar" }
                    [evaluation.code]
                    path = "eval"
                    """
                )
            )
    return job


def _run(live: RunningAgent, job: JobFile) -> tuple[AgentClient, str]:
    client = live.client()
    client.attest()
    client.claim(job.nonce)
    send_inputs(client, job)
    client.start_job(
        job.command,
        job.output,
        job.config,
        evaluations=job.evaluations,
        use_entrypoint=job.use_entrypoint,
    )
    log = bytearray()
    client.wait(log.extend, poll_interval=0.1, timeout=120)
    return client, log.decode(errors="replace")


def _policy(live: RunningAgent, nonce: str, **extra: object) -> Policy:
    return Policy(
        trust_roots=(live.ca.root_certificate,),
        expected_nonce=nonce,
        accept_any_image=True,
        tree_digest=lambda p: hash_tree(p).digest,
        **extra,  # type: ignore[arg-type]
    )


def _background_sleeps() -> list[int]:
    """Processes running the training's background ``sleep 3217``."""
    return [
        int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x003217\x00"
    ]


def _cmdline(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_job_runs_in_its_environment_and_verifies(live: RunningAgent, tmp_path: Path) -> None:
    digest = _environment(tmp_path / "env.oci.tar", entrypoint=["env", "MARK=entrypoint ran"])
    job = load_job_file(_project(tmp_path, use_entrypoint=True))
    client, log = _run(live, job)
    result = client.job()
    assert result.succeeded, f"{result.message}\n{log}"
    assert "trained in the environment's root" in log
    assert f"in environment environment ({digest}) after its entrypoint env MARK=" in log
    out = tmp_path / "out"
    client.download_outputs(out / "model")
    client.download_results(out)
    model = out / "model"
    assert (model / "root.txt").read_text() == "the environment's root\n"
    assert (model / "mark.txt").read_text() == "entrypoint ran\n"
    assert (model / "uid.txt").read_text() == "65534\n"
    assert (model / "net.txt").read_text() == "lo\n"  # its own network namespace: loopback only
    assert (model / "inputs.txt").read_text() == "read-only\n"
    # The background sleep died with the container's PID namespace.
    assert _background_sleeps() == []
    results = json.loads((out / "evaluations" / "size" / "results.json").read_text())
    assert results == {"size": 65, "root": 1}

    certificate = client.certificate().certificate
    report = verify_certificate(
        certificate,
        _policy(
            live,
            job.nonce,
            weights_path=model,
            results_paths={"size": out / "evaluations" / "size" / "results.json"},
        ),
    )
    assert report.ok, report.error
    prov = report.provenance
    assert prov is not None
    assert (prov.root, prov.entrypoint) == ("environment", ("env", "MARK=entrypoint ran"))
    [environment] = [d for d in prov.dependencies if d.role == "environment"]
    assert environment.sha256 == digest.removeprefix("sha256:")
    [evaluation] = prov.evaluations
    assert (evaluation.root, evaluation.entrypoint) == ("size/environment", ())
    [started] = [
        e
        for e in (parse_event(r.content, "") for r in certificate.tpm.cel_log)
        if isinstance(e, CommandStarted)
    ]
    assert started.root == "environment"


def test_without_an_environment_the_certificate_names_the_image_root(
    live: RunningAgent, tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(
        "import os\nopen(os.environ['AICERT_OUTPUT'] + '/w.bin', 'wb').write(b'w')\n"
    )
    (tmp_path / "job.toml").write_text(
        f'command = ["{SYSTEM_PYTHON}", "train.py"]\noutput = "model"\n[code]\npath = "code"\n'
    )
    job = load_job_file(tmp_path / "job.toml")
    client, log = _run(live, job)
    assert client.job().succeeded
    assert "in the image's own root" in log
    statement = json.loads(client.certificate().certificate.envelope.payload)
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert (params["root"], params["entrypoint"]) == (IMAGE_ROOT, [])


def test_an_entrypoint_without_an_environment_is_refused(
    live: RunningAgent, tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.sh").write_text("true\n")
    client = live.client()
    client.attest()
    client.claim("00" * 16)
    client.upload_input("code", tmp_path / "code", "code")
    with pytest.raises(AgentRequestError, match="asks for an entrypoint but has no environment"):
        client.start_job(["sh", "train.sh"], "model", {}, use_entrypoint=True)
    # Refused before anything was measured: the job can still start without it.
    client.start_job(["true"], "model", {})


def test_a_container_crun_cannot_create_gives_no_certificate(
    live: RunningAgent, tmp_path: Path
) -> None:
    # /aicert, where the run's own mounts go, is a file in this image: crun must fail.
    _environment(tmp_path / "env.oci.tar", layer_tar([file("aicert", b"not a directory")]))
    job = load_job_file(_project(tmp_path, evaluate=False))
    client, log = _run(live, job)
    result = client.job()
    assert result.state == "failed"
    assert result.exit_status not in (None, 0)
    assert "mount `tmpfs` to `aicert`: Not a directory" in log  # crun's own reason
    with pytest.raises(AgentRequestError) as refused:
        client.certificate()
    assert refused.value.code == "job-failed"


def test_a_leftover_process_fails_the_job(
    live: RunningAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run itself is real; the scan is made to find one real process of the host, the
    race it exists for (a process that outlived the namespace's init) being unforceable."""
    _environment(tmp_path / "env.oci.tar")
    job = load_job_file(_project(tmp_path))
    straggler = subprocess.Popen(["sleep", "300"])
    scan = container.processes_in_namespace
    monkeypatch.setattr(container, "processes_in_namespace", lambda ns: [*scan(ns), straggler.pid])
    try:
        client, _ = _run(live, job)
        assert straggler.wait(timeout=10) == -9  # killed by the run's clean-up
    finally:
        straggler.kill()
        straggler.wait()
    result = client.job()
    assert result.state == "failed"
    assert "the run did not end cleanly" in result.message
    assert "outlived the run" in result.message
    with pytest.raises(AgentRequestError) as refused:
        client.certificate()
    assert refused.value.code == "job-failed"
    kinds = [e.kind for e in client.attest().events]
    assert kinds[-2:] == ["command", "lock"]


def test_a_missing_runtime_fails_the_start_and_gives_no_certificate(
    live: RunningAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(tmp_path / "env.oci.tar")
    job = load_job_file(_project(tmp_path, evaluate=False))
    client = live.client()
    client.attest()
    client.claim(job.nonce)
    send_inputs(client, job)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AgentRequestError, match="'crun' is not installed") as refused:
        client.start_job(job.command, job.output, job.config)
    assert refused.value.code == "start-failed"
    assert client.job().state == "failed"
