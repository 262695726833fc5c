"""The evaluation runs: each evaluation of the job, one by one, on the certified weights.

Evaluations run after the training (or, in an evaluation-only job, on a ``weights``
input), one by one, each confined like the training with the weights read-only. Their
inputs are hashed on arrival but measured only right before their evaluation runs, and
the ``evaluations`` directory stays closed to the sandbox user until the training has
ended, so the training command cannot read a benchmark's test data. An evaluation's
results file is measured and its metrics recorded in the statement.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from aicert.agent import intake
from aicert.agent.job_common import (
    ApiError,
    EvaluationRequest,
    JobCore,
    MeasuredInput,
    check_command,
    describe_root,
    failure_reason,
)
from aicert.agent.sandbox import SandboxSpec
from aicert.verifier.digest.file_subjects import plain_sha256s
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, StreamingHasher
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import AicertError, FormatError
from aicert.verifier.statement.canonical_json import parse_json
from aicert.verifier.statement.certificate import load_certificate
from aicert.verifier.statement.provenance import parse_statement

MAX_EVALUATIONS: Final = 32
MAX_RESULTS_BYTES: Final = 1024 * 1024
MAX_JSON_INT: Final = 2**53 - 1


class EvaluationFailedError(AicertError):
    """An evaluation did not yield a certifiable result; the job fails."""


class EvaluationRun(JobCore):
    """The job's evaluations, run after the training or on an evaluation-only job's weights."""

    def _evaluate_only(self, weights: MeasuredInput) -> None:
        session = self._session_or_refuse()
        try:
            manifest = hash_tree(weights.path)
            sha256s = plain_sha256s(weights.path, manifest)
            with self._lock:
                session.describe_weights(weights.name, manifest, sha256s)
        except AicertError as exc:
            with self._lock:
                self._fail_locked(f"the weights input cannot be described: {exc.message}", None)
            return
        if self._run_evaluations(weights.path, weights.digest):
            self._issue(f"evaluated weights {weights.name} = {weights.digest}")

    def _run_evaluations(self, weights: Path, weights_digest: str) -> bool:
        """Run every evaluation in order; False (the job failed) at the first failure."""
        for request in self._evaluations:
            try:
                # The training has ended: the sandbox user may now reach the evaluations.
                os.chmod(self.scratch / "evaluations", 0o755)  # noqa: S103
                self._evaluate(request, weights, weights_digest)
            except Exception as exc:  # any failure fails the job, cleanly
                with self._lock:
                    self._fail_locked(f"evaluation {request.name!r}: {failure_reason(exc)}", None)
                return False
        return True

    def _evaluate(self, request: EvaluationRequest, weights: Path, weights_digest: str) -> None:
        """Measure the evaluation's inputs, run it confined, bind its results file."""
        session = self._session_or_refuse()
        base = self._evaluation_dir(request.name)
        inputs = base / "inputs"
        with self._lock:
            if self._stopping:
                raise EvaluationFailedError("the agent is stopping")
            received = self._evaluation_inputs.get(request.name, [])
            for item in received:
                session.add_evaluation_input(
                    request.name, item.role, item.name, item.digest, item.source
                )
            code = next(i for i in received if i.role == "eval-code")
            root = self._root(request.name, use_entrypoint=request.use_entrypoint)
            spec = SandboxSpec(
                command=request.command,
                cwd=code.path if code.path.is_dir() else inputs,
                read_only=(self.scratch,),
                output=base / "output",
                work=base / "work",
                env={
                    "AICERT_WEIGHTS": str(weights),
                    "AICERT_INPUTS": str(inputs),
                    "AICERT_RESULTS": str(base / "output" / request.results),
                },
            )
            self._message = f"evaluating {request.name}"
            self._note(
                f"evaluation {request.name}: running {' '.join(request.command)} "
                f"in {describe_root(root)}"
            )
            log = self.log_path.open("ab")
            try:
                run = self._start_run(spec, root, log)
            except BaseException as exc:
                log.close()
                raise EvaluationFailedError(
                    f"the command could not be started: {failure_reason(exc)}"
                ) from None
            self._run = run
        try:
            status = run.wait()
        except Exception as exc:  # e.g. a process left over, crun failing
            raise EvaluationFailedError(
                f"the run did not end cleanly: {failure_reason(exc)}"
            ) from None
        finally:
            log.close()
        if status != 0:
            raise EvaluationFailedError(f"the command exited with status {status}")
        digest, metrics = read_results(spec.output, request.results)
        with self._lock:
            session.add_evaluation(
                request.name,
                request.command,
                weights_digest,
                digest,
                metrics,
                root.name,
                root.entrypoint,
            )
            self._evaluation_results.append(
                {
                    "name": request.name,
                    "results": request.results,
                    "resultsSha256": digest,
                    "metrics": dict(metrics),
                }
            )
        self._note(f"evaluation {request.name}: results {digest}")


