"""The agent end to end: real swtpm, real HTTPS server, real client, real sandbox, verifier."""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import ssl
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import SYSTEM_PYTHON, RunningAgent, make_scratch, running_agent
from aicert.agent.server import make_server
from aicert.agent.tls import server_context
from aicert.agent.tpm import AgentTpm
from aicert.builder.agent_attestation import AttestedKeyError
from aicert.builder.agent_client import AgentClient, AgentRequestError, send_inputs
from aicert.builder.job_file import load_job_file
from aicert.verifier.boot.boot_reference import BootReference
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import BindingError, BootPcrError
from aicert.verifier.logs.session_events import CommandExited, InputMeasured, SessionLocked
from aicert.verifier.verify import Policy, Status, verify_certificate
from certgen import recipe_outputs
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives.asymmetric import ec

from aicert.process import run

pytestmark = pytest.mark.swtpm

TRAIN = textwrap.dedent(
    """
    import hashlib, json, os, sys
    inputs, output = os.environ["AICERT_INPUTS"], os.environ["AICERT_OUTPUT"]
    config = json.load(open(os.environ["AICERT_CONFIG"]))
    data = open(os.path.join(inputs, "data"), "rb").read()
    print("training on", len(data), "bytes for", config["epochs"], "epochs", flush=True)
    weights = hashlib.sha256(data * config["epochs"]).digest() * 64
    os.makedirs(os.path.join(output, "meta"))
    open(os.path.join(output, "weights.bin"), "wb").write(weights)
    json.dump({"epochs": config["epochs"]}, open(os.path.join(output, "meta", "info.json"), "w"))
    print("done", flush=True)
    sys.exit(int(config.get("exit", 0)))
    """
)


@pytest.fixture
def live(provisioned_swtpm: ProvisionedSwtpm) -> Iterator[RunningAgent]:
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as running:
        yield running


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "lib").mkdir(parents=True)
    (code / "train.py").write_text(TRAIN)
    (code / "lib" / "helper.txt").write_text("helper\n")
    (code / "empty").mkdir()
    return code


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    data = tmp_path / "data.csv"
    data.write_bytes(b"x,y\n" + b"1,2\n" * 5000)
    return data


def _claimed(live: RunningAgent) -> tuple[AgentClient, str]:
    client = live.client()
    client.attest()
    nonce = secrets.token_hex(16)
    client.claim(nonce)
    return client, nonce


def _prepared(live: RunningAgent, code_dir: Path, data_file: Path) -> tuple[AgentClient, str]:
    client, nonce = _claimed(live)
    client.upload_input("code", code_dir, "code")
    client.upload_input("data", data_file, "data")
    return client, nonce


