"""Check that the PCR 15 log and the statement tell the same story, event by event.

The verifier derives from the statement the exact sequence of events an honest
agent must have measured, and compares it with the replayed CEL log. Any event
the statement does not account for, or any claim the log does not back, fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import StatementMismatchError
from ..logs.cel import CelRecord
from ..logs.session_events import (
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
    parse_event,
)
from .provenance import TrainingProvenance


def expected_events(prov: TrainingProvenance) -> tuple[SessionEvent, ...]:
    """The events an honest agent records for the session the statement describes."""
    body: list[SessionEvent] = [
        AgentStart(prov.agent_version, prov.boot_id, prov.agent_key_sha256),
        SessionClaim(prov.owner, prov.nonce),
        *(
            GpuObserved(
                g.model, g.uuid, g.driver_version, g.vbios_version, g.cc_mode, g.evidence_sha256
            )
            for g in prov.gpus
        ),
        *(InputMeasured(d.role, d.name, d.sha256, d.source) for d in prov.dependencies),
    ]
    if not prov.evaluation_only:
        body += [
            CommandStarted(prov.command, prov.output_path, prov.root, prov.entrypoint),
            CommandExited(prov.exit_status),
            *(OutputMeasured(s.name, s.sha256) for s in prov.subjects),
        ]
    for ev in prov.evaluations:
        body += [InputMeasured(i.role, i.name, i.sha256, i.source) for i in ev.inputs]
        body.append(
            EvaluationMeasured(
                ev.name,
                ev.command,
                ev.weights_sha256,
                ev.results_sha256,
                ev.metrics,
                ev.exit_status,
                ev.root,
                ev.entrypoint,
            )
        )
    # The lock event counts the records before it.
    return (*body, SessionLocked(len(body)))


def session_events(records: Sequence[CelRecord]) -> tuple[SessionEvent, ...]:
    return tuple(parse_event(r.content, f"CEL record {r.recnum}") for r in records)


def match_statement(records: Sequence[CelRecord], prov: TrainingProvenance) -> None:
    """Raise StatementMismatchError at the first event where log and statement differ."""
    actual = session_events(records)
    expected = expected_events(prov)
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            raise StatementMismatchError(
                f"CEL record {i} is {_describe(got)} but the statement implies {_describe(want)}"
            )
    if len(actual) < len(expected):
        raise StatementMismatchError(
            f"CEL log ends after {len(actual)} records; the statement implies "
            f"{len(expected)}, next {_describe(expected[len(actual)])}"
        )
    if len(actual) > len(expected):
        raise StatementMismatchError(
            f"CEL log has {len(actual) - len(expected)} records after the lock event "
            f"that the statement does not account for"
        )


def _describe(event: SessionEvent) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in event.to_content().items() if k != "event")
    return f"{event.kind}({fields})"
