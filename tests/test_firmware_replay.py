"""Firmware log replay and digest recomputation, against real PCR values and tpm2-tools."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
from pathlib import Path
from types import MappingProxyType

import pytest
from aicert.verifier.boot.firmware_replay import (
    check_event_digests,
    initial_value,
    is_data_determined,
    replay,
    verify_against_pcrs,
    verify_firmware_log,
)
from aicert.verifier.errors import AicertError, FirmwareLogError, FormatError
from aicert.verifier.logs import tcg_events as ev
from aicert.verifier.logs.tcg_log import Event, EventLog, parse_event_log
from aicert.verifier.tpm.pcr import ALGORITHMS_BY_ID, ALGORITHMS_BY_NAME, SHA1, SHA256, SHA384
from aicert.verifier.verify import UNLOGGED_EXTENDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcg_log_support import (
    ORACLE_LOGS,
    OVMF_LOG,
    SHA1_ID,
    SHA256_ID,
    LogBuilder,
    all_real_logs,
    gcp_attestation,
    real_log,
    tpm2_eventlog,
    variable_data,
)

REAL_LOGS = all_real_logs()
PARSED = {name: parse_event_log(data) for name, data in REAL_LOGS.items()}
SEPARATOR_ONLY = "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"

# testdata/ovmf-qemu/README.md: tpm2_pcrread in the booted system (PCR 11: the stub's part).
OVMF_SHA256_PCRS = {
    0: "0101271704ccc2360ddbb08438d591c23fb8a0a9cb0cebc60cefea7868833f8e",
    1: "3da7ba691c631dcb6511730cacf82442c0236cc0e4333c34a72dbc407697b179",
    2: SEPARATOR_ONLY,
    3: SEPARATOR_ONLY,
    4: "a0c60e277e5bc48c95cb972f0cc6366be104d864c712afcadda920cbcc3f82c3",
    5: "fef074428b722baa2a9f1f50f3c69bc26b6a5e3cf6a3c9110afd0911960b30ed",
    6: SEPARATOR_ONLY,
    7: "b5710bf57d25623e4019027da116821fa99f5c81e9e38b87671cc574f9281439",
    9: "a422dd940a9a83b73caae9aeae2593388a5c94286b52391bceb06c5108a0a9c5",
    11: "82701c00f35e9f7dcb28ac732cee4cadc377b5a70efa9c826ae7c5f81e0820c0",
    12: "00" * 32,
    13: "00" * 32,
    15: "00" * 32,
}


OVMF_SHA256_QUOTED = {pcr: bytes.fromhex(v) for pcr, v in OVMF_SHA256_PCRS.items()}


def _with_event(log: EventLog, position: int, event: Event) -> EventLog:
    events = list(log.events)
    events[position] = event
    return dataclasses.replace(log, events=tuple(events))


# ---------------------------------------------------------------- real PCR values


def test_ovmf_log_replays_to_the_booted_pcrs() -> None:
    log = parse_event_log(OVMF_LOG.read_bytes())
    quoted = {pcr: bytes.fromhex(value) for pcr, value in OVMF_SHA256_PCRS.items()}
    verify_firmware_log(log, SHA256, quoted, sorted(quoted))
    replayed = replay(log, SHA256)
    assert {pcr: replayed[pcr].hex() for pcr in (0, 4, 11)} == {
        pcr: OVMF_SHA256_PCRS[pcr] for pcr in (0, 4, 11)
    }


def test_the_verifier_replays_pcr_11_as_the_booted_tpm_read_it() -> None:
    # tpm2_pcrread in the booted system (shared/testdata/ovmf-qemu/README.md): the log's
    # systemd-stub events, then the four boot phases systemd-pcrphase logs elsewhere.
    booted_pcr11 = bytes.fromhex("fd491a007ec9b582218044298d5e0e41d17d4ae9f75f5eebb0d3a4a21559d09e")
    log = parse_event_log(OVMF_LOG.read_bytes())
    quoted = {pcr: bytes.fromhex(v) for pcr, v in OVMF_SHA256_PCRS.items()} | {11: booted_pcr11}
    verify_against_pcrs(log, SHA256, quoted, [9, 11], unlogged=UNLOGGED_EXTENDS)
    with pytest.raises(FirmwareLogError, match="then 4 unlogged extends"):
        verify_against_pcrs(log, SHA256, OVMF_SHA256_QUOTED, [11], unlogged=UNLOGGED_EXTENDS)


def test_gcp_log_replays_to_its_quoted_sha1_pcrs() -> None:
    attestation = gcp_attestation()
    log_json = attestation["Log"]
    assert isinstance(log_json, dict)
    quoted = {p["Index"]: base64.b64decode(p["Digest"]) for p in log_json["PCRs"]}
    assert sorted(quoted) == list(range(24))
    log = PARSED["gcp"]
    verify_firmware_log(log, SHA1, quoted, range(24))
    # PCRs 17-22 hold their all-ones reset value; the log has no events there.
    assert quoted[17] == initial_value(SHA1, 17) == b"\xff" * 20


@pytest.mark.parametrize("name", ORACLE_LOGS)
def test_replay_equals_tpm2_eventlog(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(real_log(name))
    oracle = tpm2_eventlog(path)
    log = PARSED[name]
    assert sorted(oracle.pcrs) == sorted(ALGORITHMS_BY_ID[a].name for a in log.algorithms)
    for bank, values in oracle.pcrs.items():
        assert replay(log, ALGORITHMS_BY_NAME[bank]) == values


# ---------------------------------------------------------------- digest rules on real logs


@pytest.mark.parametrize("name", sorted(REAL_LOGS))
def test_every_real_log_passes_digest_checks(name: str) -> None:
    check_event_digests(PARSED[name])


def _determined(name: str) -> list[str]:
    return [ev.event_type_name(e.event_type) for e in PARSED[name].events if is_data_determined(e)]


def test_which_real_events_are_checked() -> None:
    ovmf = _determined("ovmf")
    assert ovmf.count("EV_SEPARATOR") == 8
    assert ovmf.count("EV_EFI_VARIABLE_BOOT") == 4
    assert ovmf.count("EV_EFI_VARIABLE_DRIVER_CONFIG") == 5
    assert {"EV_S_CRTM_VERSION", "EV_EFI_GPT_EVENT", "EV_EFI_ACTION"} <= set(ovmf)
    assert "EV_IPL" not in ovmf
    assert "EV_EVENT_TAG" not in ovmf
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" not in ovmf
    # GRUB's command events in PCR 8 are checked, its file measurements in PCR 9 are not.
    ubuntu = PARSED["ubuntu"]
    grub = [e for e in ubuntu.events if e.event_type == ev.EV_IPL and is_data_determined(e)]
    assert len(grub) == 67
    assert {e.pcr for e in grub} == {8}
    assert _determined("sb_cert").count("EV_EFI_VARIABLE_AUTHORITY") == 3


def _variable_value_hash(event: Event, alg_id: int) -> bytes:
    value = ev.decode_variable(event.data).data
    return hashlib.new(ALGORITHMS_BY_ID[alg_id].name, value).digest()


def test_edk2_hashes_only_the_boot_variable_value() -> None:
    for name in ("ovmf", "coreos", "ubuntu", "ebs_missing", "option_rom"):
        boot = [e for e in PARSED[name].events if e.event_type == ev.EV_EFI_VARIABLE_BOOT]
        assert boot
        for event in boot:
            for alg_id, digest in event.digests.items():
                assert digest == _variable_value_hash(event, alg_id)


def test_other_firmware_hashes_the_whole_boot_variable() -> None:
    boot = [e for e in PARSED["crypto_agile"].events if e.event_type == ev.EV_EFI_VARIABLE_BOOT]
    assert len(boot) == 7
    for event in boot:
        assert event.digests[SHA256_ID] == hashlib.sha256(event.data).digest()


def test_old_shim_authority_hashes_one_byte_less() -> None:
    shim = [e for e in PARSED["sb_cert"].events if e.data[32:40] == "Shim".encode("utf-16-le")]
    assert len(shim) == 2
    for event in shim:
        assert event.digests[SHA1_ID] == hashlib.sha1(event.data[:-1]).digest()  # noqa: S324


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize("name", ["ovmf", "ubuntu", "gcp", "sb_cert", "crypto_agile"])
def test_every_checked_event_detects_changed_data(name: str) -> None:
    """Change the last hashed data byte of each data-determined event: its check must fail.

    (Old shim logs one byte more than it hashes, so there the byte before the last.)
    """
    log = PARSED[name]
    checked = [i for i, e in enumerate(log.events) if is_data_determined(e)]
    assert checked
    for position in checked:
        event = log.events[position]
        data = bytearray(event.data)
        shim = event.event_type == ev.EV_EFI_VARIABLE_AUTHORITY and bool(
            ev.decode_variable(event.data).trailing
        )
        data[-2 if shim else -1] ^= 0x01
        bad = _with_event(log, position, dataclasses.replace(event, data=bytes(data)))
        type_name = ev.event_type_name(event.event_type)
        with pytest.raises(FirmwareLogError, match=rf"event {event.index} \({type_name}, PCR"):
            check_event_digests(bad)


def test_one_lying_bank_is_enough() -> None:
    log = PARSED["coreos"]
    position = next(i for i, e in enumerate(log.events) if e.event_type == ev.EV_SEPARATOR)
    event = log.events[position]
    digests = dict(event.digests)
    digests[SHA384.tpm_id] = bytes(48)
    bad = _with_event(log, position, dataclasses.replace(event, digests=MappingProxyType(digests)))
    with pytest.raises(FirmwareLogError, match=r"sha384 digest 0+ does not match"):
        check_event_digests(bad)


def test_edk2_boot_variable_name_is_not_covered() -> None:
    """A documented limitation of the edk2 form: the name of Boot#### is not hashed."""
    log = PARSED["ovmf"]
    position = next(i for i, e in enumerate(log.events) if e.event_type == ev.EV_EFI_VARIABLE_BOOT)
    event = log.events[position]
    renamed = event.data.replace("BootOrder".encode("utf-16-le"), "BootNext!".encode("utf-16-le"))
    check_event_digests(_with_event(log, position, dataclasses.replace(event, data=renamed)))


