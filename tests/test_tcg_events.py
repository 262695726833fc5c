"""Decoding of firmware log event data: real events, built structures, hostile data."""

from __future__ import annotations

import contextlib
import struct
import uuid
from types import MappingProxyType

import pytest
from aicert.verifier.boot.uefi_device_path import device_path_text, guid_text
from aicert.verifier.errors import FormatError
from aicert.verifier.logs import tcg_events as ev
from aicert.verifier.logs.tcg_log import Event, SpecIdEvent, parse_event_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcg_log_support import OVMF_LOG, all_real_logs, spec_id03, variable_data

REAL_LOGS = all_real_logs()
OVMF = parse_event_log(OVMF_LOG.read_bytes())
GCP = parse_event_log(REAL_LOGS["gcp"])


def _event(event_type: int, data: bytes, pcr: int = 0) -> Event:
    return Event(7, pcr, event_type, MappingProxyType({}), data, offset=0)


def _ovmf(index: int) -> Event:
    return OVMF.events[index - 1]


def node(node_type: int, subtype: int, body: bytes) -> bytes:
    return struct.pack("<BBH", node_type, subtype, len(body) + 4) + body


END = node(0x7F, 0xFF, b"")


# ---------------------------------------------------------------- real events


def test_event_type_names() -> None:
    assert ev.event_type_name(ev.EV_EFI_BOOT_SERVICES_APPLICATION) == (
        "EV_EFI_BOOT_SERVICES_APPLICATION"
    )
    assert ev.event_type_name(3) == "EV_NO_ACTION"
    assert ev.event_type_name(0x80000123) == "EV_UNKNOWN(0x80000123)"
    assert "EV_EFI_EVENT_BASE" not in ev.EVENT_TYPE_NAMES.values()


def test_uki_image_load_device_path() -> None:
    content = ev.decode_event(_ovmf(27))
    assert isinstance(content, ev.ImageLoad)
    assert content.device_path == (
        "PciRoot(0x0)/Pci(0x1,0x0)/HD(1,GPT,CB96A8E9-ADDC-4BE7-B68E-69B6D1EA59CB,0x800,0x80000)"
        "/\\EFI\\BOOT\\BOOTX64.EFI"
    )
    assert content.length == 67957760
    assert content.trailing == b""


