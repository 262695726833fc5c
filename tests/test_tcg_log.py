"""The firmware event log parser, against real logs, tpm2_eventlog and hostile input."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from aicert.verifier.errors import AicertError, FormatError
from aicert.verifier.logs.tcg_events import event_type_name
from aicert.verifier.logs.tcg_log import (
    MAX_EVENT_SIZE,
    Event,
    EventLog,
    LogFormat,
    events_for_pcr,
    parse_event_log,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcg_log_support import (
    HASH_NAMES,
    ORACLE_LOGS,
    OVMF_LOG,
    SHA1_ID,
    SHA256_ID,
    SHA384_ID,
    SHORT_LOG,
    LogBuilder,
    agile_record,
    all_real_logs,
    real_log,
    sha1_record,
    spec_id03,
    tpm2_eventlog,
)

EV_NO_ACTION, EV_SEPARATOR, EV_EFI_ACTION = 3, 4, 0x80000007
REAL_LOGS = all_real_logs()


def _log_file(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_bytes(real_log(name))
    return path


# ---------------------------------------------------------------- real logs


@pytest.mark.parametrize(
    ("name", "fmt", "count", "banks"),
    [
        ("ovmf", LogFormat.CRYPTO_AGILE, 40, (SHA1_ID, SHA256_ID, SHA384_ID, 0x000D)),
        ("coreos", LogFormat.CRYPTO_AGILE, 75, (SHA1_ID, SHA256_ID, SHA384_ID)),
        ("ubuntu", LogFormat.CRYPTO_AGILE, 105, (SHA1_ID, SHA256_ID, SHA384_ID)),
        ("sb_cert", LogFormat.CRYPTO_AGILE, 14, (SHA1_ID, SHA256_ID, SHA384_ID)),
        ("crypto_agile", LogFormat.CRYPTO_AGILE, 26, (SHA256_ID,)),
        ("ebs_missing", LogFormat.SHA1, 38, (SHA1_ID,)),
        ("option_rom", LogFormat.SHA1, 61, (SHA1_ID,)),
        ("gcp", LogFormat.SHA1, 21, (SHA1_ID,)),
    ],
)
def test_real_logs_parse(name: str, fmt: LogFormat, count: int, banks: tuple[int, ...]) -> None:
    log = parse_event_log(REAL_LOGS[name])
    assert log.format is fmt
    assert len(log.events) == count
    assert log.algorithms == banks
    for event in log.events:
        assert event.event_type == EV_NO_ACTION or set(event.digests) == set(banks)


def test_ovmf_header_and_numbering() -> None:
    log = parse_event_log(OVMF_LOG.read_bytes())
    assert log.spec is not None
    assert log.spec.signature == "Spec ID Event03"
    assert (log.spec.spec_version_major, log.spec.spec_version_minor) == (2, 0)
    assert log.spec.uintn_size == 2
    assert log.uintn_bytes == 8
    assert log.spec.algorithms == ((4, 20), (11, 32), (12, 48), (13, 64))
    # Record 0 is the header, as tpm2_eventlog counts.
    assert [e.index for e in log.events] == list(range(1, 41))
    assert log.events[0].offset == 32 + 45
    first = log.events[0]
    assert (first.pcr, first.event_type) == (0, 0x00000008)
    assert first.data.decode("utf-16-le").rstrip("\x00") == "2025.02-8+deb13u1"


def test_sha1_log_without_header_starts_at_zero() -> None:
    log = parse_event_log(REAL_LOGS["gcp"])
    assert log.spec is None
    assert log.events[0].index == 0
    assert log.uintn_bytes == 8


def test_windows_pcr_minus_one_no_action_event() -> None:
    last = parse_event_log(REAL_LOGS["option_rom"]).events[-1]
    assert (last.pcr, last.event_type) == (0xFFFFFFFF, EV_NO_ACTION)
    assert "Windows AIK".encode("utf-16-le") in last.data


def test_events_for_pcr() -> None:
    log = parse_event_log(OVMF_LOG.read_bytes())
    pcr4 = events_for_pcr(log, 4)
    assert [event_type_name(e.event_type) for e in pcr4] == [
        "EV_EFI_ACTION",
        "EV_SEPARATOR",
        "EV_EFI_BOOT_SERVICES_APPLICATION",
        "EV_EFI_BOOT_SERVICES_APPLICATION",
    ]
    assert all(isinstance(e, Event) and e.pcr == 4 for e in pcr4)
    assert events_for_pcr(log, 15) == ()


@pytest.mark.parametrize("name", ORACLE_LOGS)
def test_events_equal_tpm2_eventlog(name: str, tmp_path: Path) -> None:
    """Count, PCR, type and every digest of every event agree with tpm2-tools."""
    log = parse_event_log(REAL_LOGS[name])
    oracle = tpm2_eventlog(_log_file(name, tmp_path))
    theirs = oracle.events[1:] if log.format is LogFormat.CRYPTO_AGILE else oracle.events
    assert len(theirs) == len(log.events)
    for ours, their in zip(log.events, theirs, strict=True):
        assert ours.pcr == their.pcr
        assert event_type_name(ours.event_type) == their.event_type
        assert {HASH_NAMES[alg]: d for alg, d in ours.digests.items()} == their.digests


# ---------------------------------------------------------------- truncation and padding


def test_short_no_action_log_is_rejected() -> None:
    with pytest.raises(FormatError, match=r"StartupLocality.*truncated"):
        parse_event_log(SHORT_LOG.read_bytes())


def test_empty_log_is_rejected() -> None:
    for data in (b"", bytes(64), b"\xff" * 64):
        with pytest.raises(FormatError, match="empty"):
            parse_event_log(data)


def test_truncation_anywhere_but_a_record_boundary_is_an_error() -> None:
    """Cut the log at every offset: only a record boundary gives a (shorter) valid log.

    A cut that leaves nothing but 0x00 or 0xFF bytes after a boundary (a partial record
    starting with PCR index 0) reads as padding, by design: it cannot be told apart from a
    padded log, and the replay against the quoted PCRs still catches the missing events.
    """
    data = OVMF_LOG.read_bytes()
    log = parse_event_log(data)
    boundaries = sorted({e.offset for e in log.events} | {len(data)})
    for cut in range(1, len(data)):
        boundary = max((b for b in boundaries if b <= cut), default=None)
        rest = data[boundary:cut] if boundary is not None else b"x"
        if rest.count(0) == len(rest) or rest.count(0xFF) == len(rest):
            shorter = parse_event_log(data[:cut])
            assert shorter.events == tuple(e for e in log.events if e.offset < boundary)
        else:
            with pytest.raises(FormatError):
                parse_event_log(data[:cut])


def test_truncated_message_names_the_event() -> None:
    data = OVMF_LOG.read_bytes()
    with pytest.raises(FormatError, match=r"truncated reading event 40 event data"):
        parse_event_log(data[:-5])


@pytest.mark.parametrize("name", ["ovmf", "gcp", "crypto_agile"])
@pytest.mark.parametrize("pad", [b"\x00", b"\xff"])
def test_trailing_padding_is_ignored(name: str, pad: bytes) -> None:
    data = REAL_LOGS[name]
    assert parse_event_log(data + pad * 4096).events == parse_event_log(data).events


@pytest.mark.parametrize("tail", [b"\x00\x00\xff", b"\x01", b"\xff\xff\xff\xff\x00"])
def test_other_trailing_bytes_are_an_error(tail: bytes) -> None:
    with pytest.raises(FormatError):
        parse_event_log(OVMF_LOG.read_bytes() + tail)


# ---------------------------------------------------------------- header and record checks


def _header(body: bytes, *, pcr: int = 0, digest: bytes = bytes(20)) -> bytes:
    return sha1_record(pcr, EV_NO_ACTION, digest, body)


def _separator(algs: tuple[int, ...] = (SHA1_ID,)) -> bytes:
    return LogBuilder(algs).add(0, EV_SEPARATOR, bytes(4)).build()


def test_minimal_builder_log_parses() -> None:
    log = parse_event_log(_separator())
    assert isinstance(log, EventLog)
    assert [(e.pcr, e.event_type, e.data) for e in log.events] == [(0, EV_SEPARATOR, bytes(4))]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (spec_id03((SHA1_ID,))[:-1] + b"\x05abc", "truncated"),
        (spec_id03((SHA1_ID,)) + b"x", "trailing"),
        (spec_id03((SHA1_ID,), uintn=3), "uintnSize 3"),
        (spec_id03(())[:-1] + b"\x00", "0 digest algorithms"),
        (
            b"Spec ID Event03\x00" + struct.pack("<IBBBBIHHB", 0, 0, 2, 0, 2, 1, 4, 32, 0),
            "digest size 32, expected 20",
        ),
        (
            b"Spec ID Event03\x00" + struct.pack("<IBBBBIHHB", 0, 0, 2, 0, 2, 1, 0x99, 32, 0),
            "unknown digest algorithm 0x0099",
        ),
        (
            b"Spec ID Event03\x00" + struct.pack("<IBBBBIHHHHB", 0, 0, 2, 0, 2, 2, 4, 20, 4, 20, 0),
            "listed twice",
        ),
        (
            b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 0xFFFFFFFF),
            "digest algorithms",
        ),
    ],
)
def test_bad_spec_id_header(body: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_event_log(_header(body))


def test_header_must_be_pcr0_with_zero_digest() -> None:
    with pytest.raises(FormatError, match="PCR 0 with a zero digest"):
        parse_event_log(_header(spec_id03(), pcr=1))
    with pytest.raises(FormatError, match="PCR 0 with a zero digest"):
        parse_event_log(_header(spec_id03(), digest=b"\x01" * 20))


def test_spec_id_event00_heads_a_sha1_log() -> None:
    body = b"Spec ID Event00\x00" + struct.pack("<IBBBBB", 0, 2, 1, 0, 2, 0)
    record = sha1_record(4, EV_SEPARATOR, b"\x11" * 20, bytes(4))
    log = parse_event_log(_header(body) + record)
    assert log.format is LogFormat.SHA1
    assert log.spec is not None
    assert log.spec.signature == "Spec ID Event00"
    assert log.algorithms == (SHA1_ID,)
    assert [(e.index, e.pcr) for e in log.events] == [(1, 4)]


def _agile(records: bytes, algs: tuple[int, ...] = (SHA1_ID, SHA256_ID)) -> bytes:
    return _header(spec_id03(algs)) + records


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (agile_record(0, 4, [], bytes(4)), "0 digests"),
        (
            agile_record(0, 4, [(SHA1_ID, bytes(20))] * 3, bytes(4)),
            "3 digests, expected 1 to 2",
        ),
        (agile_record(0, 4, [(SHA384_ID, bytes(48))], bytes(4)), "0x000c, not listed"),
        (agile_record(0, 4, [(SHA1_ID, bytes(20))] * 2, bytes(4)), "two digests"),
        (agile_record(24, 4, [(SHA1_ID, bytes(20))], bytes(4)), "names PCR 24"),
        (agile_record(0xFFFFFFFF, 4, [(SHA1_ID, bytes(20))], bytes(4)), "names PCR 4294967295"),
    ],
)
def test_bad_agile_record(record: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_event_log(_agile(record))


def test_event_size_limit() -> None:
    head = struct.pack("<IIIH", 0, 4, 1, SHA1_ID) + bytes(20)
    record = head + struct.pack("<I", MAX_EVENT_SIZE + 1)
    with pytest.raises(FormatError, match="more than the 16777216 allowed"):
        parse_event_log(_agile(record + bytes(64)))


def test_pcr_minus_one_is_allowed_only_for_no_action() -> None:
    ok = agile_record(0xFFFFFFFF, EV_NO_ACTION, [(SHA1_ID, bytes(20))], b"info")
    assert parse_event_log(_agile(ok)).events[0].pcr == 0xFFFFFFFF


def test_digests_are_read_only() -> None:
    event = parse_event_log(_separator()).events[0]
    with pytest.raises(TypeError):
        event.digests[SHA1_ID] = b"x"  # type: ignore[index]


# ---------------------------------------------------------------- hostile input


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_event_log(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(sorted(REAL_LOGS)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    cut=st.integers(min_value=0),
)
def test_mutated_real_logs_raise_only_format_error(
    name: str, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(REAL_LOGS[name])
    for position, value in edits:
        data[position % len(data)] = value
    data = data[: len(data) - cut % 64]
    with contextlib.suppress(AicertError):
        parse_event_log(bytes(data))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(["ovmf", "coreos", "gcp"]),
    index=st.integers(min_value=0),
    size=st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_lying_event_sizes_raise_only_format_error(name: str, index: int, size: int) -> None:
    """Rewrite one event's eventSize field: the parser must fail cleanly or resynchronise."""
    data = bytearray(REAL_LOGS[name])
    log = parse_event_log(bytes(data))
    event = log.events[index % len(log.events)]
    if log.format is LogFormat.CRYPTO_AGILE:
        size_at = event.offset + 12 + sum(2 + len(d) for d in event.digests.values())
    else:
        size_at = event.offset + 8 + 20
    assert struct.unpack_from("<I", data, size_at)[0] == len(event.data)
    struct.pack_into("<I", data, size_at, size)
    with contextlib.suppress(FormatError):
        parse_event_log(bytes(data))