def test_boot_variable_banks_must_agree_on_the_form() -> None:
    data = variable_data("Boot0001", b"option")
    mixed = [
        (SHA1_ID, hashlib.sha1(data).digest()),  # noqa: S324
        (SHA256_ID, hashlib.sha256(b"option").digest()),
    ]
    log = parse_event_log(LogBuilder().add(1, ev.EV_EFI_VARIABLE_BOOT, data, digests=mixed).build())
    with pytest.raises(FirmwareLogError, match="sha256 digest"):
        check_event_digests(log)
    for measured in (data, b"option"):
        good = LogBuilder().add(1, ev.EV_EFI_VARIABLE_BOOT, data, measured=measured).build()
        check_event_digests(parse_event_log(good))


def test_authority_short_form_needs_trailing_bytes() -> None:
    data = variable_data("db", b"cert")
    honest_shim = LogBuilder().add(7, ev.EV_EFI_VARIABLE_AUTHORITY, data + b"\x00", measured=data)
    check_event_digests(parse_event_log(honest_shim.build()))
    short = LogBuilder().add(7, ev.EV_EFI_VARIABLE_AUTHORITY, data, measured=data[:-1])
    with pytest.raises(FirmwareLogError, match="EV_EFI_VARIABLE_AUTHORITY"):
        check_event_digests(parse_event_log(short.build()))


