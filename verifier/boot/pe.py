"""A strict parser of PE/COFF image headers (DOS stub, COFF header, optional header, sections).

Only what Authenticode hashing and UKI section lookup need is kept. Every offset and
size is checked against the file, so a lying header becomes a
:class:`~aicert.verifier.errors.FormatError`, never a short read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from ..wire import Reader

PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B
# Index of the certificate table ("security directory") among the data directories.
CERT_TABLE_INDEX = 4
BASE_RELOCATION_INDEX = 5
_DATA_DIRECTORY_SIZE = 8
_SECTION_HEADER_SIZE = 40
_COFF_HEADER_SIZE = 20
# Offset of CheckSum inside the optional header; the same for PE32 and PE32+.
_CHECKSUM_OFFSET_IN_OPTIONAL = 64
# Offset of the data directories inside the optional header.
_DATA_DIRECTORIES_OFFSET = {PE32_MAGIC: 96, PE32_PLUS_MAGIC: 112}


@dataclass(frozen=True)
class DataDirectory:
    """One optional-header data directory entry: an address (RVA, or file offset for the
    certificate table) and a size."""

    address: int
    size: int


@dataclass(frozen=True)
class Section:
    """One section header. ``name`` is the 8-byte name up to its first NUL."""

    name: bytes
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int

    @property
    def memory_size(self) -> int:
        """Bytes the loader writes at VirtualAddress: VirtualSize, or SizeOfRawData when
        VirtualSize is 0 (edk2 BasePeCoffLib PeCoffLoaderLoadImage)."""
        return self.virtual_size or self.raw_size

    @property
    def display_name(self) -> str:
        return self.name.decode("ascii", errors="backslashreplace")


@dataclass(frozen=True)
class PeFile:
    """The parsed headers of a PE/COFF image."""

    size: int
    pe_offset: int
    machine: int
    magic: int
    major_image_version: int
    """The Linux EFI stub sets 1 once it supports LoadImage with an initrd device path."""
    size_of_image: int
    size_of_headers: int
    checksum_offset: int
    number_of_rva_and_sizes: int
    data_directories: tuple[DataDirectory, ...]
    cert_dir_entry_offset: int | None
    """File offset of the certificate-table directory entry; None if the optional header
    has no such entry (NumberOfRvaAndSizes <= 4)."""
    section_table_offset: int
    sections: tuple[Section, ...]

    @property
    def cert_table(self) -> DataDirectory | None:
        if self.number_of_rva_and_sizes <= CERT_TABLE_INDEX:
            return None
        return self.data_directories[CERT_TABLE_INDEX]


def parse_pe(data: bytes) -> PeFile:
    """Parse and bounds-check the headers of the PE image ``data``."""
    what = "PE image"
    dos = Reader(data, endian="little", what=what)
    if dos.take(2, "DOS magic") != b"MZ":
        raise FormatError(f"{what}: no 'MZ' DOS header")
    dos.skip(0x3C - 2, "DOS header")
    pe_offset = dos.u32("e_lfanew")

    r = Reader(data, endian="little", what=what)
    r.skip(pe_offset, "DOS stub")
    if r.take(4, "PE signature") != b"PE\0\0":
        raise FormatError(f"{what}: no 'PE\\0\\0' signature at offset {pe_offset}")
    machine = r.u16("Machine")
    number_of_sections = r.u16("NumberOfSections")
    r.skip(12, "COFF header")
    size_of_optional_header = r.u16("SizeOfOptionalHeader")
    r.skip(2, "Characteristics")

    optional_offset = pe_offset + 4 + _COFF_HEADER_SIZE
    optional = r.sub(size_of_optional_header, "optional header")
    magic = optional.u16("optional header magic")
    if magic not in _DATA_DIRECTORIES_OFFSET:
        raise FormatError(f"{what}: optional header magic 0x{magic:x} is neither PE32 nor PE32+")
    optional.skip(42, "optional header")
    major_image_version = optional.u16("MajorImageVersion")
    optional.skip(10, "optional header")
    size_of_image = optional.u32("SizeOfImage")
    size_of_headers = optional.u32("SizeOfHeaders")
    optional.skip(4, "CheckSum")
    dirs_at = _DATA_DIRECTORIES_OFFSET[magic]
    optional.skip(dirs_at - 4 - optional.offset, "optional header")
    number_of_rva_and_sizes = optional.u32("NumberOfRvaAndSizes")
    if number_of_rva_and_sizes * _DATA_DIRECTORY_SIZE > optional.remaining:
        raise FormatError(
            f"{what}: {number_of_rva_and_sizes} data directories do not fit in the "
            f"{size_of_optional_header}-byte optional header"
        )
    directories = tuple(
        DataDirectory(optional.u32(f"data directory {i} address"), optional.u32(f"size {i}"))
        for i in range(number_of_rva_and_sizes)
    )
    has_cert_entry = number_of_rva_and_sizes > CERT_TABLE_INDEX
    cert_dir_entry_offset = (
        optional_offset + dirs_at + _DATA_DIRECTORY_SIZE * CERT_TABLE_INDEX
        if has_cert_entry
        else None
    )

    section_table_offset = optional_offset + size_of_optional_header
    table = r.sub(number_of_sections * _SECTION_HEADER_SIZE, "section table")
    sections = tuple(_parse_section(table, i) for i in range(number_of_sections))
    section_table_end = section_table_offset + number_of_sections * _SECTION_HEADER_SIZE

    if not section_table_end <= size_of_headers <= len(data):
        raise FormatError(
            f"{what}: SizeOfHeaders {size_of_headers} must cover the headers "
            f"({section_table_end} bytes) and lie within the file ({len(data)} bytes)"
        )
    for section in sections:
        if section.raw_size and section.raw_offset + section.raw_size > len(data):
            raise FormatError(
                f"{what}: section {section.display_name!r} data "
                f"[{section.raw_offset}, +{section.raw_size}) lies outside the file"
            )
    for section in sections:
        # edk2 refuses to load a section that does not fit in SizeOfImage.
        if section.virtual_address + section.memory_size > size_of_image:
            raise FormatError(
                f"{what}: section {section.display_name!r} ends beyond SizeOfImage {size_of_image}"
            )
    cert = directories[CERT_TABLE_INDEX] if has_cert_entry else None
    if cert is not None and cert.size and cert.address + cert.size > len(data):
        raise FormatError(f"{what}: certificate table lies outside the file")

    return PeFile(
        size=len(data),
        pe_offset=pe_offset,
        machine=machine,
        magic=magic,
        major_image_version=major_image_version,
        size_of_image=size_of_image,
        size_of_headers=size_of_headers,
        checksum_offset=optional_offset + _CHECKSUM_OFFSET_IN_OPTIONAL,
        number_of_rva_and_sizes=number_of_rva_and_sizes,
        data_directories=directories,
        cert_dir_entry_offset=cert_dir_entry_offset,
        section_table_offset=section_table_offset,
        sections=sections,
    )


def _parse_section(table: Reader, index: int) -> Section:
    raw_name = table.take(8, f"section {index} name")
    virtual_size = table.u32(f"section {index} VirtualSize")
    virtual_address = table.u32(f"section {index} VirtualAddress")
    raw_size = table.u32(f"section {index} SizeOfRawData")
    raw_offset = table.u32(f"section {index} PointerToRawData")
    table.skip(16, f"section {index} relocations, line numbers, characteristics")
    return Section(
        name=raw_name.split(b"\0", 1)[0],
        virtual_size=virtual_size,
        virtual_address=virtual_address,
        raw_size=raw_size,
        raw_offset=raw_offset,
    )


def find_section(pe: PeFile, name: bytes) -> Section | None:
    """The first section named exactly ``name``, or None."""
    for section in pe.sections:
        if section.name == name:
            return section
    return None
