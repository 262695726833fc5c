"""Event types of the TCG PC Client firmware log and typed decoding of their data.

Constants and structures follow the TCG PC Client Platform Firmware Profile (PFP) 1.05,
section 10.4, and the UEFI structures it references. :func:`decode_event` turns an
event's data into one of the frozen dataclasses below (raising FormatError when the data
does not fit its type); :func:`describe` never raises and falls back to hex, so reports
can always show every event.

Decoded content is what the firmware *claims*; whether the digest matches it is decided by
:mod:`firmware_replay`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..boot.uefi_device_path import device_path_text, guid_text, ucs2_text
from ..errors import FormatError
from ..wire import Reader
from .tcg_log import (
    HEADER_EVENT_TYPE,
    SPEC_ID_EVENT00,
    SPEC_ID_EVENT03,
    Event,
    SpecIdEvent,
    parse_spec_id_data,
)

EV_PREBOOT_CERT = 0x00000000
EV_POST_CODE = 0x00000001
EV_UNUSED = 0x00000002
EV_NO_ACTION = HEADER_EVENT_TYPE
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_S_CRTM_CONTENTS = 0x00000007
EV_S_CRTM_VERSION = 0x00000008
EV_CPU_MICROCODE = 0x00000009
EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
EV_TABLE_OF_DEVICES = 0x0000000B
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_IPL_PARTITION_DATA = 0x0000000E
EV_NONHOST_CODE = 0x0000000F
EV_NONHOST_CONFIG = 0x00000010
EV_NONHOST_INFO = 0x00000011
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
EV_POST_CODE2 = 0x00000013

EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_GPT_EVENT2 = 0x8000000D
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4

EVENT_TYPE_NAMES: dict[int, str] = {
    value: name
    for name, value in globals().items()
    if name.startswith("EV_") and isinstance(value, int) and name != "EV_EFI_EVENT_BASE"
}


def event_type_name(event_type: int) -> str:
    return EVENT_TYPE_NAMES.get(event_type, f"EV_UNKNOWN(0x{event_type:08x})")


# Tags of EV_EVENT_TAG events written by the Linux EFI stub (drivers/firmware/efi/libstub/
# efistub.h) and by systemd-boot/-stub (src/fundamental/tpm2-pcr.h).
EVENT_TAG_NAMES: dict[int, str] = {
    0x8F3B22EC: "Linux initrd",
    0x8F3B22ED: "Linux LoadOptions",
    0xF5BC582A: "systemd-boot loader.conf",
    0x6C46F751: "systemd devicetree addon",
    0x49DFFE0F: "systemd initrd addon",
    0xDAC08E1A: "systemd ucode addon",
    0x13AED6DB: "systemd UKI profile",
}

STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"

MAX_TABLES = 4096
MAX_PARTITIONS = 4096


# ---------------------------------------------------------------- decoded content types


@dataclass(frozen=True)
class Text:
    """A string event (EV_EFI_ACTION, EV_IPL, EV_S_CRTM_VERSION, …) and its encoding."""

    text: str
    encoding: str


@dataclass(frozen=True)
class Separator:
    value: int
    """0 (normal) or 0xFFFFFFFF (error); other values seen in Windows logs are kept as is."""

    @property
    def is_error(self) -> bool:
        return self.value == 0xFFFFFFFF


@dataclass(frozen=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT."""

    location: int
    length: int
    link_time_address: int
    device_path: str
    trailing: bytes
    """Bytes after the device path (old shim versions log a few uninitialised ones)."""


@dataclass(frozen=True)
class LoadOption:
    """EFI_LOAD_OPTION, the value of a Boot#### variable."""

    attributes: int
    description: str
    device_path: str
    optional_data: bytes


@dataclass(frozen=True)
class Variable:
    """UEFI_VARIABLE_DATA."""

    vendor_guid: str
    name: str
    data: bytes
    trailing: bytes
    """Bytes after the declared structure (old shim versions log one byte too many)."""


@dataclass(frozen=True)
class Tagged:
    """TCG_PCClientTaggedEvent."""

    tag: int
    data: bytes

    @property
    def tag_name(self) -> str | None:
        return EVENT_TAG_NAMES.get(self.tag)


@dataclass(frozen=True)
class StartupLocality:
    locality: int


@dataclass(frozen=True)
class NoActionInfo:
    """An EV_NO_ACTION event other than the header and StartupLocality."""

    signature: str
    data: bytes


@dataclass(frozen=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2)."""

    description: str | None
    base: int
    length: int


@dataclass(frozen=True)
class HandoffTables:
    """UEFI_HANDOFF_TABLE_POINTERS(2): (vendor GUID, table address) pairs."""

    description: str | None
    tables: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class GptPartition:
    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True)
class Gpt:
    """UEFI_GPT_DATA: the disk's GPT header and its used partition entries."""

    disk_guid: str
    partitions: tuple[GptPartition, ...]