def test_malformed_data_of_a_checked_type() -> None:
    log = parse_event_log(LogBuilder().add(1, ev.EV_EFI_VARIABLE_BOOT, b"\x01\x02").build())
    with pytest.raises(FirmwareLogError, match=r"event 1 .*malformed data: UEFI_VARIABLE_DATA"):
        check_event_digests(log)


def test_grub_rule() -> None:
    builder = LogBuilder()
    builder.add(8, ev.EV_IPL, b"grub_cmd: linux /vmlinuz ro\0", measured=b"linux /vmlinuz ro")
    builder.add(8, ev.EV_IPL, b"kernel_cmdline: /vmlinuz ro\0", measured=b"/vmlinuz ro")
    builder.add(9, ev.EV_IPL, b"/boot/vmlinuz\0", measured=b"kernel bytes")
    builder.add(8, ev.EV_IPL, b"something else\0", measured=b"other")
    log = parse_event_log(builder.build())
    check_event_digests(log)
    assert [is_data_determined(e) for e in log.events] == [True, True, False, False]
    lie = LogBuilder().add(8, ev.EV_IPL, b"grub_cmd: ls\0", measured=b"insmod evil").build()
    with pytest.raises(FirmwareLogError, match=r"event 1 \(EV_IPL, PCR 8\)"):
        check_event_digests(parse_event_log(lie))


