"""The SLSA statement and its event-by-event match against the PCR 15 log."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
from aicert.verifier.cel import make_record
from aicert.verifier.errors import FormatError, StatementMismatchError
from aicert.verifier.provenance import Artifact, TrainingProvenance, parse_statement
from aicert.verifier.session_events import CommandExited, parse_event
from aicert.verifier.statement_match import expected_events, match_statement
from hypothesis import given
from hypothesis import strategies as st

H = "ab" * 32


def _prov(**changes: object) -> TrainingProvenance:
    base = TrainingProvenance(
        subjects=(Artifact("weights", "cd" * 32),),
        dependencies=(
            Artifact("train", H, "code", "upload"),
            Artifact("mnist", "ef" * 32, "data", "https://example.org/mnist.npz"),
        ),
        command=("python3", "train.py", "--epochs", "1"),
        output_path="out",
        nonce="00" * 16,
        agent_version="0.1.0",
        boot_id="b" * 32,
        agent_key_sha256="12" * 32,
        owner="34" * 32,
        exit_status=0,
        started_on="2026-11-25T10:00:00Z",
        finished_on="2026-11-25T10:05:00Z",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _records(prov: TrainingProvenance) -> list:  # type: ignore[type-arg]
    return [make_record(i, e.to_content()) for i, e in enumerate(expected_events(prov))]


def test_statement_round_trips_and_is_standard() -> None:
    prov = _prov()
    raw = prov.statement_bytes()
    doc = json.loads(raw)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "weights", "digest": {"sha256": "cd" * 32}}]
    assert parse_statement(raw) == prov


def test_an_honest_log_matches() -> None:
    prov = _prov()
    match_statement(_records(prov), prov)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonce": "11" * 16}, "record 1 is session-claim"),
        ({"subjects": (Artifact("weights", "00" * 32),)}, "record 6 is output"),
        ({"command": ("python3", "evil.py")}, "record 4 is command"),
        ({"dependencies": ()}, "record 2 is input"),
    ],
)
def test_statement_claims_not_in_the_log_fail(change: dict[str, object], message: str) -> None:
    honest = _prov()
    with pytest.raises(StatementMismatchError, match=message):
        match_statement(_records(honest), _prov(**change))


def test_extra_or_missing_records_fail() -> None:
    prov = _prov()
    records = _records(prov)
    extra = [*records, make_record(len(records), CommandExited(1).to_content())]
    with pytest.raises(StatementMismatchError, match="after the lock event"):
        match_statement(extra, prov)
    with pytest.raises(StatementMismatchError, match="ends after"):
        match_statement(records[:-1], prov)


def test_unknown_events_and_fields_are_refused() -> None:
    with pytest.raises(FormatError, match="unknown aicert event"):
        parse_event({"event": "telemetry"}, "r")
    with pytest.raises(FormatError, match="unknown fields"):
        parse_event({"event": "command-exit", "exitStatus": 0, "note": "x"}, "r")
    with pytest.raises(FormatError, match="must be of type int"):
        parse_event({"event": "command-exit", "exitStatus": "0"}, "r")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("_type"),
        lambda d: d.update(predicateType="https://slsa.dev/provenance/v0.2"),
        lambda d: d["subject"][0]["digest"].update(sha256="XYZ"),
        lambda d: d["predicate"].update(aicert_exitStatus="0"),
        lambda d: d["predicate"]["runDetails"]["builder"].update(id="someone-else"),
    ],
)
def test_malformed_statements_are_format_errors(mutate: object) -> None:
    doc = json.loads(_prov().statement_bytes())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(FormatError):
        parse_statement(json.dumps(doc).encode())


@given(st.binary(max_size=300))
def test_random_statement_bytes_raise_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_statement(data)