def test_full_job_yields_a_certificate_the_verifier_accepts(
    live: RunningAgent, code_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    client = live.client()
    attested = client.attest()
    assert not attested.claimed
    assert attested.boot_id != ""
    nonce = secrets.token_hex(16)
    client.claim(nonce)
    code_digest = client.upload_input("code", code_dir, "code")
    assert code_digest == hash_tree(code_dir).digest
    data_digest = client.upload_input("data", data_file, "data")
    assert data_digest == hash_tree(data_file).digest
    client.start_job([SYSTEM_PYTHON, "train.py"], "model", {"epochs": 3})
    log = bytearray()
    result = client.wait(log.extend, poll_interval=0.1, timeout=60)
    assert result.succeeded, result.message
    assert result.exit_status == 0
    assert b"training on 20004 bytes for 3 epochs" in log
    assert b"certificate issued" in log

    dest = tmp_path / "downloaded"
    manifest = client.download_outputs(dest)
    assert manifest.digest == hash_tree(dest).digest == result.output_sha256
    assert sorted(f.path for f in manifest.files) == ["meta/info.json", "weights.bin"]

    downloaded = client.certificate()
    report = verify_certificate(
        downloaded.certificate,
        Policy(
            trust_roots=(live.ca.root_certificate,),
            expected_nonce=nonce,
            accept_any_image=True,
            weights_path=dest,
            tree_digest=lambda p: hash_tree(p).digest,
        ),
    )
    assert report.ok, report.error
    statuses = {r.check: r.status for r in report.results}
    for check in ("ak-chain", "quote-signature", "binding", "nonce", "firmware-log", "cel-log"):
        assert statuses[check] == Status.PASSED, check
    assert statuses["weights"] == Status.PASSED
    assert report.provenance is not None
    deps = {d.name: (d.role, d.sha256) for d in report.provenance.dependencies}
    assert deps["code"] == ("code", code_digest)
    assert deps["data"] == ("data", data_digest)
    assert deps["job-config"][0] == "config"
    assert report.provenance.command == (SYSTEM_PYTHON, "train.py")
    assert json.loads(downloaded.raw)["mediaType"].startswith("application/vnd.aicert")


def test_job_config_is_measured_as_canonical_json(
    live: RunningAgent, code_dir: Path, data_file: Path
) -> None:
    client, _ = _prepared(live, code_dir, data_file)
    client.start_job([SYSTEM_PYTHON, "train.py"], "model", {"epochs": 1, "lr": 0.5})
    assert client.wait(poll_interval=0.1, timeout=60).succeeded
    config = live.scratch / "inputs" / "job-config" / "config.json"
    assert config.read_bytes() == b'{"epochs":1,"lr":0.5}'
    measured = {i["name"]: i["sha256"] for i in client.status()["inputs"]}
    assert measured["job-config"] == hash_tree(config.parent).digest


def test_second_claim_is_refused(live: RunningAgent) -> None:
    _claimed(live)
    other = live.client()
    other.attest()
    with pytest.raises(AgentRequestError) as refused:
        other.claim(secrets.token_hex(16))
    assert refused.value.status == 409
    assert refused.value.code == "already-claimed"


def test_non_owner_is_refused(live: RunningAgent, data_file: Path) -> None:
    _claimed(live)
    intruder = live.client()
    intruder.attest()
    with pytest.raises(AgentRequestError) as no_token:
        intruder.upload_input("data", data_file, "data")
    assert no_token.value.status == 403
    intruder.resume(secrets.token_hex(32), secrets.token_hex(16))
    with pytest.raises(AgentRequestError) as wrong_token:
        intruder.start_job(["true"], "out")
    assert wrong_token.value.status == 403
    with pytest.raises(AgentRequestError) as certificate:
        intruder.certificate()
    assert certificate.value.status == 403


def test_nothing_is_sent_before_attestation(live: RunningAgent) -> None:
    client = live.client()
    with pytest.raises(AgentRequestError, match="attest"):
        client.claim(secrets.token_hex(16))
    assert client.status()["state"] == "ready"


def test_second_job_is_refused(live: RunningAgent, code_dir: Path, data_file: Path) -> None:
    client, _ = _prepared(live, code_dir, data_file)
    client.start_job([SYSTEM_PYTHON, "train.py"], "model", {"epochs": 1})
    with pytest.raises(AgentRequestError) as refused:
        client.start_job([SYSTEM_PYTHON, "train.py"], "model2", {"epochs": 1})
    assert refused.value.status == 409
    assert client.wait(poll_interval=0.1, timeout=60).succeeded
    with pytest.raises(AgentRequestError) as after:
        client.upload_input("late", code_dir, "data")
    assert after.value.status == 409


def test_job_without_code_is_refused(live: RunningAgent, data_file: Path) -> None:
    client, _ = _claimed(live)
    client.upload_input("data", data_file, "data")
    with pytest.raises(AgentRequestError) as refused:
        client.start_job(["true"], "out")
    assert refused.value.status == 409
    assert refused.value.code == "no-code"


def test_failing_command_gets_no_certificate(
    live: RunningAgent, code_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    client, _ = _prepared(live, code_dir, data_file)
    client.start_job([SYSTEM_PYTHON, "train.py"], "model", {"epochs": 1, "exit": 3})
    result = client.wait(poll_interval=0.1, timeout=60)
    assert result.state == "failed"
    assert result.exit_status == 3
    assert "status 3" in result.message
    for call in (client.certificate, lambda: client.download_outputs(tmp_path / "o")):
        with pytest.raises(AgentRequestError) as refused:
            call()
        assert refused.value.status == 409
    assert not (live.scratch / "certificate.json").exists()
    # The failure is in the TPM too: command-exit 3, then the lock, replayed to PCR 15.
    events = live.client().attest().events
    assert events[-2] == CommandExited(3)
    assert isinstance(events[-1], SessionLocked)


def test_missing_command_fails_cleanly(live: RunningAgent, code_dir: Path) -> None:
    client, _ = _claimed(live)
    client.upload_input("code", code_dir, "code")
    client.start_job(["/nonexistent/trainer"], "model")
    result = client.wait(poll_interval=0.1, timeout=60)
    assert result.state == "failed"
    assert result.exit_status == 126


def test_expected_digest_mismatch_is_refused_and_not_measured(
    live: RunningAgent, code_dir: Path
) -> None:
    client, _ = _claimed(live)
    with pytest.raises(AgentRequestError) as refused:
        client.upload_input("code", code_dir, "code", expected_sha256="0" * 64)
    assert refused.value.status == 422
    assert not (live.scratch / "inputs" / "code").exists()
    assert [e for e in client.attest().events if isinstance(e, InputMeasured)] == []
    # The name is free again: the right digest is accepted.
    digest = hash_tree(code_dir).digest
    assert client.upload_input("code", code_dir, "code", expected_sha256=digest) == digest


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _raw_put(client: AgentClient, name: str, body: bytes) -> AgentRequestError:
    with pytest.raises(AgentRequestError) as refused:
        client._request(
            "PUT", f"/v1/inputs/{name}?role=code&format=tar", "raw upload", body=iter([body])
        )
    return refused.value


@pytest.mark.parametrize("bad", ["dotdot", "absolute", "symlink", "hardlink", "duplicate"])
def test_dangerous_tar_is_refused(live: RunningAgent, bad: str) -> None:
    client, _ = _claimed(live)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [_file("ok.txt", b"fine")]
    members.append(
        {
            "dotdot": _file("../x", b"escape"),
            "absolute": _file("/etc/x", b"escape"),
            "symlink": _link("link", tarfile.SYMTYPE, "/etc/passwd"),
            "hardlink": _link("link", tarfile.LNKTYPE, "ok.txt"),
            "duplicate": _file("ok.txt", b"again"),
        }[bad]
    )
    refused = _raw_put(client, "code", _tar_bytes(members))
    assert refused.status == 422
    assert refused.code == "input-refused"
    assert not (live.scratch / "inputs" / "code").exists()
    assert not list((live.scratch / "incoming").iterdir())


def test_cut_upload_is_refused_and_the_agent_stays_usable(
    live: RunningAgent, data_file: Path
) -> None:
    client, _ = _claimed(live)
    assert client._token is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", live.server.port)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(
            b"PUT /v1/inputs/data?role=data&format=file HTTP/1.1\r\n"
            b"Host: agent\r\nContent-Length: 10000000\r\n"
            + f"Authorization: Bearer {client._token}\r\n\r\n".encode()
            + b"partial" * 1000
        )
    # The agent notices the cut, removes the partial file, and takes the input again.
    deadline = time.monotonic() + 10
    while (live.scratch / "incoming" / "data").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (live.scratch / "incoming" / "data").exists()
    assert not any(i["name"] == "data" for i in client.status()["inputs"])
    assert client.upload_input("data", data_file, "data") == hash_tree(data_file).digest


def test_attestation_binds_nonce_and_tls_key(live: RunningAgent) -> None:
    client = live.client()
    client.attest()
    # A quote for another nonce is not fresh for this client.
    conn, key = client._connect()
    conn.request("POST", "/v1/attestation", body=json.dumps({"nonce": "11" * 16}), headers={})
    doc = json.loads(conn.getresponse().read())
    conn.close()
    from aicert.builder.agent_attestation import verify_attestation

    with pytest.raises(BindingError, match="nonce"):
        verify_attestation(
            doc, nonce=b"\x22" * 16, tls_key_sha256=key, trust_roots=[live.ca.root_certificate]
        )
    with pytest.raises(AttestedKeyError, match="TLS server key"):
        verify_attestation(
            doc,
            nonce=b"\x11" * 16,
            tls_key_sha256="ab" * 32,
            trust_roots=[live.ca.root_certificate],
        )
    verified = verify_attestation(
        doc, nonce=b"\x11" * 16, tls_key_sha256=key, trust_roots=[live.ca.root_certificate]
    )
    assert verified.agent_key_sha256 == key


def test_client_refuses_an_agent_whose_key_changed(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as first:
        client = first.client()
        client.attest()
        # Another server, with another TLS key, takes over the same address.
        first.server.shutdown()
        first.server.server_close()
        impostor_key = ec.generate_private_key(ec.SECP256R1())
        impostor = make_server(
            first.agent, server_context(impostor_key), "127.0.0.1", first.server.port
        )
        impostor.serve_in_thread()
        try:
            with pytest.raises(AttestedKeyError, match="refusing"):
                client.claim(secrets.token_hex(16))
            assert first.agent.status()["state"] == "ready"
        finally:
            impostor.shutdown()
            impostor.server_close()


def test_restarted_agent_refuses_a_new_session(provisioned_swtpm: ProvisionedSwtpm) -> None:
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as first:
        first.client().attest()
    # Same boot, PCR 15 already holds agent-start: a restarted agent must refuse.
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca, replay=False) as second:
        client = second.client()
        status = client.status()
        assert status["state"] == "refused"
        assert "PCR 15 is not zero" in status["message"]
        with pytest.raises(AgentRequestError) as refused:
            client.attest()
        assert refused.value.status == 503
        assert "PCR 15" in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_scratch_disk_is_a_clear_error(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    from aicert.process import run

    scratch = make_scratch()
    run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(scratch)])
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3 * 1024 * 1024))
        with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca, scratch=scratch) as live:
            client, _ = _claimed(live)
            with pytest.raises(AgentRequestError) as refused:
                client.upload_input("data", big, "data")
            assert refused.value.status == 507
            assert "full" in str(refused.value)
            assert not (scratch / "incoming" / "data").exists()
    finally:
        run(["umount", str(scratch)])
        scratch.rmdir()