def test_not_determined_types_are_not_checked() -> None:
    builder = LogBuilder()
    for event_type in (
        ev.EV_EFI_BOOT_SERVICES_APPLICATION,
        ev.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        ev.EV_EFI_HANDOFF_TABLES,
        ev.EV_EVENT_TAG,
        ev.EV_POST_CODE,
    ):
        builder.add(0, event_type, b"claimed", measured=b"something else")
    check_event_digests(parse_event_log(builder.build()))


# ---------------------------------------------------------------- replay rules


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_startup_locality_sets_pcr0() -> None:
    builder = LogBuilder().no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x03")
    log = parse_event_log(builder.add(0, ev.EV_SEPARATOR, bytes(4)).build())
    start = bytes(31) + b"\x03"
    assert replay(log, SHA256)[0] == _h(start + _h(bytes(4)))


def test_startup_locality_alone_is_pcr0() -> None:
    log = parse_event_log(
        LogBuilder().no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x04").build()
    )
    assert replay(log, SHA1) == {0: bytes(19) + b"\x04"}


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (
            LogBuilder()
            .add(0, ev.EV_SEPARATOR, bytes(4))
            .no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x03"),
            "after PCR 0",
        ),
        (
            LogBuilder()
            .no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x03")
            .no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x00"),
            "after PCR 0",
        ),
        (LogBuilder().no_action(1, ev.STARTUP_LOCALITY_SIGNATURE + b"\x03"), "names PCR 1"),
    ],
)
def test_misplaced_startup_locality(builder: LogBuilder, message: str) -> None:
    with pytest.raises(FirmwareLogError, match=message):
        replay(parse_event_log(builder.build()), SHA256)


def test_bad_startup_locality_value() -> None:
    log = parse_event_log(
        LogBuilder().no_action(0, ev.STARTUP_LOCALITY_SIGNATURE + b"\x07").build()
    )
    with pytest.raises(FormatError, match="locality 7"):
        replay(log, SHA256)


def test_no_action_events_are_not_extended() -> None:
    builder = LogBuilder().add(5, 3, b"vendor info", measured=b"not zero")
    builder.add(5, ev.EV_SEPARATOR, bytes(4))
    log = parse_event_log(builder.build())
    assert replay(log, SHA256) == {5: bytes.fromhex(SEPARATOR_ONLY)}


def test_replay_needs_the_bank() -> None:
    log = parse_event_log(LogBuilder((SHA1_ID,)).add(0, ev.EV_SEPARATOR, bytes(4)).build())
    with pytest.raises(FirmwareLogError, match="no sha256 bank"):
        replay(log, SHA256)
    partial = LogBuilder().add(0, ev.EV_SEPARATOR, bytes(4), digests=[(SHA1_ID, bytes(20))])
    with pytest.raises(FirmwareLogError, match=r"event 1 \(EV_SEPARATOR, PCR 0\) has no sha256"):
        replay(parse_event_log(partial.build()), SHA256)


def test_windows_pcr_minus_one_event_is_skipped() -> None:
    assert 0xFFFFFFFF not in replay(PARSED["option_rom"], SHA1)


