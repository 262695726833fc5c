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

The training run is in :mod:`aicert.agent.job_training`, the evaluations (after the
training, or on an evaluation-only job's ``weights`` input) in
:mod:`aicert.agent.job_evaluation`, and what both use in :mod:`aicert.agent.job_common`;
this module adds the API's side: owner, claim, inputs, status and results.

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
import hashlib
import hmac
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from aicert.agent import intake
from aicert.agent.job_common import (
    CONFIG_INPUT,
    ENVIRONMENT_ROLES,
    EVALUATION_ROLES,
    ApiError,
    JobState,
    MeasuredInput,
)
from aicert.agent.job_evaluation import read_small, single_file_digest
from aicert.agent.job_training import TrainingRun
from aicert.agent.oci.environment import Environment, pull_environment, receive_archive
from aicert.agent.oci.errors import OciError
from aicert.agent.session import SessionError
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import AicertError, FormatError
from aicert.verifier.logs.session_events import INPUT_ROLES
from aicert.verifier.statement.canonical_json import JsonValue
from aicert.verifier.statement.certificate import TpmEvidence, agent_key_id
from aicert.verifier.statement.dsse import b64decode
from aicert.verifier.statement.uris import check_uri, git_uri, upload_uri
from aicert.verifier.tpm.pcr import QUOTED_PCRS

from aicert import tar_receive
from aicert.oci_reference import ImageReferenceError, check_plain_http_registry, parse_reference

ATTESTATION_DOMAIN: Final = b"aicert-attestation-v1"
MIN_NONCE_BYTES: Final = 8
MAX_NONCE_BYTES: Final = 64
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")


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


class Agent(TrainingRun):
    """This boot's one session as the API drives it: owner, inputs, job, results."""

    # -- guards ------------------------------------------------------------------------------

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
        ak_public, ak, firmware_log = self._evidence_parts
        with self._lock:
            quote = self._tpm.quote(QUOTED_PCRS, attestation_extra_data(nonce))
            if ak.nitro_document:
                # A fresh document, right after the quote: its PCRs are those of the quote.
                ak = self._tpm.ak_evidence(session.agent_public_key)
            records = session.records
        evidence = TpmEvidence(
            attest=quote.attest,
            signature=quote.signature,
            pcrs=quote.pcr_values,
            ak_public=ak_public,
            ak_certificates=ak.certificates,
            firmware_event_log=firmware_log,
            cel_log=records,
            nitro_document=ak.nitro_document,
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

    # -- the job's status and results --------------------------------------------------------

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
        data = read_small(path)
        if single_file_digest(data) != found[0]["resultsSha256"]:
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
