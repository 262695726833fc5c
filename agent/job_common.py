"""What the training run and the evaluation runs share: the job's state, its scratch disk,
the root a command runs in, failing the job and issuing its certificate.

:class:`JobCore` holds the state of this boot's one job; :mod:`aicert.agent.job_evaluation`
and :mod:`aicert.agent.job_training` add the two runs, :class:`aicert.agent.job.Agent` the
API's requests (see that module for the scratch disk layout).
"""

from __future__ import annotations

import enum
import json
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from aicert.agent.container import ContainerJob, ContainerRun
from aicert.agent.gpu_attestation import observe_gpus
from aicert.agent.oci.environment import Environment
from aicert.agent.sandbox import SandboxRun, SandboxSpec
from aicert.agent.session import MeasuredSession, SessionError, SessionTpm
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import AicertError
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.session_events import IMAGE_ROOT
from aicert.verifier.statement.canonical_json import JsonValue
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CONFIG_INPUT: Final = "job-config"
MAX_COMMAND_ARGS: Final = 4096
EVALUATION_ROLES: Final = ("eval-code", "eval-data", "eval-environment")
# Roles of the inputs that make weights; an evaluation-only job has none of them.
TRAINING_ROLES: Final = ("code", "data", "base-model", "environment")
# An OCI image the command runs in (agent/oci); at most one per training and evaluation.
ENVIRONMENT_ROLES: Final = ("environment", "eval-environment")
_SCRATCH_ENTRIES: Final = (
    "incoming",
    "inputs",
    "outputs",
    "work",
    "git",
    "evaluations",
    "job.log",
    "certificate.json",
)