def test_windows_boot_manager_device_path() -> None:
    content = ev.decode_event(GCP.events[9])
    assert isinstance(content, ev.ImageLoad)
    assert content.device_path == (
        "PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x1,0x0)/HD(2,GPT,7E454786-3ED8-478B-8282-5A3312BD8CEB,"
        "0x8000,0x32000)/\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    )


def test_kernel_loaded_from_memory_device_path() -> None:
    content = ev.decode_event(_ovmf(36))
    assert isinstance(content, ev.ImageLoad)
    assert content.device_path == "VenMedia(55C5D1F8-04CD-46B5-8A20-E56CBB3052D0)"


def test_shim_image_load_with_trailing_garbage() -> None:
    sb_cert = parse_event_log(REAL_LOGS["sb_cert"])
    content = ev.decode_event(sb_cert.events[10], sb_cert.uintn_bytes)
    assert isinstance(content, ev.ImageLoad)
    assert (content.device_path, content.location, len(content.trailing)) == ("", 0, 9)


def test_secure_boot_variable() -> None:
    content = ev.decode_event(GCP.events[1])
    assert content == ev.Variable(
        "8BE4DF61-93CA-11D2-AA0D-00E098032B8C", "SecureBoot", b"\x01", b""
    )


def test_boot_variables_described() -> None:
    assert ev.describe(_ovmf(14)).endswith(
        "BootOrder [8BE4DF61-93CA-11D2-AA0D-00E098032B8C] = 0000,0001,0002"
    )
    assert ev.describe(_ovmf(16)) == (
        "#16 PCR 1 EV_EFI_VARIABLE_BOOT: Boot0001 [8BE4DF61-93CA-11D2-AA0D-00E098032B8C] = "
        "'UEFI Misc Device' PciRoot(0x0)/Pci(0x1,0x0)"
    )


def test_load_option() -> None:
    variable = ev.decode_variable(_ovmf(15).data)
    option = ev.decode_load_option(variable.data)
    assert option.attributes == 0x109
    assert option.description == "UiApp"
    assert option.device_path.startswith("Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(")
    with pytest.raises(FormatError, match="no NUL"):
        ev.decode_load_option(struct.pack("<IH", 1, 0) + b"A\x00")


def test_shim_authority_trailing_bytes_are_kept() -> None:
    sb_cert = parse_event_log(REAL_LOGS["sb_cert"])
    content = ev.decode_event(sb_cert.events[11])
    assert isinstance(content, ev.Variable)
    assert (content.name, len(content.data), content.trailing) == ("Shim", 1080, bytes(5) + b"\xaf")
    assert "(+6 trailing bytes)" in ev.describe(sb_cert.events[11])


def test_gpt_event() -> None:
    content = ev.decode_event(_ovmf(26))
    assert isinstance(content, ev.Gpt)
    assert content.disk_guid == "31918D1C-A93A-45D1-A195-A84A9DB04099"
    assert [p.name for p in content.partitions] == ["esp", "root-x86-64", "root-x86-64-verity"]
    esp = content.partitions[0]
    assert (esp.type_guid, esp.first_lba, esp.last_lba) == (
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        2048,
        526335,
    )


def test_text_events() -> None:
    assert ev.decode_event(_ovmf(1)) == ev.Text("2025.02-8+deb13u1", "utf-16-le")
    assert ev.decode_event(_ovmf(18)) == ev.Text(
        "Calling EFI Application from Boot Option", "utf-8"
    )
    assert ev.decode_event(_ovmf(28)) == ev.Text(".linux", "utf-16-le")
    assert ev.decode_event(_ovmf(10)) == ev.Text("ACPI DATA", "utf-8")


def test_separators() -> None:
    assert ev.decode_event(_ovmf(9)) == ev.Separator(0)
    assert ev.Separator(0xFFFFFFFF).is_error
    assert ev.describe(GCP.events[18]).endswith("separator WBCL")
    with pytest.raises(FormatError, match="5 bytes"):
        ev.decode_separator(bytes(5))


def test_firmware_blobs() -> None:
    assert ev.decode_event(_ovmf(2)) == ev.FirmwareBlob(None, 0x820000, 917504)
    blob2 = b"\x04FVMA" + struct.pack("<QQ", 0xFF000000, 0x1000)
    assert ev.decode_event(_event(ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2, blob2)) == ev.FirmwareBlob(
        "FVMA", 0xFF000000, 0x1000
    )
    crypto_agile = parse_event_log(REAL_LOGS["crypto_agile"])
    assert ev.decode_event(crypto_agile.events[2]) == ev.FirmwareBlob(None, 0xFFA20000, 5111808)


def test_handoff_tables() -> None:
    smbios = uuid.UUID("eb9d2d31-2d88-11d3-9a16-0090273fc14d")
    entry = smbios.bytes_le + struct.pack("<Q", 0x7F000000)
    one = ev.decode_event(_event(ev.EV_EFI_HANDOFF_TABLES, struct.pack("<Q", 1) + entry))
    assert one == ev.HandoffTables(None, (("EB9D2D31-2D88-11D3-9A16-0090273FC14D", 0x7F000000),))
    two = b"\x06SMBIOS" + struct.pack("<Q", 1) + entry
    decoded = ev.decode_event(_event(ev.EV_EFI_HANDOFF_TABLES2, two))
    assert isinstance(decoded, ev.HandoffTables)
    assert decoded.description == "SMBIOS"
    narrow = struct.pack("<I", 1) + smbios.bytes_le + struct.pack("<I", 0x1000)
    assert ev.decode_handoff_tables(narrow, with_description=False, uintn_bytes=4).tables == (
        ("EB9D2D31-2D88-11D3-9A16-0090273FC14D", 0x1000),
    )
    with pytest.raises(FormatError, match="at most 4096"):
        ev.decode_handoff_tables(struct.pack("<Q", 1 << 40), with_description=False)


def test_linux_tagged_events() -> None:
    load_options = ev.decode_event(_ovmf(37))
    assert isinstance(load_options, ev.Tagged)
    assert load_options.tag_name == "Linux LoadOptions"
    assert load_options.data == b"LOADED_IMAGE::LoadOptions\x00"
    assert ev.describe(_ovmf(38)) == "#38 PCR 9 EV_EVENT_TAG: Linux initrd: 'Linux initrd'"


def test_no_action_events() -> None:
    locality = ev.STARTUP_LOCALITY_SIGNATURE + b"\x03"
    assert ev.decode_event(_event(3, locality)) == ev.StartupLocality(3)
    with pytest.raises(FormatError, match="locality 2"):
        ev.decode_no_action(ev.STARTUP_LOCALITY_SIGNATURE + b"\x02")
    with pytest.raises(FormatError):
        ev.decode_no_action(ev.STARTUP_LOCALITY_SIGNATURE + b"\x03\x00")
    spec = ev.decode_event(_event(3, spec_id03()))
    assert isinstance(spec, SpecIdEvent)
    assert spec.algorithms == ((4, 20), (11, 32))
    other = ev.decode_no_action(b"SP800-155 Event\x00" + b"rim")
    assert other == ev.NoActionInfo("SP800-155 Event", b"rim")
    windows = parse_event_log(REAL_LOGS["option_rom"]).events[-1]
    content = ev.decode_event(windows)
    assert isinstance(content, ev.NoActionInfo)
    assert content.signature == ""
    assert content.data == windows.data


def test_post_code_label_or_blob() -> None:
    assert ev.decode_event(_event(ev.EV_POST_CODE, b"POST CODE")) == ev.Text("POST CODE", "utf-8")
    blob = struct.pack("<QQ", 0xFFA20000, 0x4E0000)
    assert ev.decode_event(_event(ev.EV_POST_CODE, blob)) == ev.FirmwareBlob(
        None, 0xFFA20000, 0x4E0000
    )


def test_omit_boot_device_events_and_compact_hash() -> None:
    omitted = _event(ev.EV_OMIT_BOOT_DEVICE_EVENTS, b"BOOT ATTEMPTS OMITTED")
    assert ev.decode_event(omitted) == ev.Text("BOOT ATTEMPTS OMITTED", "utf-8")
    assert ev.decode_event(GCP.events[17]) == ev.Opaque(b"\xff\xff\x00\x00")


def test_decode_text_encodings() -> None:
    assert ev.decode_text(b"grub_cmd: ls\0") == ev.Text("grub_cmd: ls", "utf-8")
    assert ev.decode_text(".cmdline\0".encode("utf-16-le")) == ev.Text(".cmdline", "utf-16-le")
    assert ev.decode_text(b"\xff\xfe\x00").encoding == "binary"


def test_describe_every_real_event() -> None:
    """Every event of every real log gets a one-line description."""
    for data in REAL_LOGS.values():
        log = parse_event_log(data)
        for event in log.events:
            text = ev.describe(event, log.uintn_bytes)
            assert text.startswith(f"#{event.index} PCR {event.pcr} ")
            assert "\n" not in text


def test_describe_falls_back_to_hex() -> None:
    text = ev.describe(_event(ev.EV_EFI_VARIABLE_BOOT, b"\x01\x02"))
    assert text.startswith("#7 PCR 0 EV_EFI_VARIABLE_BOOT: undecodable (UEFI_VARIABLE_DATA")
    assert text.endswith(": 0102")


# ---------------------------------------------------------------- device paths


def test_device_path_nodes() -> None:
    guid = uuid.UUID("12345678-9abc-def0-1122-334455667788")
    path = (
        node(2, 1, struct.pack("<II", 0x0A0841D0, 1))
        + node(1, 1, bytes([0x2, 0x1F]))
        + node(3, 0x12, struct.pack("<HHH", 1, 0xFFFF, 0))
        + node(
            4, 1, struct.pack("<IQQ", 1, 63, 1000) + b"\x78\x56\x34\x12" + bytes(12) + b"\x01\x01"
        )
        + node(4, 4, "\\EFI\\X.EFI\0".encode("utf-16-le"))
        + node(0x7F, 0x01, b"")
        + node(3, 5, bytes([3, 0]))
        + node(1, 4, guid.bytes_le + b"\xab")
        + node(2, 1, struct.pack("<II", 0x12345678, 0))
        + node(9, 9, b"\x01\x02")
        + END
    )
    assert device_path_text(path) == (
        "PcieRoot(0x1)/Pci(0x1F,0x2)/Sata(0x1,0xFFFF,0x0)/HD(1,MBR,0x12345678,0x3F,0x3E8)"
        "/\\EFI\\X.EFI,USB(0x3,0x0)/VenHw(12345678-9ABC-DEF0-1122-334455667788,AB)"
        "/Acpi(0x12345678,0x0)/Path(9,9,0102)"
    )


def test_device_path_more_nodes() -> None:
    path = (
        node(1, 3, struct.pack("<IQQ", 11, 0xFF000000, 0xFFFFFFFF))
        + node(2, 3, struct.pack("<II", 0x80010100, 0x80010200))
        + node(3, 2, struct.pack("<HH", 1, 2))
        + node(3, 0x0B, b"\x52\x54\x00\x12\x34\x56" + bytes(26) + b"\x01")
        + node(3, 0x18, b"http://x/y")
        + node(4, 2, struct.pack("<IQQ", 1, 2, 3))
        + node(4, 8, struct.pack("<IQQ", 0, 0x100, 0x1FF))
        + node(5, 1, struct.pack("<HH", 2, 0) + b"CD\x00")
        + END
    )
    assert device_path_text(path) == (
        "MemoryMapped(0xB,0xFF000000,0xFFFFFFFF)/AcpiAdr(0x80010100,0x80010200)/Scsi(0x1,0x2)"
        "/MAC(525400123456,0x1)/Uri(http://x/y)/CDROM(0x1,0x2,0x3)/Offset(0x100,0x1FF)"
        "/BBS(0x2,CD,0x0)"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (struct.pack("<BBH", 1, 1, 2), "length 2"),
        (struct.pack("<BBH", 1, 1, 40) + bytes(4), "truncated"),
        (node(1, 1, b"\x00"), "truncated"),
        (node(1, 1, b"\x00\x00\x00"), "trailing"),
        (END + b"\x00", "trailing"),
        (node(4, 4, b"\x41"), "odd length"),
    ],
)
def test_bad_device_paths(path: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        device_path_text(path)


def test_device_path_node_count_is_bounded() -> None:
    with pytest.raises(FormatError, match="more than 512 nodes"):
        device_path_text(node(1, 1, b"\x00\x01") * 600)


def test_guid_text() -> None:
    raw = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    assert guid_text(raw) == "8BE4DF61-93CA-11D2-AA0D-00E098032B8C"


def test_variable_name_longer_than_event() -> None:
    data = uuid.uuid4().bytes_le + struct.pack("<QQ", 1 << 62, 0)
    with pytest.raises(FormatError, match="exceeds the event"):
        ev.decode_variable(data)
    assert ev.decode_variable(variable_data("Boot0001", b"")).name == "Boot0001"


# ---------------------------------------------------------------- hostile data

EVENT_TYPES = sorted(ev.EVENT_TYPE_NAMES)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    data=st.binary(max_size=300),
    uintn=st.sampled_from([4, 8]),
)
def test_random_event_data(event_type: int, data: bytes, uintn: int) -> None:
    event = _event(event_type, data)
    with contextlib.suppress(FormatError):
        ev.decode_event(event, uintn)
    assert ev.describe(event, uintn).startswith("#7 PCR 0 ")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    index=st.integers(min_value=0),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.integers(min_value=0, max_value=16),
    as_type=st.one_of(st.none(), st.sampled_from(EVENT_TYPES)),
)
def test_mutated_real_event_data(
    index: int, edits: list[tuple[int, int]], cut: int, as_type: int | None
) -> None:
    """Real structured data with flipped bytes, cut short, or read as another type."""
    events = [e for data in REAL_LOGS.values() for e in parse_event_log(data).events if e.data]
    original = events[index % len(events)]
    data = bytearray(original.data)
    for position, value in edits:
        data[position % len(data)] = value
    event = _event(
        original.event_type if as_type is None else as_type, bytes(data[: len(data) - cut])
    )
    with contextlib.suppress(FormatError):
        ev.decode_event(event)
    ev.describe(event)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 0x7F), st.integers(0, 0x20), st.binary(max_size=40)), max_size=8
    )
)
def test_random_device_paths(nodes: list[tuple[int, int, bytes]]) -> None:
    path = b"".join(node(t, s, body) for t, s, body in nodes)
    with contextlib.suppress(FormatError):
        device_path_text(path)