@dataclass(frozen=True)
class Opaque:
    """Data this module has no structure for (shown as hex)."""

    data: bytes


EventContent = (
    Text
    | Separator
    | ImageLoad
    | Variable
    | Tagged
    | StartupLocality
    | NoActionInfo
    | SpecIdEvent
    | FirmwareBlob
    | HandoffTables
    | Gpt
    | Opaque
)


# ---------------------------------------------------------------- decoders


def _reader(data: bytes, what: str) -> Reader:
    return Reader(data, endian="little", what=what)


def _uintn(r: Reader, uintn_bytes: int, field: str) -> int:
    return r.u32(field) if uintn_bytes == 4 else r.u64(field)


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def decode_text(data: bytes) -> Text:
    """A string as firmware and boot loaders write it: UTF-16LE or ASCII/UTF-8, NUL-ended.

    systemd-stub writes UTF-16 descriptions, GRUB and edk2 actions write ASCII; the
    encoding is chosen by which one yields printable text.
    """
    if len(data) >= 2 and len(data) % 2 == 0 and data[1::2].count(0) * 2 >= len(data) // 2:
        try:
            text = data.decode("utf-16-le").rstrip("\x00")
        except UnicodeDecodeError:
            text = ""
        if text and _printable(text):
            return Text(text, "utf-16-le")
    try:
        return Text(data.decode("utf-8").rstrip("\x00"), "utf-8")
    except UnicodeDecodeError:
        return Text(data.decode("utf-8", "backslashreplace").rstrip("\x00"), "binary")


def decode_variable(data: bytes) -> Variable:
    r = _reader(data, "UEFI_VARIABLE_DATA")
    guid = guid_text(r.take(16, "VariableName GUID"))
    name_chars = r.u64("UnicodeNameLength")
    data_len = r.u64("VariableDataLength")
    if name_chars > r.remaining // 2:
        raise FormatError(f"UEFI_VARIABLE_DATA: name of {name_chars} characters exceeds the event")
    name = ucs2_text(r.take(2 * name_chars, "UnicodeName"), "UEFI_VARIABLE_DATA name")
    value = r.take(data_len, "VariableData")
    return Variable(guid, name, value, r.take(r.remaining, "trailing bytes"))


def decode_load_option(data: bytes) -> LoadOption:
    r = _reader(data, "EFI_LOAD_OPTION")
    attributes = r.u32("Attributes")
    path_len = r.u16("FilePathListLength")
    rest = r.take(r.remaining, "Description and paths")
    for end in range(0, len(rest) - 1, 2):
        if rest[end : end + 2] == b"\x00\x00":
            break
    else:
        raise FormatError("EFI_LOAD_OPTION: Description has no NUL terminator")
    description = ucs2_text(rest[:end], "EFI_LOAD_OPTION Description")
    tail = _reader(rest[end + 2 :], "EFI_LOAD_OPTION")
    path = device_path_text(tail.take(path_len, "FilePathList"))
    return LoadOption(attributes, description, path, tail.take(tail.remaining, "OptionalData"))


def decode_image_load(data: bytes, uintn_bytes: int = 8) -> ImageLoad:
    r = _reader(data, "UEFI_IMAGE_LOAD_EVENT")
    location = r.u64("ImageLocationInMemory")
    length = _uintn(r, uintn_bytes, "ImageLengthInMemory")
    link = _uintn(r, uintn_bytes, "ImageLinkTimeAddress")
    path_len = _uintn(r, uintn_bytes, "LengthOfDevicePath")
    path = device_path_text(r.take(path_len, "DevicePath"))
    return ImageLoad(location, length, link, path, r.take(r.remaining, "trailing bytes"))


def decode_tagged(data: bytes) -> Tagged:
    r = _reader(data, "TCG_PCClientTaggedEvent")
    tag = r.u32("taggedEventID")
    body = r.sized(4, "taggedEventData")
    r.expect_end()
    return Tagged(tag, body)


def decode_separator(data: bytes) -> Separator:
    if len(data) != 4:
        raise FormatError(f"EV_SEPARATOR: {len(data)} bytes of data, expected 4")
    return Separator(int.from_bytes(data, "little"))


