"""A real agent for tests: provisioned swtpm, replayed firmware log, HTTPS on 127.0.0.1.

The swtpm has no firmware, so its PCRs 0-7 would be zero and no firmware log could
replay to them; :func:`tpm_replay.replay_log_into_tpm` extends the events of a real OVMF
boot log into them first, and the agent serves that same log, so certificates pass the
verifier's firmware-log check honestly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aicert.agent.job import Agent
from aicert.agent.server import AgentServer, make_server
from aicert.agent.tls import server_context
from aicert.agent.tpm import AgentTpm
from aicert.builder.agent_client import AgentClient
from aicert.builder.platforms.local.ca import LocalCa
from aicert.verifier.gpu.record import GpuRecord
from certgen import KERNEL_CMDLINE
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm_replay import OVMF_LOG, replay_log_into_tpm

BOOT_ID = "5f0c1a6e-3d52-4b8e-9a0e-7f3c1d2e4b5a"
# The sandbox drops to an unprivileged user, who cannot run the test's own interpreter
# (it lives under /root); the system one is enough for the tiny training scripts.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class RunningAgent:
    url: str
    agent: Agent
    server: AgentServer
    ca: LocalCa
    scratch: Path

    def client(self) -> AgentClient:
        return AgentClient(self.url, trust_roots=[self.ca.root_certificate])


def make_scratch() -> Path:
    """A scratch directory the sandbox user can reach (pytest's tmp_path is private)."""
    scratch = Path(tempfile.mkdtemp(prefix="aicert-scratch-", dir="/tmp"))
    os.chmod(scratch, 0o755)  # noqa: S103 - the sandbox user must traverse it
    return scratch


@contextmanager
def running_agent(
    tcti: str,
    ca: LocalCa,
    *,
    scratch: Path | None = None,
    replay: bool = True,
    knows_intermediates: bool = True,
    plain_http_registries: frozenset[str] = frozenset(),
    gpus: Callable[[str, str], Sequence[GpuRecord]] | None = None,
) -> Iterator[RunningAgent]:
    if replay:
        replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    own_scratch = scratch is None
    scratch = make_scratch() if scratch is None else scratch
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
    tpm = AgentTpm(tcti, event_log_path=OVMF_LOG)
    server: AgentServer | None = None
    agent: Agent | None = None
    try:
        agent = Agent(
            tpm,
            scratch,
            key=key,
            agent_version="0.1.0-test",
            boot_id=BOOT_ID,
            intermediates=(intermediate,) if knows_intermediates else (),
            git_schemes=("https", "file"),
            kernel_cmdline=KERNEL_CMDLINE,
            plain_http_registries=plain_http_registries,
            **({"gpus": gpus} if gpus is not None else {}),
        )
        server = make_server(agent, server_context(key), "127.0.0.1", 0)
        server.serve_in_thread()
        yield RunningAgent(f"https://127.0.0.1:{server.port}", agent, server, ca, scratch)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if agent is not None:
            agent.shutdown()
        tpm.close()
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


EVALUATE = """
import json, os
size = os.path.getsize(os.path.join(os.environ["AICERT_WEIGHTS"], "weights.bin"))
json.dump({"size": size, "score": 0.5}, open(os.environ["AICERT_RESULTS"], "w"))
"""


def write_toy_job(tmp_path: Path, exit_status: int = 0, *, evaluate: bool = False) -> Path:
    """A job file in ``tmp_path``: a training writing 1000 bytes of weights and exiting
    with ``exit_status``, one data set, and with ``evaluate`` one evaluation."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        textwrap.dedent(
            f"""
            import os, sys
            out = os.environ["AICERT_OUTPUT"]
            open(os.path.join(out, "weights.bin"), "wb").write(b"w" * 1000)
            print("trained", flush=True)
            sys.exit({exit_status})
            """
        )
    )
    (tmp_path / "data.txt").write_text("1 2 3\n")
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            command = ["{SYSTEM_PYTHON}", "train.py"]
            output = "model"
            [code]
            path = "code"
            [[data]]
            name = "numbers"
            path = "data.txt"
            """
        )
    )
    if evaluate:
        (tmp_path / "eval").mkdir()
        (tmp_path / "eval" / "evaluate.py").write_text(EVALUATE)
        with job.open("a") as f:
            f.write(
                textwrap.dedent(
                    f"""
                    [[evaluation]]
                    name = "size"
                    command = ["{SYSTEM_PYTHON}", "evaluate.py"]
                    results = "results.json"
                    [evaluation.code]
                    path = "eval"
                    """
                )
            )
    return job