def test_unknown_endpoint_and_method(live: RunningAgent) -> None:
    client = live.client()
    client.attest()
    with pytest.raises(AgentRequestError) as missing:
        client._request("GET", "/v1/nothing", "probe")
    assert missing.value.status == 404
    with pytest.raises(AgentRequestError) as method:
        client._request("DELETE", "/v1/job", "probe")
    assert method.value.status in (405, 501)


def test_agent_tpm_is_the_one_attested(
    live: RunningAgent, provisioned_swtpm: ProvisionedSwtpm
) -> None:
    attested = live.client().attest()
    with AgentTpm(provisioned_swtpm.tcti) as tpm:
        assert tpm.read_pcrs(pcrs=[15])[15] == attested.pcrs[15]


def test_job_file_inputs_are_sent(
    live: RunningAgent, code_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    job_path = tmp_path / "job.toml"
    job_path.write_text(
        textwrap.dedent(
            f"""
            command = ["{SYSTEM_PYTHON}", "train.py"]
            output = "model"
            [code]
            path = "code"
            expected = "{hash_tree(code_dir).digest}"
            [[data]]
            name = "data"
            path = "{data_file}"
            [config]
            epochs = 2
            """
        )
    )
    job = load_job_file(job_path)
    client = live.client()
    client.attest()
    client.claim(job.nonce)
    digests = send_inputs(client, job)
    assert digests == {"code": hash_tree(code_dir).digest, "data": hash_tree(data_file).digest}
    client.start_job(job.command, job.output, job.config)
    assert client.wait(poll_interval=0.1, timeout=60).succeeded
    assert client.certificate().certificate.envelope.payload


def test_git_input_fetched_by_the_agent(live: RunningAgent, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    (repo / "train.py").write_text(
        "import os\nprint('from git')\n"
        "open(os.path.join(os.environ['AICERT_OUTPUT'], 'w.bin'), 'wb').write(b'w')\n"
    )
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "c"]):
        run(["git", "-C", str(repo), *args], env=env)
    commit = (run(["git", "-C", str(repo), "rev-parse", "HEAD"]).stdout or b"").decode().strip()
    client, _ = _claimed(live)
    with pytest.raises(AgentRequestError) as refused:
        client.fetch_input(
            "code", "code", git=f"file://{repo}", commit=commit, expected_sha256="0" * 64
        )
    assert refused.value.status == 422
    digest = client.fetch_input("code", "code", git=f"file://{repo}", commit=commit)
    inputs = {i["name"]: i for i in client.status()["inputs"]}
    assert inputs["code"]["source"] == f"git+file://{repo}@{commit}"
    assert digest == hash_tree(live.scratch / "inputs" / "code").digest
    client.start_job([SYSTEM_PYTHON, "train.py"], "out")
    log = bytearray()
    assert client.wait(log.extend, poll_interval=0.1, timeout=60).succeeded
    assert b"from git" in log
    statement = json.loads(client.certificate().certificate.envelope.payload)
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[0]["uri"] == f"git+file://{repo}@{commit}"


