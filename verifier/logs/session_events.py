"""The vocabulary of aicert's PCR 15 events: one typed record per measured step.

A session's CEL log reads: ``agent-start`` → ``session-claim`` → one ``gpu``
per GPU the agent saw (none without a GPU) → one ``input``
per input (code, data, base model, job configuration) → ``command`` →
``command-exit`` → one ``output`` per output → for each evaluation, its
``input`` events then ``evaluation`` → ``lock``. An evaluation-only session
has no command, exit or output: its weights are an input. The agent builds these
records; the verifier parses them back, refusing anything it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Self

from ..errors import FormatError
from ..statement.canonical_json import JsonValue

INPUT_ROLES = (
    "code",
    "data",
    "base-model",
    "config",
    "weights",
    "certificate",
    "eval-code",
    "eval-data",
    # An OCI image the command ran in, by manifest digest (source: its pkg:oci URL).
    "environment",
    "eval-environment",
)

Metrics = Mapping[str, int | float]
# A command's ``root`` when it ran in the measured image's own root file system; otherwise
# the root is the name of its environment input (names never hold a colon).
IMAGE_ROOT = "aicert:image-root"


@dataclass(frozen=True)
class SessionEvent:
    """Base of every event; ``kind`` is the ``event`` field of the CEL content."""

    kind: ClassVar[str]

    def to_content(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {"event": self.kind}
        for name, value in asdict(self).items():
            body[_camel(name)] = list(value) if isinstance(value, tuple) else value
        return body

    @classmethod
    def from_content(cls, content: Mapping[str, Any], where: str) -> Self:
        expected = {"event"} | {_camel(f.name) for f in fields(cls)}
        unknown = set(content) - expected
        if unknown:
            raise FormatError(f"{where}: unknown fields {sorted(unknown)} in a {cls.kind} event")
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = _camel(f.name)
            if key not in content:
                raise FormatError(f"{where}: {cls.kind} event lacks {key!r}")
            values[f.name] = _coerce(content[key], str(f.type), f"{where}: {key}")
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _coerce(value: object, type_name: str, where: str) -> object:
    if type_name == "str":
        if isinstance(value, str):
            return value
    elif type_name == "int":
        if type(value) is int:
            return value
    elif type_name == "tuple[str, ...]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif type_name == "Metrics":
        if isinstance(value, Mapping) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            return dict(value)
    else:  # pragma: no cover - only the annotations below exist
        raise FormatError(f"{where}: unsupported field type {type_name}")
    raise FormatError(f"{where} must be of type {type_name}")


@dataclass(frozen=True)
class AgentStart(SessionEvent):
    """The agent's first event: binds its TLS/signing key to this boot (attested TLS)."""

    kind: ClassVar[str] = "agent-start"
    agent_version: str
    boot_id: str
    agent_key_sha256: str


@dataclass(frozen=True)
class SessionClaim(SessionEvent):
    """The first client became the session's owner and handed in its nonce."""

    kind: ClassVar[str] = "session-claim"
    owner: str
    nonce: str


@dataclass(frozen=True)
class GpuObserved(SessionEvent):
    """A GPU of the VM, as the statement's ``aicert_gpus`` records it; ``evidence_sha256``
    is the digest of its attestation evidence (empty for a GPU without)."""

    kind: ClassVar[str] = "gpu"
    model: str
    uuid: str
    driver_version: str
    vbios_version: str
    cc_mode: str
    evidence_sha256: str


@dataclass(frozen=True)
class InputMeasured(SessionEvent):
    kind: ClassVar[str] = "input"
    role: str
    name: str
    sha256: str
    source: str


@dataclass(frozen=True)
class CommandStarted(SessionEvent):
    """The training command started; ``root`` is what ran as ``/`` (IMAGE_ROOT or an
    environment input's name), ``entrypoint`` the image Entrypoint run before ``argv``
    (empty unless the job asked for it)."""

    kind: ClassVar[str] = "command"
    argv: tuple[str, ...]
    output_path: str
    root: str
    entrypoint: tuple[str, ...]


@dataclass(frozen=True)
class CommandExited(SessionEvent):
    kind: ClassVar[str] = "command-exit"
    exit_status: int


@dataclass(frozen=True)
class OutputMeasured(SessionEvent):
    kind: ClassVar[str] = "output"
    name: str
    sha256: str


@dataclass(frozen=True)
class EvaluationMeasured(SessionEvent):
    """An evaluation ran on the weights; its results file and metrics are bound here."""

    kind: ClassVar[str] = "evaluation"
    name: str
    argv: tuple[str, ...]
    weights_sha256: str
    results_sha256: str
    metrics: Metrics
    exit_status: int
    root: str
    entrypoint: tuple[str, ...]


@dataclass(frozen=True)
class SessionLocked(SessionEvent):
    """The last event: nothing may be measured into PCR 15 after it."""

    kind: ClassVar[str] = "lock"
    records: int


EVENT_TYPES: dict[str, type[SessionEvent]] = {
    cls.kind: cls
    for cls in (
        AgentStart,
        SessionClaim,
        GpuObserved,
        InputMeasured,
        CommandStarted,
        CommandExited,
        OutputMeasured,
        EvaluationMeasured,
        SessionLocked,
    )
}


def parse_event(content: Mapping[str, Any], where: str) -> SessionEvent:
    kind = content.get("event")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise FormatError(f"{where}: unknown aicert event {kind!r}")
    return EVENT_TYPES[kind].from_content(content, where)