class ApiError(AicertError):
    """A refused request: HTTP ``status``, a short machine-readable ``code``, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class JobState(enum.Enum):
    READY = "ready"  # waiting for an owner
    CLAIMED = "claimed"  # owner known, inputs arriving
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # the agent cannot run a session in this boot


@dataclass(frozen=True)
class MeasuredInput:
    """An input received and hashed; a training input is measured at once, an evaluation's
    input (``evaluation`` set) right before that evaluation runs."""

    name: str
    role: str
    digest: str
    source: str
    path: Path
    evaluation: str = ""


@dataclass(frozen=True)
class EvaluationRequest:
    """One ``evaluations`` entry of ``POST /v1/job``."""

    name: str
    command: tuple[str, ...]
    results: str
    use_entrypoint: bool = False


@dataclass(frozen=True)
class Root:
    """What a command runs in: ``name`` as recorded (IMAGE_ROOT or the environment input's
    name), the unpacked environment if any, and the Entrypoint run before the command."""

    name: str
    environment: Environment | None
    entrypoint: tuple[str, ...]


# Either runner: the plain sandbox in the image's root, or crun in an environment.
Run = SandboxRun | ContainerRun


class JobCore:
    """The state of this boot's one job; thread-safe (one lock orders TPM access)."""

    def __init__(
        self,
        tpm: SessionTpm,
        scratch: Path,
        *,
        key: ec.EllipticCurvePrivateKey,
        agent_version: str,
        boot_id: str,
        intermediates: Sequence[bytes] = (),
        git_schemes: tuple[str, ...] = ("https",),
        kernel_cmdline: str = "",
        plain_http_registries: frozenset[str] = frozenset(),
        gpus: Callable[[str, str], Sequence[GpuRecord]] = observe_gpus,
    ) -> None:
        """``gpus`` lists the VM's GPUs for a session nonce and agent key digest."""
        self._tpm = tpm
        self._observe_gpus = gpus
        self.scratch = scratch
        self._git_schemes = git_schemes
        self._plain_http_registries = plain_http_registries
        self._environments: dict[str, Environment] = {}
        self._lock = threading.RLock()
        self._state = JobState.READY
        self._message = ""
        self._owner_hash: str | None = None
        self._inputs: dict[str, MeasuredInput] = {}
        self._pending: set[str] = set()
        self._exit_status: int | None = None
        self._output_name = ""
        self._output_manifest: TreeManifest | None = None
        self._evaluation_inputs: dict[str, list[MeasuredInput]] = {}
        self._evaluations: tuple[EvaluationRequest, ...] = ()
        self._evaluation_results: list[dict[str, JsonValue]] = []
        self._stopping = False
        self._run: Run | None = None
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()
        # Everything that can fail for want of set-up is checked before agent-start is
        # measured: once PCR 15 is extended, only a reboot allows another try.
        _check_traversable(scratch)
        public_der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        # On a NitroTPM this asks for a first attestation document: a TPM that vouches for
        # its AK in no way fails here, not after agent-start.
        self._evidence_parts = (
            tpm.ak_public(),
            tpm.ak_evidence(public_der, intermediates),
            tpm.firmware_event_log(),
        )
        try:
            self._session: MeasuredSession | None = MeasuredSession(
                tpm,
                agent_version=agent_version,
                boot_id=boot_id,
                key=key,
                intermediates=intermediates,
                kernel_cmdline=kernel_cmdline,
            )
        except SessionError as exc:
            self._session = None
            self._state = JobState.REFUSED
            self._message = exc.message
            return
        self._clean_scratch()
        for sub in ("incoming", "inputs", "outputs", "git"):
            (scratch / sub).mkdir(mode=0o755)
        # Closed to the sandbox user until the training has ended (see the module doc).
        (scratch / "evaluations").mkdir(mode=0o700)

    # -- paths -------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.scratch / "job.log"

    @property
    def certificate_path(self) -> Path:
        return self.scratch / "certificate.json"

    def _clean_scratch(self) -> None:
        for entry in _SCRATCH_ENTRIES:
            path = self.scratch / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    # -- guards ------------------------------------------------------------------------------

    def _session_or_refuse(self) -> MeasuredSession:
        if self._session is None:
            raise ApiError(503, "agent-refused", self._message)
        return self._session

    # -- where and how a command runs, and how the job ends ----------------------------------

    def _evaluation_dir(self, evaluation: str) -> Path:
        return self.scratch / "evaluations" / evaluation

    def _root(self, evaluation: str | None, *, use_entrypoint: bool) -> Root:
        """The root the training (or ``evaluation``) runs in; 409 for an entrypoint asked
        of the image's own root."""
        with self._lock:
            for key, environment in self._environments.items():
                if (key.partition("/")[0] if "/" in key else None) == evaluation:
                    entrypoint = environment.entrypoint if use_entrypoint else ()
                    return Root(key, environment, entrypoint)
        if use_entrypoint:
            what = "the training" if evaluation is None else f"evaluation {evaluation!r}"
            raise ApiError(
                409, "job-inputs", f"{what} asks for an entrypoint but has no environment"
            )
        return Root(IMAGE_ROOT, None, ())

    def _start_run(self, spec: SandboxSpec, root: Root, log: IO[bytes]) -> Run:
        """Start ``spec`` in its environment through crun, or in the image's own root."""
        if root.environment is None:
            return SandboxRun(spec, log)
        job = ContainerJob(spec, root.environment, use_entrypoint=bool(root.entrypoint))
        return ContainerRun(job, log)

    def _note(self, text: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"[aicert-agent] {text}\n".encode())

    def _fail_locked(self, message: str, exit_status: int | None) -> None:
        session = self._session_or_refuse()
        if exit_status is not None:
            self._exit_status = exit_status
        self._state = JobState.FAILED
        self._message = message
        try:
            session.lock()
        except AicertError as exc:
            self._message += f"; locking PCR 15 failed: {exc.message}"
        self._note(f"job failed: {self._message}")
        self.finished.set()

    def _issue(self, message: str) -> None:
        session = self._session_or_refuse()
        with self._lock:
            try:
                certificate = session.finish()
                data = json.dumps(certificate.to_json(), indent=2, sort_keys=True).encode()
                self.certificate_path.write_bytes(data + b"\n")
            except (AicertError, OSError) as exc:
                message = exc.message if isinstance(exc, AicertError) else str(exc)
                self._fail_locked(f"the certificate could not be issued: {message}", None)
                return
            self._state = JobState.SUCCEEDED
            self._message = message
            self._note(f"certificate issued; {self._message}")
            self.finished.set()


def failure_reason(exc: BaseException) -> str:
    """One line for a failure: an aicert error's message, else the exception's text."""
    if isinstance(exc, AicertError):
        return exc.message
    return str(exc) or type(exc).__name__


def describe_root(root: Root) -> str:
    if root.environment is None:
        return "the image's own root"
    used = f" after its entrypoint {' '.join(root.entrypoint)}" if root.entrypoint else ""
    return f"environment {root.name} ({root.environment.manifest_digest}){used}"


def check_command(command: object) -> tuple[str, ...]:
    if (
        not isinstance(command, list)
        or not command
        or len(command) > MAX_COMMAND_ARGS
        or not all(isinstance(a, str) and "\x00" not in a for a in command)
    ):
        raise ApiError(400, "bad-request", "command must be a non-empty list of strings")
    return tuple(command)


def _check_traversable(scratch: Path) -> None:
    """The sandboxed command runs as an unprivileged user: it must reach the scratch disk."""
    try:
        scratch.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ApiError(500, "scratch", f"cannot create {scratch}: {exc.strerror}") from None
    for directory in (scratch.resolve(), *scratch.resolve().parents):
        if not directory.stat().st_mode & 0o001:
            raise ApiError(
                500,
                "scratch",
                f"{directory} is not searchable by other users, so the sandboxed command "
                f"could not reach its inputs under {scratch}",
            )
