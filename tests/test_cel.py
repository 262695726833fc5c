"""CEL-JSON records: parsing, digest recomputation, replay to PCR 15."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from aicert.verifier.errors import CelLogError, FormatError
from aicert.verifier.logs.cel import make_record, parse_cel, replay_cel, verify_cel
from hypothesis import given
from hypothesis import strategies as st


def _log() -> list[dict[str, object]]:
    return [make_record(i, {"event": "x", "n": i}).to_json() for i in range(3)]


def test_replay_is_the_tpm_extend_chain() -> None:
    records = parse_cel(_log())
    pcr = bytes(32)
    for r in records:
        # The digest is SHA-256 of the RFC 8785 form of the content.
        assert r.sha256 == hashlib.sha256(b'{"event":"x","n":%d}' % r.recnum).digest()
        pcr = hashlib.sha256(pcr + r.sha256).digest()
    assert replay_cel(records) == pcr
    verify_cel(records, pcr)


def test_edited_content_is_caught() -> None:
    log = _log()
    log[1]["content"] = {"event": "x", "n": 7}
    records = parse_cel(log)
    with pytest.raises(CelLogError, match="record 1 digest does not match"):
        verify_cel(records, replay_cel(records))


def test_reordered_and_dropped_records_are_caught() -> None:
    log = _log()
    pcr = replay_cel(parse_cel(log))
    with pytest.raises(CelLogError, match="missing or reordered"):
        verify_cel(parse_cel([log[0], log[2], log[1]]), pcr)
    dropped = parse_cel(log[:2])
    with pytest.raises(CelLogError, match="replays PCR 15"):
        verify_cel(dropped, pcr)


def test_wrong_pcr_is_caught() -> None:
    log = _log()
    log[0]["pcr"] = 16
    with pytest.raises(CelLogError, match="extends PCR 16"):
        verify_cel(parse_cel(log), bytes(32))


@pytest.mark.parametrize(
    "bad",
    [
        {},
        [1],
        [{"recnum": "0", "pcr": 15, "digests": [], "content_type": "aicert", "content": {}}],
        [{"recnum": 0, "pcr": 15, "digests": [{"hashAlg": "sha1", "digest": "00"}]}],
        [{"recnum": 0, "pcr": 15, "digests": [{"hashAlg": "sha256", "digest": "zz" * 32}]}],
    ],
)
def test_malformed_logs_are_format_errors(bad: object) -> None:
    with pytest.raises(FormatError):
        parse_cel(bad)


def _edited(change: Callable[[dict[str, Any]], object]) -> list[dict[str, Any]]:
    log = _log()
    change(log[1])
    return log


@pytest.mark.parametrize(
    "log",
    [
        # Two SHA-256 digests: which one was extended would be the parser's choice.
        _edited(lambda r: r["digests"].append({"hashAlg": "sha256", "digest": "00" * 32})),
        _edited(lambda r: r["digests"].append({"hashAlg": "sha384", "digest": "00" * 48})),
        _edited(lambda r: r["digests"][0].update(digest=r["digests"][0]["digest"].upper())),
        _edited(lambda r: r["digests"][0].update(note="x")),
        _edited(lambda r: r.update(extra=1)),
        _edited(lambda r: r.pop("content_type")),
    ],
)
def test_records_have_one_encoding(log: list[dict[str, Any]]) -> None:
    parse_cel(_log())
    with pytest.raises(FormatError):
        parse_cel(log)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["recnum", "pcr", "digests", "content_type", "content"]),
            st.none() | st.integers() | st.text() | st.lists(st.dictionaries(st.text(), st.text())),
        )
    )
)
def test_random_records_raise_only_format_errors(obj: list[object]) -> None:
    with contextlib.suppress(FormatError):
        parse_cel(obj)
