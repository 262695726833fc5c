"""The agent's one job per boot: who owns it, what went in, what ran, what came out.

:class:`Agent` drives a :class:`~aicert.agent.session.MeasuredSession` from the API's
requests, in the session's fixed order, and keeps the scratch disk layout::

    <scratch>/incoming/<name>   an input being received (never measured)
    <scratch>/inputs/<name>     measured inputs (file or directory), read-only to the job
    <scratch>/outputs/<name>    the job's one writable output directory
    <scratch>/work/             the job's HOME and TMPDIR (writable, not measured)
    <scratch>/git/<name>        git repositories of git inputs (outside the input)
    <scratch>/evaluations/<e>/  one evaluation: incoming/, inputs/, git/ (its code and data),
                                output/ (its one writable directory) and work/
    <scratch>/job.log           the command's stdout and stderr, then the agent's notes
    <scratch>/certificate.json  the certificate, after a successful job

Evaluations run after the training (or, in an evaluation-only job, on a ``weights``
input), one by one, each confined like the training with the weights read-only. Their
inputs are hashed on arrival but measured only right before their evaluation runs, and
the ``evaluations`` directory stays closed to the sandbox user until the training has
ended, so the training command cannot read a benchmark's test data.

A command with an environment input runs in it (:mod:`aicert.agent.container`, crun);
without one it runs in the image's own root (:mod:`aicert.agent.sandbox`). Either way
PCR 15 and the statement record which root it was, and the image's Entrypoint when the
job asked for it.

Every refusal is an :class:`ApiError` carrying the HTTP status the server answers with.
A failure never yields a certificate: a failed command's exit status is measured and the
session locked, so the TPM itself records that this boot's job failed.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from aicert.agent import intake
from aicert.agent.container import ContainerJob, ContainerRun
from aicert.agent.gpu_attestation import observe_gpus
from aicert.agent.oci.environment import Environment, pull_environment, receive_archive
from aicert.agent.oci.errors import OciError
from aicert.agent.sandbox import SandboxRun, SandboxSpec
from aicert.agent.session import MeasuredSession, SessionError, SessionTpm
from aicert.verifier.digest.file_subjects import plain_sha256s
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, StreamingHasher
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import AicertError, FormatError
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.session_events import IMAGE_ROOT, INPUT_ROLES
from aicert.verifier.statement.canonical_json import JsonValue, parse_json
from aicert.verifier.statement.certificate import TpmEvidence, agent_key_id, load_certificate
from aicert.verifier.statement.dsse import b64decode
from aicert.verifier.statement.provenance import parse_statement
from aicert.verifier.statement.uris import JOB_REQUEST_URI, check_uri, git_uri, upload_uri
from aicert.verifier.tpm.pcr import QUOTED_PCRS
from cryptography.hazmat.primitives.asymmetric import ec

from aicert import tar_receive
from aicert.oci_reference import ImageReferenceError, check_plain_http_registry, parse_reference

ATTESTATION_DOMAIN: Final = b"aicert-attestation-v1"
CONFIG_INPUT: Final = "job-config"
MIN_NONCE_BYTES: Final = 8
MAX_NONCE_BYTES: Final = 64
MAX_COMMAND_ARGS: Final = 4096
MAX_EVALUATIONS: Final = 32
MAX_RESULTS_BYTES: Final = 1024 * 1024
MAX_JSON_INT: Final = 2**53 - 1
EVALUATION_ROLES: Final = ("eval-code", "eval-data", "eval-environment")
# Roles of the inputs that make weights; an evaluation-only job has none of them.
TRAINING_ROLES: Final = ("code", "data", "base-model", "environment")
# An OCI image the command runs in (agent/oci); at most one per training and evaluation.
ENVIRONMENT_ROLES: Final = ("environment", "eval-environment")
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")
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


class EvaluationFailedError(AicertError):
    """An evaluation did not yield a certifiable result; the job fails."""


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
class _Root:
    """What a command runs in: ``name`` as recorded (IMAGE_ROOT or the environment input's
    name), the unpacked environment if any, and the Entrypoint run before the command."""

    name: str
    environment: Environment | None
    entrypoint: tuple[str, ...]


# Either runner: the plain sandbox in the image's root, or crun in an environment.
Run = SandboxRun | ContainerRun


@dataclass(frozen=True)
class _Slot:
    """Where an arriving input is staged and kept, and the key that reserves its name."""

    key: str
    name: str
    role: str
    evaluation: str
    staged: Path
    final: Path
    git_dir: Path


def attestation_extra_data(nonce: bytes) -> bytes:
    """The quote's extraData for ``POST /v1/attestation``: SHA-256(domain || nonce).

    The domain keeps an attestation quote from ever passing for a certificate quote,
    whose extraData is SHA-256 of a DSSE PAE.
    """
    return hashlib.sha256(ATTESTATION_DOMAIN + nonce).digest()


MAX_INTERMEDIATES = 8
MAX_CERTIFICATE_BYTES = 16 * 1024


def parse_intermediates(value: object) -> tuple[bytes, ...]:
    """CA certificates (base64 DER) a claim offers for the AK chain; at most a few, small."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_INTERMEDIATES:
        raise ApiError(
            400, "bad-request", f"akIntermediates must be a list of at most {MAX_INTERMEDIATES}"
        )
    chain = []
    for i, item in enumerate(value):
        try:
            der = b64decode(item, f"akIntermediates[{i}]")
        except FormatError as exc:
            raise ApiError(400, "bad-request", exc.message) from None
        if not der or len(der) > MAX_CERTIFICATE_BYTES:
            raise ApiError(400, "bad-request", f"akIntermediates[{i}] has an implausible size")
        chain.append(der)
    return tuple(chain)


