"""The training run: the job request, its measured configuration and command, the
confined run and its measured outputs; then the evaluations (:mod:`.job_evaluation`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import IO

from aicert.agent import intake
from aicert.agent.job_common import (
    CONFIG_INPUT,
    TRAINING_ROLES,
    ApiError,
    EvaluationRequest,
    JobState,
    MeasuredInput,
    Run,
    check_command,
    describe_root,
    failure_reason,
)
from aicert.agent.job_evaluation import EvaluationRun, check_evaluations, check_linked
from aicert.agent.sandbox import SandboxSpec
from aicert.verifier.digest.file_subjects import plain_sha256s
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import AicertError
from aicert.verifier.statement.uris import JOB_REQUEST_URI


class TrainingRun(EvaluationRun):
    """The job request and the training run, which ends by running the evaluations."""

    # -- the job -----------------------------------------------------------------------------

    def start_job(
        self,
        command: object,
        output: object,
        config: object,
        evaluations: object = None,
        use_entrypoint: object = False,
    ) -> None:
        """Measure the configuration and the command, then start the confined run.

        Without ``command`` the job only evaluates its ``weights`` input. With
        ``use_entrypoint`` the training environment's Entrypoint runs before the command.
        """
        session = self._session_or_refuse()
        requests = check_evaluations(evaluations)
        if not isinstance(use_entrypoint, bool):
            raise ApiError(400, "bad-request", "useEntrypoint must be true or false")
        if use_entrypoint and command is None:
            raise ApiError(400, "bad-request", "an evaluation-only job has no training entrypoint")
        training = command is not None
        argv = check_command(command) if training else ()
        if training:
            if not isinstance(output, str):
                raise ApiError(400, "bad-request", "output must be a directory name")
            intake.check_name(output)
        elif not requests:
            raise ApiError(400, "bad-request", "a job needs a command, or evaluations to run")
        elif output is not None:
            raise ApiError(400, "bad-request", "an evaluation-only job has no output")
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ApiError(400, "bad-request", "config must be a JSON object")
        with self._lock:
            if self._state != JobState.CLAIMED:
                raise ApiError(409, "job-started", "this boot's one job was already started")
            if self._pending:
                raise ApiError(
                    409, "uploads-pending", f"inputs still arriving: {sorted(self._pending)}"
                )
            code = [i for i in self._inputs.values() if i.role == "code"]
            weights = self._check_job_inputs(training, requests)
            root = self._root(None, use_entrypoint=use_entrypoint)
            for request in requests:
                self._root(request.name, use_entrypoint=request.use_entrypoint)
            if training and not code:
                raise ApiError(409, "no-code", "no input with role 'code' was given")
            config_dir = self.scratch / "inputs" / CONFIG_INPUT
            if CONFIG_INPUT in self._inputs:
                raise ApiError(
                    409, "duplicate-input", f"the input name {CONFIG_INPUT!r} is reserved"
                )
            manifest = intake.write_config(config, config_dir)
            session.add_input("config", CONFIG_INPUT, manifest.digest, JOB_REQUEST_URI)
            self._inputs[CONFIG_INPUT] = MeasuredInput(
                CONFIG_INPUT, "config", manifest.digest, JOB_REQUEST_URI, config_dir
            )
            self._evaluations = requests
            if not training:
                assert weights is not None  # noqa: S101 - _check_job_inputs requires it
                self._state = JobState.RUNNING
                # Written before answering, so the log exists once the job has started.
                self._note(f"evaluation-only job on weights {weights.name} = {weights.digest}")
                self._thread = threading.Thread(
                    target=self._evaluate_only, args=(weights,), name="aicert-job", daemon=True
                )
                self._thread.start()
                return
            session.start_command(argv, output, root.name, root.entrypoint)
            self._output_name = str(output)
            self._state = JobState.RUNNING
            inputs = self.scratch / "inputs"
            spec = SandboxSpec(
                command=argv,
                cwd=code[0].path if code[0].path.is_dir() else inputs,
                read_only=(self.scratch,),
                output=self.scratch / "outputs" / str(output),
                work=self.scratch / "work",
                env={
                    "AICERT_INPUTS": str(inputs),
                    "AICERT_CONFIG": str(config_dir / intake.CONFIG_FILE),
                },
            )
            self._note(f"running {' '.join(argv)} in {describe_root(root)}")
            log = self.log_path.open("ab")
            try:
                self._run = self._start_run(spec, root, log)
            except BaseException as exc:
                log.close()
                self._fail_locked(f"the command could not be started: {failure_reason(exc)}", None)
                raise ApiError(500, "start-failed", self._message) from None
            self._thread = threading.Thread(
                target=self._supervise, args=(self._run, spec, log), name="aicert-job", daemon=True
            )
            self._thread.start()

    def _check_job_inputs(
        self, training: bool, requests: Sequence[EvaluationRequest]
    ) -> MeasuredInput | None:
        """Refuse inputs that do not fit the job; the weights an evaluation-only job evaluates."""
        names = {r.name for r in requests}
        for evaluation in self._evaluation_inputs:
            if evaluation not in names:
                raise ApiError(
                    409,
                    "unknown-evaluation",
                    f"inputs were sent for evaluation {evaluation!r}, which the job does not run",
                )
        if sum(i.role == "environment" for i in self._inputs.values()) > 1:
            raise ApiError(409, "job-inputs", "a job has at most one environment")
        for request in requests:
            received = self._evaluation_inputs.get(request.name, [])
            if sum(i.role == "eval-environment" for i in received) > 1:
                raise ApiError(
                    409, "job-inputs", f"evaluation {request.name!r} has more than one environment"
                )
            if sum(i.role == "eval-code" for i in received) != 1:
                raise ApiError(
                    409,
                    "no-eval-code",
                    f"evaluation {request.name!r} needs exactly one input with role 'eval-code'",
                )
        if training:
            if any(i.role in ("weights", "certificate") for i in self._inputs.values()):
                raise ApiError(
                    409,
                    "job-inputs",
                    "weights and certificate inputs belong to an evaluation-only job",
                )
            return None
        if any(i.role in TRAINING_ROLES for i in self._inputs.values()):
            raise ApiError(
                409,
                "job-inputs",
                "an evaluation-only job takes no code, data, base model or environment",
            )
        weights = [i for i in self._inputs.values() if i.role == "weights"]
        if len(weights) != 1:
            raise ApiError(
                409,
                "no-weights",
                "an evaluation-only job needs exactly one input with role 'weights'",
            )
        linked = [i for i in self._inputs.values() if i.role == "certificate"]
        if len(linked) > 1:
            raise ApiError(409, "job-inputs", "at most one certificate input may be linked")
        if linked:
            check_linked(linked[0], weights[0])
        return weights[0]

    def _supervise(self, run: Run, spec: SandboxSpec, log: IO[bytes]) -> None:
        """The job thread: whatever goes wrong, the job ends failed, never left running."""
        try:
            self._follow(run, spec, log)
        except Exception as exc:  # an unforeseen failure must still end the job
            with self._lock:
                if self._state == JobState.RUNNING:
                    self._fail_locked(f"the job failed unexpectedly: {failure_reason(exc)}", None)

    def _follow(self, run: Run, spec: SandboxSpec, log: IO[bytes]) -> None:
        try:
            status = run.wait()
        except Exception as exc:  # e.g. a process left over, crun failing
            with self._lock:
                self._fail_locked(f"the run did not end cleanly: {failure_reason(exc)}", None)
            return
        finally:
            log.close()
        session = self._session_or_refuse()
        with self._lock:
            self._exit_status = status
            try:
                session.command_exited(status)
            except AicertError as exc:
                self._fail_locked(f"recording the exit status failed: {exc.message}", status)
                return
            if status != 0:
                self._fail_locked(f"the command exited with status {status}", status)
                return
        self._note(f"command exited with status 0; measuring {spec.output.name}")
        try:
            manifest = hash_tree(spec.output)
            sha256s = plain_sha256s(spec.output, manifest)
        except AicertError as exc:
            with self._lock:
                self._fail_locked(f"the outputs cannot be measured: {exc.message}", status)
            return
        with self._lock:
            try:
                session.add_output(self._output_name, manifest, sha256s)
            except AicertError as exc:
                self._fail_locked(f"the outputs cannot be measured: {exc.message}", status)
                return
            self._output_manifest = manifest
        if self._run_evaluations(spec.output, manifest.digest):
            self._issue(f"outputs {self._output_name} = {manifest.digest}")