# ---------------------------------------------------------------- verify_against_pcrs


def _ovmf_quoted() -> dict[int, bytes]:
    return {pcr: bytes.fromhex(value) for pcr, value in OVMF_SHA256_PCRS.items()}


def test_mismatch_names_the_pcr_and_both_values() -> None:
    log = PARSED["ovmf"]
    quoted = _ovmf_quoted()
    quoted[7] = b"\x07" * 32
    with pytest.raises(FirmwareLogError) as caught:
        verify_against_pcrs(log, SHA256, quoted, range(8))
    message = caught.value.message
    assert message.startswith("PCR 7 (sha256): the firmware log replays to b5710bf5")
    assert "07" * 32 in message
    assert caught.value.check == "firmware-log"


def test_first_mismatch_in_the_given_order() -> None:
    quoted = _ovmf_quoted()
    quoted[1] = quoted[2] = bytes(32)
    with pytest.raises(FirmwareLogError, match=r"^PCR 2 "):
        verify_against_pcrs(PARSED["ovmf"], SHA256, quoted, [2, 1])


@pytest.mark.parametrize(
    ("quoted", "pcrs", "message"),
    [
        ({}, [0], "PCR 0 has no quoted sha256 value"),
        ({0: b"short"}, [0], "has 5 bytes, expected 32"),
        ({}, [24], "PCR 24 does not exist"),
        ({10: b"\x01" * 32}, [10], "replays to 0{64}"),
        ({17: bytes(32)}, [17], "replays to (ff){32}"),
    ],
)
def test_verify_against_pcrs_failures(
    quoted: dict[int, bytes], pcrs: list[int], message: str
) -> None:
    with pytest.raises(FirmwareLogError, match=message):
        verify_against_pcrs(PARSED["ovmf"], SHA256, quoted, pcrs)


def test_a_forged_event_breaks_the_replay() -> None:
    """Rewriting an image digest keeps the data checks happy but not the PCR comparison."""
    log = PARSED["ovmf"]
    position = next(
        i for i, e in enumerate(log.events) if e.event_type == ev.EV_EFI_BOOT_SERVICES_APPLICATION
    )
    event = log.events[position]
    forged = dict(event.digests)
    forged[SHA256.tpm_id] = _h(b"another kernel")
    bad = _with_event(log, position, dataclasses.replace(event, digests=MappingProxyType(forged)))
    check_event_digests(bad)
    with pytest.raises(FirmwareLogError, match=r"^PCR 4 "):
        verify_against_pcrs(bad, SHA256, _ovmf_quoted(), range(8))


# ---------------------------------------------------------------- hostile input


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(sorted(REAL_LOGS)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    cut=st.integers(min_value=0, max_value=40),
)
def test_mutated_logs_fail_only_with_project_errors(
    name: str, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(REAL_LOGS[name])
    for position, value in edits:
        data[position % len(data)] = value
    with contextlib.suppress(AicertError):
        log = parse_event_log(bytes(data[: len(data) - cut]))
        for event in log.events:
            ev.describe(event, log.uintn_bytes)
        with contextlib.suppress(AicertError):
            check_event_digests(log)
        for alg_id in log.algorithms:
            replay(log, ALGORITHMS_BY_ID[alg_id])


def test_extend_arithmetic_of_a_single_separator() -> None:
    log = parse_event_log(LogBuilder().add(3, ev.EV_SEPARATOR, bytes(4)).build())
    assert replay(log, SHA256) == {3: bytes.fromhex(SEPARATOR_ONLY)}


def test_old_shim_last_byte_is_not_covered() -> None:
    """A documented limitation of the shim workaround: its extra logged byte is not hashed."""
    log = PARSED["sb_cert"]
    position = next(
        i
        for i, e in enumerate(log.events)
        if e.event_type == ev.EV_EFI_VARIABLE_AUTHORITY and ev.decode_variable(e.data).trailing
    )
    event = log.events[position]
    changed = event.data[:-1] + b"\x00"
    check_event_digests(_with_event(log, position, dataclasses.replace(event, data=changed)))