def parse_nonce(value: object) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ApiError(400, "bad-request", "nonce must be a string of hex digits")
    nonce = bytes.fromhex(value)
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise ApiError(
            400,
            "bad-request",
            f"nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes, not {len(nonce)}",
        )
    return nonce


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Agent:
    """The state of this boot's one session; thread-safe (one lock orders TPM access)."""

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
        self._evidence_parts = (
            tpm.ak_public(),
            (tpm.ak_certificate(), *intermediates),
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

    def check_owner(self, authorization: str | None) -> None:
        """Raise unless ``authorization`` is ``Bearer <T>`` with SHA-256(T) = the owner."""
        self._session_or_refuse()
        if self._owner_hash is None:
            raise ApiError(409, "not-claimed", "the session has no owner yet: claim it first")
        scheme, _, token = (authorization or "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme != "Bearer" or not hmac.compare_digest(given, self._owner_hash):
            raise ApiError(403, "forbidden", "only the session's owner may do this")

    # -- status and attestation --------------------------------------------------------------

    def status(self) -> dict[str, JsonValue]:
        with self._lock:
            return {
                "state": self._state.value,
                "message": self._message,
                "inputs": [
                    {"name": i.name, "role": i.role, "sha256": i.digest, "source": i.source}
                    for i in self._inputs.values()
                ],
                "evaluationInputs": [
                    {
                        "evaluation": i.evaluation,
                        "name": i.name,
                        "role": i.role,
                        "sha256": i.digest,
                        "source": i.source,
                    }
                    for received in self._evaluation_inputs.values()
                    for i in received
                ],
                "exitStatus": self._exit_status,
            }

    def attestation(self, nonce: bytes) -> dict[str, Any]:
        """A quote of PCRs 0-15 bound to ``nonce``, with everything needed to check it."""
        session = self._session_or_refuse()
        ak_public, ak_certificates, firmware_log = self._evidence_parts
        with self._lock:
            quote = self._tpm.quote(QUOTED_PCRS, attestation_extra_data(nonce))
            records = session.records
        evidence = TpmEvidence(
            attest=quote.attest,
            signature=quote.signature,
            pcrs=quote.pcr_values,
            ak_public=ak_public,
            ak_certificates=tuple(ak_certificates),
            firmware_event_log=firmware_log,
            cel_log=records,
        )
        return {
            "nonce": nonce.hex(),
            "agentPublicKey": _b64(session.agent_public_key),
            "tpm": evidence.to_json(),
        }

    # -- claim -------------------------------------------------------------------------------

    def claim(self, owner: object, nonce: object, intermediates: object = None) -> None:
        session = self._session_or_refuse()
        nonce_bytes = parse_nonce(nonce)
        chain = parse_intermediates(intermediates)
        if not isinstance(owner, str) or not intake.SHA256_HEX.fullmatch(owner):
            raise ApiError(
                400, "bad-request", "owner must be SHA-256(token) as 64 lowercase hex digits"
            )
        with self._lock:
            if self._owner_hash is not None:
                raise ApiError(409, "already-claimed", "the session already has an owner")
            session.claim(owner, nonce_bytes.hex(), chain)
            try:
                session.add_gpus(
                    self._observe_gpus(nonce_bytes.hex(), agent_key_id(session.agent_public_key))
                )
            except AicertError as exc:
                self._fail_locked(f"the GPUs could not be recorded: {exc.message}", None)
                raise ApiError(500, "gpu-attestation", exc.message) from None
            self._owner_hash = owner
            self._state = JobState.CLAIMED

    # -- inputs ------------------------------------------------------------------------------

    def _evaluation_dir(self, evaluation: str) -> Path:
        return self.scratch / "evaluations" / evaluation

    def _reserve(self, name: str, role: str, evaluation: str | None) -> _Slot:
        intake.check_name(name)
        if evaluation is None:
            if name == CONFIG_INPUT:
                raise ApiError(400, "bad-request", f"the input name {CONFIG_INPUT!r} is reserved")
            roles = tuple(r for r in INPUT_ROLES if r not in EVALUATION_ROLES)
        else:
            intake.check_name(evaluation)
            roles = EVALUATION_ROLES
        if role not in roles:
            raise ApiError(400, "bad-request", f"role must be one of {', '.join(roles)}")
        with self._lock:
            if self._state != JobState.CLAIMED:
                raise ApiError(
                    409,
                    "job-started",
                    f"inputs are accepted only before the job starts ({self._state.value})",
                )
            if evaluation is None:
                key, taken = name, name in self._inputs
                slot = _Slot(
                    key,
                    name,
                    role,
                    "",
                    self.scratch / "incoming" / name,
                    self.scratch / "inputs" / name,
                    self.scratch / "git" / name,
                )
            else:
                key = f"{evaluation}/{name}"
                taken = any(i.name == name for i in self._evaluation_inputs.get(evaluation, []))
                base = self._evaluation_dir(evaluation)
                for sub in ("incoming", "inputs"):
                    (base / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
                slot = _Slot(
                    key,
                    name,
                    role,
                    evaluation,
                    base / "incoming" / name,
                    base / "inputs" / name,
                    base / "git" / name,
                )
            if taken or key in self._pending:
                raise ApiError(409, "duplicate-input", f"an input named {key!r} already exists")
            self._pending.add(key)
        return slot

    def _keep_input(self, slot: _Slot, digest: str, source: str) -> str:
        """Move the received input in place; measure it now unless it is an evaluation's."""
        with self._lock:
            try:
                session = self._session_or_refuse()
                os.rename(slot.staged, slot.final)
                item = MeasuredInput(
                    slot.name, slot.role, digest, source, slot.final, slot.evaluation
                )
                if slot.evaluation:
                    self._evaluation_inputs.setdefault(slot.evaluation, []).append(item)
                else:
                    session.add_input(slot.role, slot.name, digest, source)
                    self._inputs[slot.name] = item
            except SessionError as exc:
                raise ApiError(409, "conflict", exc.message) from None
            finally:
                self._pending.discard(slot.key)
        return digest

    def _receive(self, slot: _Slot, source: str, receive: Callable[[Path], TreeManifest]) -> str:
        try:
            manifest = receive(slot.staged)
        except BaseException:
            with self._lock:
                self._pending.discard(slot.key)
            raise
        try:
            return self._keep_input(slot, manifest.digest, source)
        except BaseException:
            intake.remove_path(slot.staged)
            intake.remove_path(slot.final)
            raise

    def _receive_environment(
        self,
        slot: _Slot,
        source: Callable[[Environment], str],
        receive: Callable[[Path], Environment],
    ) -> str:
        """Like :meth:`_receive` for an OCI environment, identified by its manifest digest."""
        if slot.role not in ENVIRONMENT_ROLES:
            with self._lock:
                self._pending.discard(slot.key)
            raise ApiError(
                400,
                "bad-request",
                f"an OCI image is an input of role {' or '.join(ENVIRONMENT_ROLES)}",
            )
        try:
            environment = receive(slot.staged)
        except BaseException:
            with self._lock:
                self._pending.discard(slot.key)
            raise
        try:
            # Recorded like every digest, as bare hex: the manifest's SHA-256.
            digest = self._keep_input(
                slot, environment.manifest_digest.removeprefix("sha256:"), source(environment)
            )
        except BaseException:
            intake.remove_path(slot.staged)
            intake.remove_path(slot.final)
            raise
        with self._lock:
            self._environments[slot.key] = dataclasses.replace(
                environment, rootfs=slot.final / environment.rootfs.name
            )
        return digest

    def environment(self, evaluation: str | None = None) -> Environment | None:
        """The OCI environment the training (or ``evaluation``) runs in, if one was given."""
        return self._root(evaluation, use_entrypoint=False).environment

    def _root(self, evaluation: str | None, *, use_entrypoint: bool) -> _Root:
        """The root the training (or ``evaluation``) runs in; 409 for an entrypoint asked
        of the image's own root."""
        with self._lock:
            for key, environment in self._environments.items():
                if (key.partition("/")[0] if "/" in key else None) == evaluation:
                    entrypoint = environment.entrypoint if use_entrypoint else ()
                    return _Root(key, environment, entrypoint)
        if use_entrypoint:
            what = "the training" if evaluation is None else f"evaluation {evaluation!r}"
            raise ApiError(
                409, "job-inputs", f"{what} asks for an entrypoint but has no environment"
            )
        return _Root(IMAGE_ROOT, None, ())

    def _start_run(self, spec: SandboxSpec, root: _Root, log: IO[bytes]) -> Run:
        """Start ``spec`` in its environment through crun, or in the image's own root."""
        if root.environment is None:
            return SandboxRun(spec, log)
        job = ContainerJob(spec, root.environment, use_entrypoint=bool(root.entrypoint))
        return ContainerRun(job, log)

    def _environment_note(self, name: str) -> Callable[[str], None]:
        """Intake steps of a (long) environment pull, in the job log."""
        return lambda line: self._note(f"input {name}: {line}")

    def _scratch_room(self) -> int:
        """What an environment may take of the scratch disk: its free space now."""
        return shutil.disk_usage(self.scratch).free

    def upload_input(
        self,
        name: str,
        role: str,
        fmt: str,
        expected: str | None,
        body: intake.BodyReader,
        evaluation: str | None = None,
    ) -> str:
        """Receive an uploaded input (``fmt`` "tar" or "file"); its tree digest.

        With ``evaluation`` it is an input of that evaluation (role eval-code or eval-data).
        """
        self._session_or_refuse()
        if expected is not None:
            intake.check_sha256(expected, "sha256")
        if fmt not in ("tar", "file", "oci-archive"):
            raise ApiError(400, "bad-request", "format must be 'tar', 'file' or 'oci-archive'")
        if (fmt == "oci-archive") != (role in ENVIRONMENT_ROLES):
            raise ApiError(
                400, "bad-request", "an environment, and only it, is uploaded as format=oci-archive"
            )
        if fmt == "oci-archive" and expected is not None:
            raise ApiError(400, "bad-request", "an environment is identified by its own digest")
        slot = self._reserve(name, role, evaluation)
        source = upload_uri(slot.key)
        if fmt == "oci-archive":

            def archive(dest: Path) -> Environment:
                environment = receive_archive(
                    body, dest, max_bytes=self._scratch_room(), step=self._environment_note(name)
                )
                if not tar_receive.only_zeros_left(body):
                    intake.remove_path(dest)
                    raise intake.IntakeError("data follows the end of the archive", 422)
                return environment

            return self._receive_environment(slot, lambda env: env.source(name), archive)
        if fmt == "tar":
            return self._receive(
                slot,
                source,
                lambda dest: tar_receive.receive_tar(body, dest, expected_digest=expected),
            )
        return self._receive(
            slot,
            source,
            lambda dest: intake.receive_file_input(body, dest, expected_digest=expected),
        )

    def fetch_input(self, name: str, request: Mapping[str, Any]) -> str:
        """Fetch an input from an https URL or a git repository; its tree digest."""
        self._session_or_refuse()
        role = request.get("role")
        if not isinstance(role, str):
            raise ApiError(400, "bad-request", "role must be a string")
        evaluation = request.get("evaluation")
        if evaluation is not None and not isinstance(evaluation, str):
            raise ApiError(400, "bad-request", "evaluation must be an evaluation's name")
        tree = request.get("expected")
        if tree is not None and not isinstance(tree, str):
            raise ApiError(400, "bad-request", "expected must be a tree digest (64 hex digits)")
        if tree is not None:
            intake.check_sha256(tree, "expected")

        def checked(fetch: Callable[[Path], TreeManifest]) -> Callable[[Path], TreeManifest]:
            def receive(dest: Path) -> TreeManifest:
                manifest = fetch(dest)
                try:
                    intake.check_expected(manifest, tree, f"input {name}")
                except intake.IntakeError:
                    intake.remove_path(dest)
                    raise
                return manifest

            return receive

        url, git, image = request.get("url"), request.get("git"), request.get("image")
        if isinstance(image, str) and url is None and git is None:
            if tree is not None:
                raise ApiError(400, "bad-request", "an image is pinned by the digest it names")
            try:
                reference = parse_reference(image)
            except ImageReferenceError as exc:
                raise OciError(exc.message) from None
            plain_http = request.get("plainHttp", False)
            if not isinstance(plain_http, bool):
                raise ApiError(400, "bad-request", "plainHttp must be true or false")
            plain = self._plain_http_registries
            if plain_http:
                try:
                    plain |= {check_plain_http_registry(reference.registry)}
                except ImageReferenceError as exc:
                    raise ApiError(400, "bad-request", exc.message) from None
            slot = self._reserve(name, role, evaluation)
            return self._receive_environment(
                slot,
                # The recorded source says when the pull was over plain HTTP.
                lambda _env: reference.purl(plain_http=reference.registry in plain),
                lambda dest: pull_environment(
                    reference,
                    dest,
                    max_bytes=self._scratch_room(),
                    plain_http=plain,
                    step=self._environment_note(name),
                ),
            )
        if image is not None:
            raise ApiError(400, "bad-request", "an image input takes no url or git")
        if role in ENVIRONMENT_ROLES:
            raise ApiError(400, "bad-request", "an environment is fetched by 'image' (by digest)")
        if isinstance(url, str) and git is None:
            expected = request.get("sha256")
            if not isinstance(expected, str):
                raise ApiError(400, "bad-request", "a URL input needs the file's sha256")
            intake.check_https_url(url)
            _check_source_uri(lambda: check_uri(url, "url"))
            intake.check_sha256(expected, "sha256")
            slot = self._reserve(name, role, evaluation)
            return self._receive(
                slot, url, checked(lambda dest: intake.fetch_url(url, dest, expected))
            )
        if isinstance(git, str) and url is None:
            commit = request.get("commit")
            if not isinstance(commit, str):
                raise ApiError(400, "bad-request", "a git input needs the commit to check out")
            source = _check_source_uri(lambda: git_uri(git, commit))
            slot = self._reserve(name, role, evaluation)
            return self._receive(
                slot,
                source,
                checked(
                    lambda dest: intake.fetch_git(
                        git, commit, dest, slot.git_dir, schemes=self._git_schemes
                    )
                ),
            )
        raise ApiError(
            400,
            "bad-request",
            "give either 'url' and 'sha256', 'git' and 'commit', or 'image' (by digest)",
        )

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
        requests = _check_evaluations(evaluations)
        if not isinstance(use_entrypoint, bool):
            raise ApiError(400, "bad-request", "useEntrypoint must be true or false")
        if use_entrypoint and command is None:
            raise ApiError(400, "bad-request", "an evaluation-only job has no training entrypoint")
        training = command is not None
        argv = _check_command(command) if training else ()
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
            self._note(f"running {' '.join(argv)} in {_describe_root(root)}")
            log = self.log_path.open("ab")
            try:
                self._run = self._start_run(spec, root, log)
            except BaseException as exc:
                log.close()
                self._fail_locked(f"the command could not be started: {_reason(exc)}", None)
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
            _check_linked(linked[0], weights[0])
        return weights[0]

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

    def _supervise(self, run: Run, spec: SandboxSpec, log: IO[bytes]) -> None:
        """The job thread: whatever goes wrong, the job ends failed, never left running."""
        try:
            self._follow(run, spec, log)
        except Exception as exc:  # an unforeseen failure must still end the job
            with self._lock:
                if self._state == JobState.RUNNING:
                    self._fail_locked(f"the job failed unexpectedly: {_reason(exc)}", None)

    def _follow(self, run: Run, spec: SandboxSpec, log: IO[bytes]) -> None:
        try:
            status = run.wait()
        except Exception as exc:  # e.g. a process left over, crun failing
            with self._lock:
                self._fail_locked(f"the run did not end cleanly: {_reason(exc)}", None)
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
                    self._fail_locked(f"evaluation {request.name!r}: {_reason(exc)}", None)
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
                f"in {_describe_root(root)}"
            )
            log = self.log_path.open("ab")
            try:
                run = self._start_run(spec, root, log)
            except BaseException as exc:
                log.close()
                raise EvaluationFailedError(
                    f"the command could not be started: {_reason(exc)}"
                ) from None
            self._run = run
        try:
            status = run.wait()
        except Exception as exc:  # e.g. a process left over, crun failing
            raise EvaluationFailedError(f"the run did not end cleanly: {_reason(exc)}") from None
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

    def job_status(self) -> dict[str, JsonValue]:
        with self._lock:
            if self._state in (JobState.READY, JobState.CLAIMED):
                raise ApiError(409, "no-job", "no job was started")
            return {
                "state": self._state.value,
                "exitStatus": self._exit_status,
                "message": self._message,
                "output": self._output_name,
                "outputSha256": None
                if self._output_manifest is None
                else self._output_manifest.digest,
                "evaluations": list(self._evaluation_results),
            }

    def read_log(self, offset: int, limit: int) -> tuple[bytes, int, bool]:
        """Log bytes from ``offset``; the log's size; whether the job is over (log final)."""
        if offset < 0:
            raise ApiError(400, "bad-request", "offset must not be negative")
        with self._lock:
            over = self._state in (JobState.SUCCEEDED, JobState.FAILED)
        try:
            with self.log_path.open("rb") as log:
                size = os.fstat(log.fileno()).st_size
                log.seek(min(offset, size))
                return log.read(limit), size, over
        except FileNotFoundError:
            raise ApiError(409, "no-job", "no job was started") from None

    def _require_success(self) -> None:
        with self._lock:
            if self._state == JobState.SUCCEEDED:
                return
            if self._state == JobState.FAILED:
                raise ApiError(
                    409, "job-failed", f"the job failed: {self._message}; no certificate is issued"
                )
            raise ApiError(409, "job-not-finished", f"the job is {self._state.value}")

    def certificate_json(self) -> bytes:
        self._require_success()
        return self.certificate_path.read_bytes()

    def output_manifest(self) -> TreeManifest:
        """The measured outputs of the succeeded job (an evaluation-only job has none)."""
        self._require_success()
        if self._output_manifest is None:
            raise ApiError(
                409, "no-outputs", "an evaluation-only job has no outputs; fetch its results"
            )
        return self._output_manifest

    def write_outputs_tar(self, out: IO[bytes]) -> None:
        """Write the measured output tree as an uncompressed tar stream (exactly the
        files and directories of the measured manifest)."""
        manifest = self.output_manifest()
        root = self.scratch / "outputs" / self._output_name
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for directory in manifest.directories:
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            for entry in manifest.files:
                info = tarfile.TarInfo(entry.path)
                info.size = entry.size
                info.mode = 0o644
                with _open_measured(root / entry.path, entry.size) as data:
                    archive.addfile(info, data)

    def evaluation_results(self, name: str) -> bytes:
        """The results file of evaluation ``name``, exactly as it was measured."""
        self._require_success()
        with self._lock:
            found = [r for r in self._evaluation_results if r["name"] == name]
        if not found:
            raise ApiError(404, "not-found", f"the job ran no evaluation named {name!r}")
        path = self._evaluation_dir(name) / "output" / str(found[0]["results"])
        data = _read_small(path)
        if _single_file_digest(data) != found[0]["resultsSha256"]:
            raise ApiError(500, "outputs-changed", f"{path} changed after it was measured")
        return data

    def shutdown(self, timeout: float = 30.0) -> None:
        """Kill a running command or evaluation and wait for its supervisor to record the end."""
        with self._lock:
            self._stopping = True
            run = self._run
        if run is not None:
            run.kill()
        if self._thread is not None:
            self._thread.join(timeout)


def _reason(exc: BaseException) -> str:
    """One line for a failure: an aicert error's message, else the exception's text."""
    if isinstance(exc, AicertError):
        return exc.message
    return str(exc) or type(exc).__name__


def _describe_root(root: _Root) -> str:
    if root.environment is None:
        return "the image's own root"
    used = f" after its entrypoint {' '.join(root.entrypoint)}" if root.entrypoint else ""
    return f"environment {root.name} ({root.environment.manifest_digest}){used}"


def _single_file_digest(data: bytes) -> str:
    hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
    hasher.update(data)
    return intake.single_file_manifest(hasher.result()).digest


def _read_small(path: Path) -> bytes:
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


def read_results(output: Path, results: str) -> tuple[str, dict[str, int | float]]:
    """The tree digest and metrics of the results file ``results`` under ``output``.

    It must be a regular file reached without symbolic links, holding a non-empty JSON
    object of metric name -> number (no booleans, no NaN or infinity, integers JSON keeps
    exactly). Anything else fails the evaluation.
    """
    path = output / results
    if os.path.realpath(path) != os.path.join(os.path.realpath(output), results):
        raise EvaluationFailedError(f"the results path {results} passes through a symbolic link")
    data = _read_small(path)
    try:
        manifest = hash_tree(path)
    except (AicertError, OSError) as exc:
        message = exc.message if isinstance(exc, AicertError) else str(exc)
        raise EvaluationFailedError(f"the results file cannot be measured: {message}") from None
    if _single_file_digest(data) != manifest.digest:
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


def _check_linked(certificate: MeasuredInput, weights: MeasuredInput) -> None:
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


def _check_evaluations(value: object) -> tuple[EvaluationRequest, ...]:
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
            EvaluationRequest(name, _check_command(item["command"]), results, use_entrypoint)
        )
    return tuple(requests)


def _open_measured(path: Path, size: int) -> IO[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    handle = os.fdopen(fd, "rb")
    if os.fstat(fd).st_size != size:
        handle.close()
        raise ApiError(500, "outputs-changed", f"{path} changed after it was measured")
    return handle


def _check_source_uri(make: Callable[[], str]) -> str:
    """The source URI ``make`` builds; a 400 refusal if it is not a URI."""
    try:
        return make()
    except FormatError as exc:
        raise ApiError(400, "bad-request", exc.message) from None


def _check_command(command: object) -> tuple[str, ...]:
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
