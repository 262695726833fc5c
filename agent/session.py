"""One measured session: every step extended into PCR 15, then a quoted certificate.

The agent drives a :class:`MeasuredSession` through its fixed order
(agent start → claim → GPUs → inputs → command → exit → outputs → evaluations → lock;
an evaluation-only job skips command, exit and outputs and evaluates a weights
input); any step out of order is refused. :meth:`MeasuredSession.finish` locks the log, signs the
statement with the attested agent key and asks the TPM for a quote whose
extraData binds the statement. Tests use the same class on a real swtpm.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aicert.verifier.boot.image_identity import (
    ImageIdentity,
    roothash_from_cmdline,
    uki_authenticode_from_log,
)
from aicert.verifier.digest.file_subjects import FileSubject, file_subjects
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import AicertError
from aicert.verifier.gpu.record import GpuRecord
from aicert.verifier.logs.cel import CelRecord, make_record
from aicert.verifier.logs.session_events import (
    IMAGE_ROOT,
    INPUT_ROLES,
    AgentStart,
    CommandExited,
    CommandStarted,
    EvaluationMeasured,
    GpuObserved,
    InputMeasured,
    OutputMeasured,
    SessionClaim,
    SessionEvent,
    SessionLocked,
)
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.statement.canonical_json import canonicalize
from aicert.verifier.statement.certificate import Certificate, TpmEvidence, agent_key_id
from aicert.verifier.statement.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope
from aicert.verifier.statement.provenance import Artifact, Evaluation, TrainingProvenance
from aicert.verifier.statement.uris import check_uri
from aicert.verifier.tpm.pcr import QUOTED_PCRS
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

APPLICATION_PCR = 15


class SessionError(AicertError):
    """A session step was refused (out of order, second job, PCR 15 not fresh)."""

    exit_code = 1


class Quote(Protocol):
    @property
    def attest(self) -> bytes: ...

    @property
    def signature(self) -> bytes: ...

    @property
    def pcr_values(self) -> dict[int, bytes]: ...


class AkEvidence(Protocol):
    """What vouches for the AK: its certificate chain, or a NitroTPM attestation document."""

    @property
    def certificates(self) -> tuple[bytes, ...]: ...

    @property
    def nitro_document(self) -> bytes: ...


class SessionTpm(Protocol):
    """The TPM operations a session needs (``aicert.agent.tpm.AgentTpm`` provides them)."""

    def extend(self, pcr: int, data: bytes) -> object: ...

    def read_pcrs(self, alg: str = ..., pcrs: Iterable[int] = ...) -> dict[int, bytes]: ...

    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> Quote: ...

    def ak_public(self) -> bytes: ...

    def ak_evidence(
        self, agent_public_key: bytes, intermediates: Sequence[bytes] = ...
    ) -> AkEvidence: ...

    def firmware_event_log(self) -> bytes: ...


def _check_source(source: str) -> None:
    if source:
        try:
            check_uri(source, "input source")
        except AicertError as exc:
            raise SessionError(exc.message) from None


class _Phase(enum.IntEnum):
    STARTED = 0
    CLAIMED = 1
    RUNNING = 2
    EXITED = 3
    EVALUATING = 4
    LOCKED = 5


@dataclass(frozen=True)
class _Certified:
    """A certified tree: its name, tree digest and file count, and its file subjects."""

    tree: Artifact
    files: tuple[FileSubject, ...]


def _certified(name: str, manifest: TreeManifest, sha256s: Mapping[str, str]) -> _Certified:
    if not manifest.files:
        raise SessionError(f"{name} holds no file: there is nothing to certify")
    try:
        files = file_subjects(name, manifest, sha256s)
    except KeyError:
        raise SessionError(f"the SHA-256 of a file of {name} is missing") from None
    return _Certified(Artifact(name, manifest.digest, files=len(manifest.files)), files)


def image_identity(kernel_cmdline: str, firmware_log: bytes) -> ImageIdentity:
    """The booted image's root hash (from the kernel command line) and UKI Authenticode
    digest (from PCR 4 of the firmware log, when the platform exposes one)."""
    try:
        roothash = roothash_from_cmdline(kernel_cmdline)
        uki = uki_authenticode_from_log(parse_event_log(firmware_log)) if firmware_log else ""
    except AicertError as exc:
        raise SessionError(f"the booted image cannot be identified: {exc.message}") from None
    return ImageIdentity(roothash, uki)


def _check_root(root: str, entrypoint: Sequence[str], environments: Sequence[str]) -> None:
    """A command runs in its environment input if it has one, else in the image's root."""
    expected = environments[0] if len(environments) == 1 else IMAGE_ROOT
    if len(environments) > 1 or root != expected:
        raise SessionError(f"the command's root {root!r} is not its environment {expected!r}")
    if entrypoint and root == IMAGE_ROOT:
        raise SessionError("an entrypoint needs an environment")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MeasuredSession:
    def __init__(
        self,
        tpm: SessionTpm,
        *,
        agent_version: str,
        boot_id: str,
        key: ec.EllipticCurvePrivateKey,
        intermediates: Sequence[bytes] = (),
        kernel_cmdline: str = "",
    ) -> None:
        """``kernel_cmdline`` is /proc/cmdline, whose ``roothash=`` names the image's root."""
        if tpm.read_pcrs(pcrs=[APPLICATION_PCR])[APPLICATION_PCR] != bytes(32):
            raise SessionError(
                "PCR 15 is not zero: something was measured before this agent started "
                "(one job per boot; reboot the VM for a new job)"
            )
        self._tpm = tpm
        self._key = key
        self._image = image_identity(kernel_cmdline, tpm.firmware_event_log())
        self._intermediates = tuple(intermediates)
        self._records: list[CelRecord] = []
        self._public_der = key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self._start = AgentStart(agent_version, boot_id, agent_key_id(self._public_der))
        self._claim: SessionClaim | None = None
        self._inputs: list[InputMeasured] = []
        self._gpus: tuple[GpuRecord, ...] | None = None
        self._command: CommandStarted | None = None
        self._exit: CommandExited | None = None
        self._outputs: list[OutputMeasured] = []
        self._certified: dict[str, _Certified] = {}
        self._evaluations: list[Evaluation] = []
        self._eval_inputs: list[Artifact] = []
        self._started_on = ""
        self._claimed_on = ""
        self._phase = _Phase.STARTED
        self._measure(self._start)

    @property
    def agent_public_key(self) -> bytes:
        return self._public_der

    @property
    def records(self) -> tuple[CelRecord, ...]:
        return tuple(self._records)

    def _measure(self, event: SessionEvent) -> None:
        record = make_record(len(self._records), event.to_content())
        # Extend before logging: a log entry must never claim what the TPM lacks.
        self._tpm.extend(APPLICATION_PCR, canonicalize(record.content))
        self._records.append(record)

    def _require(self, phase: _Phase, step: str) -> None:
        if self._phase != phase:
            raise SessionError(f"cannot {step} now: the session is {self._phase.name.lower()}")

    def claim(self, owner: str, nonce: str, intermediates: Sequence[bytes] = ()) -> None:
        """Record the owner and nonce; ``intermediates`` are CA certificates the owner offers
        for the AK chain (untrusted: the verifier validates the chain)."""
        self._require(_Phase.STARTED, "claim the session")
        self._intermediates += tuple(intermediates)
        self._claim = SessionClaim(owner, nonce)
        self._measure(self._claim)
        self._claimed_on = _now()
        self._phase = _Phase.CLAIMED

    def add_gpus(self, gpus: Sequence[GpuRecord]) -> None:
        """Record the GPUs of the VM (once, right after the claim: their attestation nonce
        derives from the claim's), one ``gpu`` event each."""
        self._require(_Phase.CLAIMED, "record the GPUs")
        if self._gpus is not None or self._inputs:
            raise SessionError("the GPUs are recorded once, before the first input")
        for g in gpus:
            self._measure(
                GpuObserved(
                    g.model, g.uuid, g.driver_version, g.vbios_version, g.cc_mode, g.evidence_sha256
                )
            )
        self._gpus = tuple(gpus)

    def add_input(self, role: str, name: str, sha256: str, source: str = "") -> None:
        self._require(_Phase.CLAIMED, "add an input")
        if role not in INPUT_ROLES:
            raise SessionError(f"unknown input role {role!r}; use one of {', '.join(INPUT_ROLES)}")
        if any(i.name == name for i in self._inputs):
            raise SessionError(f"an input named {name!r} was already measured")
        _check_source(source)
        event = InputMeasured(role, name, sha256, source)
        self._measure(event)
        self._inputs.append(event)

    def start_command(
        self,
        argv: Sequence[str],
        output_path: str,
        root: str = IMAGE_ROOT,
        entrypoint: Sequence[str] = (),
    ) -> None:
        """``root``: IMAGE_ROOT or the environment input the command runs in;
        ``entrypoint``: the environment's Entrypoint run before ``argv``, if asked for."""
        self._require(_Phase.CLAIMED, "start the command")
        _check_root(root, entrypoint, [i.name for i in self._inputs if i.role == "environment"])
        self._command = CommandStarted(tuple(argv), output_path, root, tuple(entrypoint))
        self._measure(self._command)
        self._started_on = _now()
        self._phase = _Phase.RUNNING

    def command_exited(self, status: int) -> None:
        self._require(_Phase.RUNNING, "record the exit status")
        self._exit = CommandExited(status)
        self._measure(self._exit)
        self._phase = _Phase.EXITED

    def add_output(self, name: str, manifest: TreeManifest, sha256s: Mapping[str, str]) -> None:
        """Measure the output tree ``manifest``; ``sha256s`` holds the plain SHA-256 of its
        files (see :func:`aicert.verifier.digest.file_subjects.plain_sha256s`), for the subjects."""
        self._require(_Phase.EXITED, "add an output")
        if self._exit is None or self._exit.exit_status != 0:
            raise SessionError("the command failed: its outputs are not certified")
        certified = _certified(name, manifest, sha256s)
        event = OutputMeasured(name, manifest.digest)
        self._measure(event)
        self._outputs.append(event)
        self._certified[name] = certified

    def describe_weights(
        self, name: str, manifest: TreeManifest, sha256s: Mapping[str, str]
    ) -> None:
        """Name the files of the measured ``weights`` input an evaluation-only job certifies."""
        if self._phase not in (_Phase.CLAIMED, _Phase.EVALUATING) or self._command:
            raise SessionError("only an evaluation-only job describes a weights input")
        if not any(
            i.role == "weights" and i.name == name and i.sha256 == manifest.digest
            for i in self._inputs
        ):
            raise SessionError(f"no weights input {name!r} with tree digest {manifest.digest}")
        self._certified[name] = _certified(name, manifest, sha256s)

    def evaluated_weights(self) -> tuple[str, ...]:
        """Digests evaluations may run on: the outputs, or the weights inputs (evaluation only)."""
        if self._outputs:
            return tuple(o.sha256 for o in self._outputs)
        return tuple(i.sha256 for i in self._inputs if i.role == "weights")

    def _enter_evaluation(self, step: str) -> None:
        if self._phase == _Phase.CLAIMED and not self._command and self.evaluated_weights():
            self._phase = _Phase.EVALUATING  # an evaluation-only job: weights are an input
        elif self._phase == _Phase.EXITED and self._outputs:
            self._phase = _Phase.EVALUATING
        self._require(_Phase.EVALUATING, step)

    def add_evaluation_input(
        self, evaluation: str, role: str, name: str, sha256: str, source: str = ""
    ) -> None:
        """Measure an input of an evaluation (its code or data set) before it runs."""
        self._enter_evaluation("add an evaluation input")
        if role not in ("eval-code", "eval-data", "eval-environment"):
            raise SessionError(
                "evaluation inputs have role eval-code, eval-data or eval-environment, "
                f"not {role!r}"
            )
        full_name = f"{evaluation}/{name}"
        _check_source(source)
        self._measure(InputMeasured(role, full_name, sha256, source))
        self._eval_inputs.append(Artifact(full_name, sha256, role, source))

    def add_evaluation(
        self,
        name: str,
        argv: Sequence[str],
        weights_sha256: str,
        results_sha256: str,
        metrics: Mapping[str, int | float],
        root: str = IMAGE_ROOT,
        entrypoint: Sequence[str] = (),
    ) -> None:
        """Bind a successful evaluation's results file and metrics to the weights it ran on."""
        self._enter_evaluation("record an evaluation")
        if weights_sha256 not in self.evaluated_weights():
            raise SessionError("the evaluation ran on weights this session does not certify")
        prefix = f"{name}/"
        inputs = tuple(i for i in self._eval_inputs if i.name.startswith(prefix))
        _check_root(root, entrypoint, [i.name for i in inputs if i.role == "eval-environment"])
        self._eval_inputs = [i for i in self._eval_inputs if not i.name.startswith(prefix)]
        event = EvaluationMeasured(
            name,
            tuple(argv),
            weights_sha256,
            results_sha256,
            dict(metrics),
            0,
            root,
            tuple(entrypoint),
        )
        self._measure(event)
        self._evaluations.append(
            Evaluation(
                name,
                tuple(argv),
                inputs,
                weights_sha256,
                results_sha256,
                dict(metrics),
                0,
                root,
                tuple(entrypoint),
            )
        )

    def lock(self) -> None:
        """End the session: nothing more is measured into PCR 15."""
        if self._phase == _Phase.LOCKED:
            return
        self._measure(SessionLocked(len(self._records)))
        self._phase = _Phase.LOCKED

    def finish(self) -> Certificate:
        """Lock, sign the statement, quote PCRs 0-15 bound to it, and assemble the certificate."""
        if self._phase not in (_Phase.EXITED, _Phase.EVALUATING):
            raise SessionError(
                f"cannot issue a certificate: the session is {self._phase.name.lower()}"
            )
        if self._eval_inputs:
            raise SessionError("an evaluation's inputs were measured but it did not complete")
        if self._outputs:
            names = [o.name for o in self._outputs]
        elif self._evaluations:
            names = [i.name for i in self._inputs if i.role == "weights"]
        else:
            raise SessionError("no output was measured: there is nothing to certify")
        missing = [n for n in names if n not in self._certified]
        if missing:
            raise SessionError(f"the files of {', '.join(missing)} were not described")
        certified = [self._certified[n] for n in names]
        assert self._claim is not None  # noqa: S101 - set in the CLAIMED phase
        self.lock()
        provenance = TrainingProvenance(
            subjects=tuple(c.tree for c in certified),
            file_subjects=tuple(f for c in certified for f in c.files),
            image=self._image,
            dependencies=tuple(Artifact(i.name, i.sha256, i.role, i.source) for i in self._inputs),
            command=self._command.argv if self._command else (),
            output_path=self._command.output_path if self._command else "",
            root=self._command.root if self._command else IMAGE_ROOT,
            entrypoint=self._command.entrypoint if self._command else (),
            nonce=self._claim.nonce,
            agent_version=self._start.agent_version,
            boot_id=self._start.boot_id,
            agent_key_sha256=self._start.agent_key_sha256,
            owner=self._claim.owner,
            exit_status=0,
            started_on=self._started_on or self._claimed_on,
            finished_on=_now(),
            evaluations=tuple(self._evaluations),
            gpus=self._gpus or (),
        )
        envelope = sign_envelope(
            IN_TOTO_PAYLOAD_TYPE,
            provenance.statement_bytes(),
            self._key,
            self._start.agent_key_sha256,
        )
        quote = self._tpm.quote(QUOTED_PCRS, envelope.pae_sha256())
        # Right after the quote: a NitroTPM document then shows the PCRs of its moment.
        ak = self._tpm.ak_evidence(self._public_der, self._intermediates)
        return Certificate(
            envelope=envelope,
            agent_public_key=self._public_der,
            tpm=TpmEvidence(
                attest=quote.attest,
                signature=quote.signature,
                pcrs=quote.pcr_values,
                ak_public=self._tpm.ak_public(),
                ak_certificates=ak.certificates,
                firmware_event_log=self._tpm.firmware_event_log(),
                cel_log=self.records,
                nitro_document=ak.nitro_document,
            ),
        )
