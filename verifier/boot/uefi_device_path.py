"""UEFI device paths (UEFI 2.10, section 10) rendered as text the way edk2's DevicePathToText does.

Only the node types that appear in boot logs get their own rendering; any other node is
shown as ``Path(type,subtype,hexdata)``, edk2's generic form, so no input is refused
for being unusual. Structural damage (a node length below 4 or past the end) is a
FormatError.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ..errors import FormatError
from ..wire import Reader

HARDWARE, ACPI, MESSAGING, MEDIA, BBS, END = 0x01, 0x02, 0x03, 0x04, 0x05, 0x7F
END_INSTANCE, END_ENTIRE = 0x01, 0xFF

MAX_NODES = 512
"""Real boot paths have fewer than 10 nodes; this only bounds work on hostile input."""


def guid_text(raw: bytes) -> str:
    """A 16-byte EFI_GUID (mixed-endian) in registry form, upper case as edk2 prints it."""
    return str(uuid.UUID(bytes_le=raw)).upper()


def _hex(value: int) -> str:
    return f"0x{value:X}"


def _pci(r: Reader) -> str:
    function = r.u8("function")
    device = r.u8("device")
    return f"Pci({_hex(device)},{_hex(function)})"


def _memory_mapped(r: Reader) -> str:
    kind = r.u32("memory type")
    start = r.u64("start")
    end = r.u64("end")
    return f"MemoryMapped({_hex(kind)},{_hex(start)},{_hex(end)})"


def _vendor(prefix: str) -> Callable[[Reader], str]:
    def render(r: Reader) -> str:
        guid = guid_text(r.take(16, "vendor GUID"))
        extra = r.take(r.remaining, "vendor data")
        return f"{prefix}({guid},{extra.hex().upper()})" if extra else f"{prefix}({guid})"

    return render


_ACPI_NAMES = {0x0A03: "PciRoot", 0x0A08: "PcieRoot", 0x0604: "Floppy", 0x0301: "Keyboard"}
_ACPI_NAMES.update({0x0501: "Serial", 0x0401: "ParallelPort"})


def _acpi(r: Reader) -> str:
    hid = r.u32("HID")
    uid = r.u32("UID")
    if hid & 0xFFFF == 0x41D0:  # EISA "PNP" prefix
        product = hid >> 16
        if product in _ACPI_NAMES:
            return f"{_ACPI_NAMES[product]}({_hex(uid)})"
        return f"Acpi(PNP{product:04X},{_hex(uid)})"
    return f"Acpi({_hex(hid)},{_hex(uid)})"


def _acpi_adr(r: Reader) -> str:
    addresses = [_hex(r.u32("_ADR")) for _ in range(r.remaining // 4)]
    r.expect_end()
    return f"AcpiAdr({','.join(addresses)})"


def _scsi(r: Reader) -> str:
    return f"Scsi({_hex(r.u16('target'))},{_hex(r.u16('LUN'))})"


def _usb(r: Reader) -> str:
    return f"USB({_hex(r.u8('port'))},{_hex(r.u8('interface'))})"


def _mac(r: Reader) -> str:
    address = r.take(32, "MAC address")
    if_type = r.u8("interface type")
    shown = address[:6] if if_type in (0, 1) else address
    return f"MAC({shown.hex().upper()},{_hex(if_type)})"


def _sata(r: Reader) -> str:
    hba = r.u16("HBA port")
    multiplier = r.u16("port multiplier port")
    lun = r.u16("LUN")
    return f"Sata({_hex(hba)},{_hex(multiplier)},{_hex(lun)})"


def _nvme(r: Reader) -> str:
    namespace = r.u32("namespace id")
    eui = r.take(8, "EUI-64")
    return f"NVMe({_hex(namespace)},{'-'.join(f'{b:02X}' for b in reversed(eui))})"


def _uri(r: Reader) -> str:
    return f"Uri({r.take(r.remaining, 'URI').decode('ascii', 'backslashreplace')})"


def _hard_drive(r: Reader) -> str:
    number = r.u32("partition number")
    start = r.u64("partition start")
    size = r.u64("partition size")
    signature = r.take(16, "partition signature")
    r.u8("MBR type")
    signature_type = r.u8("signature type")
    if signature_type == 1:
        sig = f"MBR,{_hex(int.from_bytes(signature[:4], 'little'))}"
    elif signature_type == 2:
        sig = f"GPT,{guid_text(signature)}"
    else:
        sig = f"{signature_type},0"
    return f"HD({number},{sig},{_hex(start)},{_hex(size)})"


def _cdrom(r: Reader) -> str:
    entry = r.u32("boot entry")
    start = r.u64("partition start")
    size = r.u64("partition size")
    return f"CDROM({_hex(entry)},{_hex(start)},{_hex(size)})"


def ucs2_text(raw: bytes, what: str) -> str:
    """A NUL-terminated (or unterminated) UTF-16LE string; unpaired surrogates escaped."""
    if len(raw) % 2:
        raise FormatError(f"{what}: odd length {len(raw)} for a UTF-16 string")
    text = raw.decode("utf-16-le", "surrogatepass")
    text = text.split("\x00", 1)[0]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "backslashreplace")


def _file_path(r: Reader) -> str:
    return ucs2_text(r.take(r.remaining, "file path"), "file path node")


def _guid_node(prefix: str) -> Callable[[Reader], str]:
    def render(r: Reader) -> str:
        return f"{prefix}({guid_text(r.take(16, 'GUID'))})"

    return render


def _offset(r: Reader) -> str:
    r.u32("reserved")
    start = r.u64("starting offset")
    end = r.u64("ending offset")
    return f"Offset({_hex(start)},{_hex(end)})"


def _bbs(r: Reader) -> str:
    device_type = r.u16("device type")
    flags = r.u16("status flag")
    description = r.take(r.remaining, "description").split(b"\x00", 1)[0]
    return (
        f"BBS({_hex(device_type)},{description.decode('ascii', 'backslashreplace')},{_hex(flags)})"
    )


_RENDERERS: dict[tuple[int, int], Callable[[Reader], str]] = {
    (HARDWARE, 0x01): _pci,
    (HARDWARE, 0x03): _memory_mapped,
    (HARDWARE, 0x04): _vendor("VenHw"),
    (ACPI, 0x01): _acpi,
    (ACPI, 0x03): _acpi_adr,
    (MESSAGING, 0x02): _scsi,
    (MESSAGING, 0x05): _usb,
    (MESSAGING, 0x0A): _vendor("VenMsg"),
    (MESSAGING, 0x0B): _mac,
    (MESSAGING, 0x12): _sata,
    (MESSAGING, 0x17): _nvme,
    (MESSAGING, 0x18): _uri,
    (MEDIA, 0x01): _hard_drive,
    (MEDIA, 0x02): _cdrom,
    (MEDIA, 0x03): _vendor("VenMedia"),
    (MEDIA, 0x04): _file_path,
    (MEDIA, 0x05): _guid_node("Media"),
    (MEDIA, 0x06): _guid_node("FvFile"),
    (MEDIA, 0x07): _guid_node("Fv"),
    (MEDIA, 0x08): _offset,
    (BBS, 0x01): _bbs,
}


def _node_text(node_type: int, subtype: int, body: bytes) -> str:
    render = _RENDERERS.get((node_type, subtype))
    if render is not None:
        r = Reader(body, endian="little", what=f"device path node ({node_type},{subtype})")
        text = render(r)
        r.expect_end()
        return text
    return f"Path({node_type},{subtype},{body.hex().upper()})"


def device_path_text(data: bytes) -> str:
    """Render an EFI_DEVICE_PATH_PROTOCOL byte string; instances are separated by ','."""
    r = Reader(data, endian="little", what="device path")
    instances: list[list[str]] = [[]]
    for _ in range(MAX_NODES):
        if r.at_end():
            # Firmware logs sometimes omit the End node; the bytes ran out cleanly.
            break
        node_type = r.u8("node type")
        subtype = r.u8("node subtype")
        length = r.u16("node length")
        if length < 4:
            raise FormatError(f"device path: node at offset {r.offset - 4} has length {length}")
        body = r.take(length - 4, "node body")
        if node_type == END:
            if subtype == END_INSTANCE:
                instances.append([])
                continue
            r.expect_end()
            break
        instances[-1].append(_node_text(node_type, subtype, body))
    else:
        raise FormatError(f"device path: more than {MAX_NODES} nodes")
    return ",".join("/".join(nodes) for nodes in instances)
