"""Run one job on an attested agent and collect a verified result, whatever the platform.

The platform (:mod:`aicert.builder.platforms`: local QEMU, Azure) boots the measured
image and hands over an agent URL (:func:`run_on`); from there the flow is the same:
attest (nothing is sent before the quote checks out), claim, send the inputs, start,
follow the log, download outputs and certificate, then verify them with the verifier's
own code. Results are written into a staging directory that becomes the output
directory only when every check passed, so a failed run never leaves a
complete-looking result.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aicert.builder.agent_client import AgentClient, send_inputs
from aicert.builder.job_file import JobFile, LocalSource
from aicert.builder.platforms.base import Platform, Say, Verification
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.errors import AicertError, InputError
from aicert.verifier.statement.certificate import load_certificate
from aicert.verifier.tpm.ak_chain import bundled_roots
from aicert.verifier.verify import Policy, Report, verify_certificate

CERTIFICATE_NAME = "certificate.aicert.json"

SpecT = TypeVar("SpecT")


class JobFailedError(AicertError):
    """The job ran but did not succeed: there is no certificate for it."""

    exit_code = 1


@dataclass(frozen=True)
class JobOutcome:
    output_dir: Path
    certificate: Path
    weights: Path
    report: Report


def check_output_dir(output: Path) -> None:
    """Refuse an ``output`` that holds anything: a result never mixes with older files."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"output directory {output} exists and is not empty; choose another")


def staging_dir(output: Path) -> Path:
    """A fresh directory next to ``output`` (same file system, so the final rename is atomic)."""
    check_output_dir(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))


def run_on(
    platform: Platform[SpecT, Any, Any],
    spec: SpecT,
    job: JobFile,
    output: Path,
    *,
    say: Say,
    log_sink: Callable[[bytes], None] | None = None,
) -> JobOutcome:
    """Boot the image on ``platform``, run ``job`` on its agent, verify; then tear it down."""
    with platform.boot(spec, say=say) as booted:
        client = AgentClient(
            booted.agent_url,
            trust_roots=booted.agent_roots,
            recipe=booted.verification.boot_reference,
            intermediates=booted.intermediates,
        )
        outcome = run_job(
            client,
            job,
            output,
            booted.verification,
            say=say,
            log_sink=log_sink,
            up_timeout=booted.up_timeout,
            agent_failed=booted.agent_failed,
        )
    for name, source in booted.result_files:
        shutil.copyfile(source, outcome.output_dir / name)
    return outcome


def run_job(
    client: AgentClient,
    job: JobFile,
    output: Path,
    verification: Verification,
    *,
    say: Callable[[str], None],
    log_sink: Callable[[bytes], None] | None = None,
    up_timeout: float = 600.0,
    agent_failed: Callable[[], str | None] = lambda: None,
) -> JobOutcome:
    """Attest, run ``job``, download and verify; the verified result lands in ``output``.

    ``agent_failed`` (e.g. a look at the VM's console) cuts the wait for the agent
    short with the reason it gives.
    """
    stage = staging_dir(output)
    try:
        say(f"waiting for the agent at {client.host}:{client.port}")
        client.wait_until_up(up_timeout, agent_failed=agent_failed)
        attested = client.attest()
        say(
            f"agent attested: boot {attested.boot_id}, TLS key {attested.agent_key_sha256[:16]}… "
            "pinned" + (", boot PCRs match the image" if client.boot_reference is not None else "")
        )
        client.claim(job.nonce)
        say(f"session claimed with nonce {job.nonce}")
        for name, digest in send_inputs(client, job).items():
            say(f"input {name}: measured sha256:{digest}")
        client.start_job(
            job.command,
            job.output,
            job.config,
            evaluations=job.evaluations,
            use_entrypoint=job.use_entrypoint,
        )
        say(f"job started: {' '.join(job.command) or 'evaluations only'}")
        result = client.wait(log_sink or _echo)
        if not result.succeeded:
            raise JobFailedError(f"the job failed, no certificate was issued: {result.message}")
        weights = _collect_weights(client, job, stage, say)
        results = client.download_results(stage)
        for evaluation in result.evaluations:
            say(f"evaluation {evaluation.name}: {_metrics(evaluation.metrics)}")
        certificate = stage / CERTIFICATE_NAME
        certificate.write_bytes(client.certificate().raw)
        report = verify_result(certificate, weights, job, verification, results=results)
        if output.exists():
            output.rmdir()  # empty, checked by staging_dir
        os.replace(stage, output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if weights.is_relative_to(stage):
        weights = output / weights.relative_to(stage)
    return JobOutcome(output, output / CERTIFICATE_NAME, weights, report)


def _collect_weights(
    client: AgentClient, job: JobFile, stage: Path, say: Callable[[str], None]
) -> Path:
    """The weights to verify: the downloaded outputs, or (evaluation only) the local input."""
    if job.weights is not None:
        source = job.weights.source
        if not isinstance(source, LocalSource):
            raise InputError("an evaluation-only job's weights must be a local path")
        return source.path
    weights = stage / job.output
    manifest = client.download_outputs(weights)
    say(f"outputs downloaded: {len(manifest.files)} files, tree digest {manifest.digest}")
    return weights


def _metrics(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name} = {value}" for name, value in sorted(metrics.items()))


def verify_result(
    certificate: Path,
    weights: Path,
    job: JobFile,
    verification: Verification,
    *,
    results: Mapping[str, Path],
) -> Report:
    """Verify the downloaded certificate exactly as ``aicert-verify`` would."""
    policy = Policy(
        trust_roots=(*bundled_roots(), *verification.trust_roots),
        expected_nonce=job.nonce,
        boot_reference=verification.boot_reference,
        accept_any_image=verification.boot_reference is None,
        platform_profile=verification.platform_profile,
        weights_path=weights,
        tree_digest=tree_digest_of,
        linked_certificates=(job.linked_certificate,) if job.linked_certificate else (),
        results_paths=results,
    )
    report = verify_certificate(load_certificate(certificate), policy)
    if report.error is not None:
        raise report.error
    return report


def _echo(chunk: bytes) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