def decode_no_action(data: bytes) -> SpecIdEvent | StartupLocality | NoActionInfo:
    signature = data[:16]
    if signature in (SPEC_ID_EVENT03, SPEC_ID_EVENT00):
        return parse_spec_id_data(data)
    if signature == STARTUP_LOCALITY_SIGNATURE:
        r = _reader(data[16:], "StartupLocality event")
        locality = r.u8("StartupLocality")
        r.expect_end()
        if locality not in (0, 3, 4):
            raise FormatError(f"StartupLocality event: locality {locality}, expected 0, 3 or 4")
        return StartupLocality(locality)
    name, nul, _ = signature.partition(b"\x00")
    if nul and name and all(0x20 <= b < 0x7F for b in name):
        return NoActionInfo(name.decode("ascii"), data[16:])
    # Not a signed structure (e.g. Windows' informational PCR -1 events): keep it whole.
    return NoActionInfo("", data)


def decode_firmware_blob(data: bytes, *, with_description: bool) -> FirmwareBlob:
    r = _reader(data, "UEFI_PLATFORM_FIRMWARE_BLOB")
    description = None
    if with_description:
        description = r.sized(1, "BlobDescription").decode("ascii", "backslashreplace")
    base = r.u64("BlobBase")
    length = r.u64("BlobLength")
    r.expect_end()
    return FirmwareBlob(description, base, length)


def decode_handoff_tables(
    data: bytes, *, with_description: bool, uintn_bytes: int = 8
) -> HandoffTables:
    r = _reader(data, "UEFI_HANDOFF_TABLE_POINTERS")
    description = None
    if with_description:
        description = r.sized(1, "TableDescription").decode("ascii", "backslashreplace")
        count = r.u64("NumberOfTables")
    else:
        count = _uintn(r, uintn_bytes, "NumberOfTables")
    if count > MAX_TABLES:
        raise FormatError(f"UEFI_HANDOFF_TABLE_POINTERS: {count} tables, at most {MAX_TABLES}")
    tables = tuple(
        (guid_text(r.take(16, "VendorGuid")), _uintn(r, uintn_bytes, "VendorTable"))
        for _ in range(count)
    )
    r.expect_end()
    return HandoffTables(description, tables)


def decode_gpt(data: bytes, uintn_bytes: int = 8) -> Gpt:
    r = _reader(data, "UEFI_GPT_DATA")
    header = r.sub(92, "partition table header")
    if header.take(8, "Signature") != b"EFI PART":
        raise FormatError("UEFI_GPT_DATA: header signature is not 'EFI PART'")
    header.skip(4 + 4 + 4 + 4 + 8 + 8 + 8 + 8, "header fields")
    disk_guid = guid_text(header.take(16, "DiskGUID"))
    header.skip(8 + 4, "PartitionEntryLBA and NumberOfPartitionEntries")
    entry_size = header.u32("SizeOfPartitionEntry")
    if entry_size < 128 or entry_size % 8:
        raise FormatError(f"UEFI_GPT_DATA: partition entry size {entry_size}, expected 128·2^n")
    count = _uintn(r, uintn_bytes, "NumberOfPartitions")
    if count > MAX_PARTITIONS:
        raise FormatError(f"UEFI_GPT_DATA: {count} partitions, at most {MAX_PARTITIONS}")
    partitions = []
    for i in range(count):
        entry = r.sub(entry_size, f"partition {i}")
        partitions.append(
            GptPartition(
                type_guid=guid_text(entry.take(16, "PartitionTypeGUID")),
                unique_guid=guid_text(entry.take(16, "UniquePartitionGUID")),
                first_lba=entry.u64("StartingLBA"),
                last_lba=entry.u64("EndingLBA"),
                attributes=entry.u64("Attributes"),
                name=ucs2_text(entry.take(72, "PartitionName"), "GPT partition name"),
            )
        )
    r.expect_end()
    return Gpt(disk_guid, tuple(partitions))


_VARIABLE_TYPES = (
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_AUTHORITY,
)
_IMAGE_TYPES = (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_RUNTIME_SERVICES_DRIVER,
)
_TEXT_TYPES = (
    EV_EFI_ACTION,
    EV_ACTION,
    EV_IPL,
    EV_S_CRTM_VERSION,
    EV_PLATFORM_CONFIG_FLAGS,
    EV_OMIT_BOOT_DEVICE_EVENTS,
    EV_EFI_HCRTM_EVENT,
)


