"""Builds small PE32+ images with chosen layouts for tests of the PE and Authenticode code."""

from __future__ import annotations

import struct
from dataclasses import dataclass

FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000
PE_OFFSET = 0x40
OPTIONAL_HEADER_SIZE = 112 + 16 * 8
CHECKSUM_OFFSET = PE_OFFSET + 24 + 64
CERT_ENTRY_OFFSET = PE_OFFSET + 24 + 112 + 4 * 8


@dataclass(frozen=True)
class SectionSpec:
    name: bytes
    data: bytes
    virtual_size: int | None = None
    """Defaults to len(data)."""
    gap_before: int = 0
    """Extra file bytes (0xEE) before this section's raw data, not covered by any section."""
    virtual_address: int | None = None
    """Defaults to the next free SECTION_ALIGNMENT boundary."""


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def build_pe(
    sections: list[SectionSpec],
    *,
    trailing: bytes = b"",
    certificate: bytes = b"",
    checksum: int = 0x12345678,
    machine: int = 0x8664,
    major_image_version: int = 1,
    base_relocations: tuple[int, int] | None = None,
) -> bytes:
    """A PE32+ image: headers, the sections (raw sizes aligned to 0x200), then
    ``trailing`` bytes, then ``certificate`` as the certificate table (if non-empty).
    ``base_relocations`` is the (RVA, size) of the base relocation directory."""
    header_end = PE_OFFSET + 24 + OPTIONAL_HEADER_SIZE + 40 * len(sections)
    size_of_headers = _align(header_end, FILE_ALIGNMENT)

    body = bytearray()
    table = bytearray()
    offset = size_of_headers
    rva = SECTION_ALIGNMENT
    image_end = rva
    for spec in sections:
        body += b"\xee" * spec.gap_before
        offset += spec.gap_before
        raw_size = _align(len(spec.data), FILE_ALIGNMENT)
        virtual_size = len(spec.data) if spec.virtual_size is None else spec.virtual_size
        if spec.virtual_address is not None:
            rva = spec.virtual_address
        table += struct.pack(
            "<8sIIIIIIHHI",
            spec.name.ljust(8, b"\0"),
            virtual_size,
            rva,
            raw_size,
            offset,
            0,
            0,
            0,
            0,
            0x40000040,
        )
        body += spec.data.ljust(raw_size, b"\0")
        offset += raw_size
        rva += _align(max(virtual_size, raw_size, 1), SECTION_ALIGNMENT)
        image_end = max(image_end, rva)

    body += trailing
    cert_offset = size_of_headers + len(body)
    directories = [(0, 0)] * 16
    if certificate:
        directories[4] = (cert_offset, len(certificate))
    if base_relocations:
        directories[5] = base_relocations
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,
        2,
        0,
        0,
        0,
        0,
        SECTION_ALIGNMENT,
        SECTION_ALIGNMENT,
        0x10000000,
        SECTION_ALIGNMENT,
        FILE_ALIGNMENT,
        0,
        0,
        major_image_version,
        0,
        0,
        0,
        0,
        image_end,
        size_of_headers,
        checksum,
        10,
        0,
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,
    ) + b"".join(struct.pack("<II", a, s) for a, s in directories)
    assert len(optional) == OPTIONAL_HEADER_SIZE
    coff = struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, OPTIONAL_HEADER_SIZE, 0x22)
    dos = bytearray(PE_OFFSET)
    dos[0:2] = b"MZ"
    dos[0x3C:0x40] = struct.pack("<I", PE_OFFSET)
    headers = bytes(dos) + b"PE\0\0" + coff + optional + bytes(table)
    return headers.ljust(size_of_headers, b"\0") + bytes(body) + certificate
