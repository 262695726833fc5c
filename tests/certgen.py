"""Certificates for tests without the image: a real swtpm, the agent's own session code.

The swtpm is provisioned like Azure's vTPM (conftest), a real OVMF boot log is
replayed into PCRs 0-7, and :class:`aicert.agent.session.MeasuredSession` -- the
code the agent runs -- measures a small job and assembles the certificate.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aicert.agent.session import MeasuredSession
from aicert.agent.tpm import AgentTpm
from aicert.verifier.boot.image_identity import uki_authenticode_from_log
from aicert.verifier.digest.file_subjects import plain_sha256s
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.statement.certificate import Certificate, agent_key_id
from aicert.verifier.statement.uris import upload_uri
from cryptography.hazmat.primitives.asymmetric import ec
from tpm_replay import OVMF_LOG, replay_log_into_tpm

# The image root hash the test agents find on their "kernel command line".
ROOTHASH = "5a" * 32
KERNEL_CMDLINE = f"console=ttyS0 roothash={ROOTHASH} ro"


def recipe_outputs() -> dict[str, object]:
    """recipe.json ``outputs`` naming the test agents' image: ROOTHASH and the UKI that the
    replayed OVMF log's PCR 4 measured."""
    uki = uki_authenticode_from_log(parse_event_log(OVMF_LOG.read_bytes()))
    return {"roothash": ROOTHASH, "uki": {"authenticode_sha256": uki}}


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: Certificate
    path: Path
    nonce: str
    weights: Path
    code: Path
    results: Path | None = None


def write_weights(directory: Path) -> Path:
    weights = directory / "weights"
    weights.mkdir(parents=True)
    (weights / "model.bin").write_bytes(bytes(range(256)) * 64)
    (weights / "config.json").write_text('{"layers": 2}\n')
    return weights


def _evaluate(session: MeasuredSession, weights_sha256: str, workdir: Path) -> Path:
    """Measure an 'accuracy' evaluation's inputs, then bind its results file and metrics."""
    eval_code, test_set = workdir / "eval-code", workdir / "test-set.csv"
    eval_code.mkdir()
    (eval_code / "eval.py").write_text("print('evaluating')\n")
    test_set.write_text("x,y\n1,2\n")
    results = workdir / "results.json"
    results.write_text('{"accuracy": 0.93, "samples": 360}\n')
    session.add_evaluation_input(
        "accuracy", "eval-code", "code", hash_tree(eval_code).digest, upload_uri("accuracy/code")
    )
    session.add_evaluation_input(
        "accuracy",
        "eval-data",
        "test-set",
        hash_tree(test_set).digest,
        upload_uri("accuracy/test-set"),
    )
    session.add_evaluation(
        "accuracy",
        ["python3", "eval.py"],
        weights_sha256,
        hash_tree(results).digest,
        {"accuracy": 0.93, "samples": 360},
    )
    return results


def issue_evaluation_only(
    tcti: str,
    intermediates: tuple[bytes, ...],
    workdir: Path,
    weights: Path,
    linked: Path | None,
) -> IssuedCertificate:
    """An evaluation-only session on existing ``weights``, optionally linking their certificate."""
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    workdir.mkdir(parents=True, exist_ok=True)
    nonce = secrets.token_hex(16)
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        session = _new_session(tpm, intermediates, nonce)
        manifest = hash_tree(weights)
        digest = manifest.digest
        session.add_input("weights", "weights", digest, upload_uri("weights"))
        if linked is not None:
            session.add_input(
                "certificate",
                "training-certificate",
                hash_tree(linked).digest,
                upload_uri("training-certificate"),
            )
        session.describe_weights("weights", manifest, plain_sha256s(weights, manifest))
        results = _evaluate(session, digest, workdir)
        certificate = session.finish()
    path = workdir / "eval.aicert.json"
    path.write_text(json.dumps(certificate.to_json(), indent=2))
    return IssuedCertificate(certificate, path, nonce, weights, weights, results)


def _new_session(
    tpm: AgentTpm,
    intermediates: tuple[bytes, ...],
    nonce: str,
    kernel_cmdline: str = KERNEL_CMDLINE,
) -> MeasuredSession:
    session = MeasuredSession(
        tpm,
        agent_version="0.1.0",
        boot_id=secrets.token_hex(16),
        key=ec.generate_private_key(ec.SECP256R1()),
        intermediates=intermediates,
        kernel_cmdline=kernel_cmdline,
    )
    session.claim(owner=secrets.token_hex(32), nonce=nonce)
    return session


def issue_certificate(
    tcti: str,
    intermediates: tuple[bytes, ...],
    workdir: Path,
    *,
    evaluate: bool = False,
    kernel_cmdline: str = KERNEL_CMDLINE,
    file_sha256s: Callable[[Path, TreeManifest], dict[str, str]] = plain_sha256s,
    gpus: Callable[[str, str], Sequence[GpuRecord]] | None = None,
) -> IssuedCertificate:
    """Run a measured session for a fake job on the swtpm at ``tcti``; save the certificate.

    ``file_sha256s`` gives the agent's per-file SHA-256 (a test may make it lie);
    ``gpus`` the GPU records for a session nonce and agent key digest (default: none).
    """
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    code = workdir / "code"
    code.mkdir(parents=True)
    (code / "train.py").write_text("print('training')\n")
    weights = write_weights(workdir)
    nonce = secrets.token_hex(16)
    results = None
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        session = _new_session(tpm, intermediates, nonce, kernel_cmdline)
        if gpus is not None:
            session.add_gpus(gpus(nonce, agent_key_id(session.agent_public_key)))
        session.add_input("code", "code", hash_tree(code).digest, upload_uri("code"))
        session.start_command(["python3", "train.py"], "weights")
        session.command_exited(0)
        manifest = hash_tree(weights)
        weights_digest = manifest.digest
        session.add_output("weights", manifest, file_sha256s(weights, manifest))
        if evaluate:
            results = _evaluate(session, weights_digest, workdir)
        certificate = session.finish()
    path = workdir / "job.aicert.json"
    path.write_text(json.dumps(certificate.to_json(), indent=2))
    return IssuedCertificate(certificate, path, nonce, weights, code, results)