def decode_event(event: Event, uintn_bytes: int = 8) -> EventContent:
    """Typed content of ``event``; FormatError when the data does not fit its type.

    ``uintn_bytes`` is the firmware's UINTN size (``EventLog.uintn_bytes``).
    """
    kind, data = event.event_type, event.data
    if kind in _VARIABLE_TYPES:
        return decode_variable(data)
    if kind in _IMAGE_TYPES:
        return decode_image_load(data, uintn_bytes)
    if kind == EV_SEPARATOR:
        return decode_separator(data)
    if kind == EV_NO_ACTION:
        return decode_no_action(data)
    if kind == EV_EVENT_TAG:
        return decode_tagged(data)
    if kind in (EV_EFI_GPT_EVENT, EV_EFI_GPT_EVENT2):
        return decode_gpt(data, uintn_bytes)
    if kind in (EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2):
        return decode_firmware_blob(data, with_description=kind == EV_EFI_PLATFORM_FIRMWARE_BLOB2)
    if kind in (EV_EFI_HANDOFF_TABLES, EV_EFI_HANDOFF_TABLES2):
        return decode_handoff_tables(
            data, with_description=kind == EV_EFI_HANDOFF_TABLES2, uintn_bytes=uintn_bytes
        )
    if kind in (EV_POST_CODE, EV_S_CRTM_CONTENTS) and len(data) == 16:
        # PFP 10.4.1: either an ASCII label ("POST CODE", "SMM CODE"…) or a firmware blob.
        label = decode_text(data)
        if not (label.encoding == "utf-8" and label.text and _printable(label.text)):
            return decode_firmware_blob(data, with_description=False)
        return label
    if kind in (*_TEXT_TYPES, EV_POST_CODE, EV_S_CRTM_CONTENTS, EV_COMPACT_HASH):
        decoded = decode_text(data)
        if decoded.encoding != "binary" and decoded.text and _printable(decoded.text):
            return decoded
    return Opaque(data)


# ---------------------------------------------------------------- descriptions


def _short_hex(data: bytes, limit: int = 32) -> str:
    shown = data[:limit].hex()
    return f"{shown}… ({len(data)} bytes)" if len(data) > limit else shown or "(empty)"


def _describe_variable(variable: Variable, event_type: int) -> str:
    value = _short_hex(variable.data)
    if event_type in (EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
        if variable.name == "BootOrder" and len(variable.data) % 2 == 0:
            value = ",".join(
                f"{int.from_bytes(variable.data[i : i + 2], 'little'):04X}"
                for i in range(0, len(variable.data), 2)
            )
        elif variable.name.startswith("Boot"):
            try:
                option = decode_load_option(variable.data)
            except FormatError:
                pass
            else:
                value = f"{option.description!r} {option.device_path}"
    extra = f" (+{len(variable.trailing)} trailing bytes)" if variable.trailing else ""
    return f"{variable.name} [{variable.vendor_guid}] = {value}{extra}"


def describe_content(content: EventContent, event_type: int) -> str:
    """One line of text for decoded content."""
    match content:
        case Text():
            return repr(content.text)
        case Separator():
            if content.is_error:
                return "error separator"
            raw = content.value.to_bytes(4, "little")
            return f"separator {raw.decode('ascii') if raw.isalpha() else hex(content.value)}"
        case ImageLoad():
            return (
                f"{content.device_path or '(no device path)'} "
                f"at {content.location:#x}, {content.length} bytes"
            )
        case Variable():
            return _describe_variable(content, event_type)
        case Tagged():
            name = content.tag_name or f"tag {content.tag:#010x}"
            tag_text = decode_text(content.data)
            printable = tag_text.encoding != "binary" and _printable(tag_text.text)
            body = repr(tag_text.text) if printable else _short_hex(content.data)
            return f"{name}: {body}"
        case StartupLocality():
            return f"StartupLocality {content.locality}"
        case NoActionInfo():
            label = f"{content.signature!r} " if content.signature else ""
            return f"{label}{_short_hex(content.data)}"
        case SpecIdEvent():
            banks = ", ".join(f"{alg:#06x}/{size}" for alg, size in content.algorithms)
            return f"{content.signature}: banks {banks}"
        case FirmwareBlob():
            label = f"{content.description!r} " if content.description is not None else ""
            return f"{label}blob at {content.base:#x}, {content.length} bytes"
        case HandoffTables():
            label = f"{content.description!r} " if content.description is not None else ""
            return label + ", ".join(f"{guid}@{addr:#x}" for guid, addr in content.tables)
        case Gpt():
            parts = ", ".join(
                f"{p.name or '(unnamed)'} {p.type_guid} LBA {p.first_lba}-{p.last_lba}"
                for p in content.partitions
            )
            return f"disk {content.disk_guid}: {parts}"
        case Opaque():
            return _short_hex(content.data)
    raise AssertionError(f"unhandled content {type(content).__name__}")


def describe(event: Event, uintn_bytes: int = 8) -> str:
    """One line for reports: ``#index PCR n TYPE: content``. Never raises on odd data."""
    head = f"#{event.index} PCR {event.pcr} {event_type_name(event.event_type)}"
    try:
        body = describe_content(decode_event(event, uintn_bytes), event.event_type)
    except FormatError as error:
        body = f"undecodable ({error.message}): {_short_hex(event.data)}"
    return f"{head}: {body}"