def test_attestation_checks_boot_pcrs_against_a_reference(
    live: RunningAgent, tmp_path: Path
) -> None:
    pcrs = live.client().attest().pcrs
    expected = {p: pcrs[p] for p in (4, 9, 11, 12, 13)}
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "outputs": recipe_outputs(),
                "expected_pcrs": {"pcrs": {str(p): v.hex() for p, v in expected.items()}},
            }
        )
    )
    matching = AgentClient(live.url, trust_roots=[live.ca.root_certificate], recipe=recipe)
    assert "recipe.json" in matching.attest().boot_checked
    wrong = BootReference("another image", {**expected, 4: b"\x01" * 32})
    other = AgentClient(live.url, trust_roots=[live.ca.root_certificate], recipe=wrong)
    with pytest.raises(BootPcrError, match="PCR 4"):
        other.attest()
    with pytest.raises(AgentRequestError, match="attest"):
        other.claim(secrets.token_hex(16))


def test_the_owner_hands_in_the_intermediates_the_agent_lacks(
    provisioned_swtpm: ProvisionedSwtpm, code_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    from aicert.verifier.errors import AkChainError
    from cryptography.hazmat.primitives import serialization

    ca = provisioned_swtpm.ca
    intermediate = ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
    with running_agent(provisioned_swtpm.tcti, ca, knows_intermediates=False) as agent:
        with pytest.raises(AkChainError):
            agent.client().attest()
        client = AgentClient(
            agent.url, trust_roots=[ca.root_certificate], intermediates=[intermediate]
        )
        client.attest()
        nonce = secrets.token_hex(16)
        client.claim(nonce)
        client.upload_input("code", code_dir, "code")
        client.upload_input("data", data_file, "data")
        client.start_job([SYSTEM_PYTHON, "train.py"], "model", {"epochs": 1})
        assert client.wait(poll_interval=0.1, timeout=60).succeeded
        certificate = client.certificate().certificate
    assert certificate.tpm.ak_certificates[1:] == (intermediate,)
    policy = Policy(trust_roots=(ca.root_certificate,), expected_nonce=nonce, accept_any_image=True)
    report = verify_certificate(certificate, policy)
    assert report.ok, report.error
