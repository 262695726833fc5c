"""``aicert-agent serve`` as a process: serves, attests, stops on SIGTERM, refuses a restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agent_harness import make_scratch
from aicert.builder.agent_client import AgentClient, AgentRequestError
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.qemu import free_port
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from tpm_replay import OVMF_LOG, replay_log_into_tpm

pytestmark = pytest.mark.swtpm


@contextmanager
def _serve(
    swtpm: ProvisionedSwtpm, scratch: Path, intermediates: Path
) -> Iterator[tuple[subprocess.Popen[bytes], AgentClient]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "aicert-agent"),
            "serve",
            f"--scratch={scratch}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--tcti={swtpm.tcti}",
            f"--event-log={OVMF_LOG}",
            f"--intermediates={intermediates}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = AgentClient(f"https://127.0.0.1:{port}", trust_roots=[swtpm.ca.root_certificate])
    try:
        try:
            client.wait_until_up(30, interval=0.1)
        except AgentRequestError as exc:
            if "refuses" not in exc.message:
                proc.kill()
                output = proc.communicate()[0].decode(errors="replace")
                pytest.fail(f"aicert-agent serve did not come up: {exc.message}\n{output}")
        yield proc, client
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_serve_attest_stop_and_refuse_restart(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    replay_log_into_tpm(provisioned_swtpm.tcti, OVMF_LOG.read_bytes())
    intermediates = tmp_path / "intermediates"
    intermediates.mkdir()
    (intermediates / "ca.pem").write_bytes(
        provisioned_swtpm.ca.intermediate_certificate.public_bytes(serialization.Encoding.PEM)
    )
    scratch = make_scratch()
    try:
        with _serve(provisioned_swtpm, scratch, intermediates) as (proc, client):
            assert client.status()["state"] == "ready"
            attested = client.attest()
            assert attested.agent_version
            assert (scratch / "inputs").is_dir()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        with _serve(provisioned_swtpm, scratch, intermediates) as (_proc, client):
            status = client.status()
            assert status["state"] == "refused"
            assert "PCR 15 is not zero" in status["message"]
            with pytest.raises(AgentRequestError, match="refuses a session"):
                client.wait_until_up(5)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_wait_until_up_gives_up(local_ca: LocalCa) -> None:
    client = AgentClient(
        f"https://127.0.0.1:{free_port()}", trust_roots=[local_ca.root_certificate]
    )
    start = time.monotonic()
    with pytest.raises(AgentRequestError, match="did not come up within"):
        client.wait_until_up(0.5, interval=0.1)
    assert time.monotonic() - start < 5


def test_wait_until_up_stops_at_an_agent_error_on_the_console(local_ca: LocalCa) -> None:
    client = AgentClient(
        f"https://127.0.0.1:{free_port()}", trust_roots=[local_ca.root_certificate]
    )
    reasons = iter([None, "aicert-agent: error: no blank disk for the scratch file system"])
    start = time.monotonic()
    with pytest.raises(AgentRequestError, match="did not start: aicert-agent: error: no blank"):
        client.wait_until_up(60, interval=0.1, agent_failed=lambda: next(reasons))
    assert time.monotonic() - start < 30