def read_results(output: Path, results: str) -> tuple[str, dict[str, int | float]]:
    """The tree digest and metrics of the results file ``results`` under ``output``.

    It must be a regular file reached without symbolic links, holding a non-empty JSON
    object of metric name -> number (no booleans, no NaN or infinity, integers JSON keeps
    exactly). Anything else fails the evaluation.
    """
    path = output / results
    if os.path.realpath(path) != os.path.join(os.path.realpath(output), results):
        raise EvaluationFailedError(f"the results path {results} passes through a symbolic link")
    data = read_small(path)
    try:
        manifest = hash_tree(path)
    except (AicertError, OSError) as exc:
        message = exc.message if isinstance(exc, AicertError) else str(exc)
        raise EvaluationFailedError(f"the results file cannot be measured: {message}") from None
    if single_file_digest(data) != manifest.digest:
        raise EvaluationFailedError("the results file changed while it was measured")
    try:
        doc = parse_json(data, "the results file")
    except FormatError as exc:
        raise EvaluationFailedError(exc.message) from None
    if not isinstance(doc, dict) or not doc:
        raise EvaluationFailedError("the results file must be a non-empty JSON object of metrics")
    metrics: dict[str, int | float] = {}
    for key, value in doc.items():
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or (isinstance(value, int) and abs(value) > MAX_JSON_INT)
        ):
            raise EvaluationFailedError(f"metric {key!r} in the results file is not a number")
        metrics[key] = value
    return manifest.digest, metrics


def read_small(path: Path) -> bytes:
    """A regular file of at most MAX_RESULTS_BYTES, never through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EvaluationFailedError(f"the command wrote no results file {path.name}") from None
    except OSError as exc:
        raise EvaluationFailedError(f"cannot open the results file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EvaluationFailedError("the results file is not a regular file")
        data = handle.read(MAX_RESULTS_BYTES + 1)
    if len(data) > MAX_RESULTS_BYTES:
        raise EvaluationFailedError(f"the results file is larger than {MAX_RESULTS_BYTES} bytes")
    return data


def single_file_digest(data: bytes) -> str:
    hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
    hasher.update(data)
    return intake.single_file_manifest(hasher.result()).digest


def check_linked(certificate: MeasuredInput, weights: MeasuredInput) -> None:
    """A linked certificate must certify exactly the weights this job evaluates."""
    if not certificate.path.is_file():
        raise ApiError(409, "certificate-mismatch", "the certificate input must be one file")
    try:
        cert = load_certificate(certificate.path)
        subjects = {s.sha256 for s in parse_statement(cert.envelope.payload).subjects}
    except AicertError as exc:
        raise ApiError(
            409, "certificate-mismatch", f"the certificate input is not readable: {exc.message}"
        ) from None
    if subjects != {weights.digest}:
        raise ApiError(
            409,
            "certificate-mismatch",
            f"the linked certificate certifies other weights than {weights.name!r}",
        )


def check_evaluations(value: object) -> tuple[EvaluationRequest, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_EVALUATIONS:
        raise ApiError(
            400, "bad-request", f"evaluations must be a list of at most {MAX_EVALUATIONS}"
        )
    requests: list[EvaluationRequest] = []
    for i, item in enumerate(value):
        keys = {"name", "command", "results"}
        if not isinstance(item, Mapping) or not keys <= set(item) <= keys | {"useEntrypoint"}:
            raise ApiError(
                400,
                "bad-request",
                f"evaluations[{i}] must be {{name, command, results[, useEntrypoint]}}",
            )
        name, results = item["name"], item["results"]
        use_entrypoint = item.get("useEntrypoint", False)
        if not isinstance(use_entrypoint, bool):
            raise ApiError(400, "bad-request", f"evaluations[{i}].useEntrypoint must be a bool")
        if not isinstance(name, str) or not isinstance(results, str):
            raise ApiError(400, "bad-request", f"evaluations[{i}]: name and results are strings")
        intake.check_name(name)
        if any(r.name == name for r in requests):
            raise ApiError(400, "bad-request", f"two evaluations are named {name!r}")
        for part in results.split("/"):
            intake.check_name(part)
        requests.append(
            EvaluationRequest(name, check_command(item["command"]), results, use_entrypoint)
        )
    return tuple(requests)
