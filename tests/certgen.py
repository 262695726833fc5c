"""Certificates for tests without the image: a real swtpm, the agent's own session code.

The swtpm is provisioned like Azure's vTPM (conftest), a real OVMF boot log is
replayed into PCRs 0-7, and :class:`aicert.agent.session.MeasuredSession` -- the
code the agent runs -- measures a small job and assembles the certificate.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from aicert.agent.session import MeasuredSession
from aicert.agent.tpm import AgentTpm
from aicert.verifier.certificate import Certificate
from aicert.verifier.treehash import hash_tree
from cryptography.hazmat.primitives.asymmetric import ec
from tpm_replay import OVMF_LOG, replay_log_into_tpm


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: Certificate
    path: Path
    nonce: str
    weights: Path


def write_weights(directory: Path) -> Path:
    weights = directory / "weights"
    weights.mkdir(parents=True)
    (weights / "model.bin").write_bytes(bytes(range(256)) * 64)
    (weights / "config.json").write_text('{"layers": 2}\n')
    return weights


def issue_certificate(
    tcti: str, intermediates: tuple[bytes, ...], workdir: Path
) -> IssuedCertificate:
    """Run a measured session for a fake job on the swtpm at ``tcti``; save the certificate."""
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    code = workdir / "code"
    code.mkdir()
    (code / "train.py").write_text("print('training')\n")
    weights = write_weights(workdir)
    nonce = secrets.token_hex(16)
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        session = MeasuredSession(
            tpm,
            agent_version="0.1.0",
            boot_id=secrets.token_hex(16),
            key=ec.generate_private_key(ec.SECP256R1()),
            intermediates=intermediates,
        )
        session.claim(owner=secrets.token_hex(32), nonce=nonce)
        session.add_input("code", "code", hash_tree(code).digest, "upload")
        session.start_command(["python3", "train.py"], "weights")
        session.command_exited(0)
        session.add_output("weights", hash_tree(weights).digest)
        certificate = session.finish()
    path = workdir / "job.aicert.json"
    path.write_text(json.dumps(certificate.to_json(), indent=2))
    return IssuedCertificate(certificate, path, nonce, weights)
