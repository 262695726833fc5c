"""The loaded-memory view of PE images: overlaps, zero fill, relocations, undefined bytes."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from aicert.verifier.boot.pe import parse_pe
from aicert.verifier.boot.pe_loader import LoadedImage, section_data
from aicert.verifier.errors import FormatError
from hypothesis import given, settings
from hypothesis import strategies as st
from pe_build import SECTION_ALIGNMENT, SectionSpec, build_pe

# The host's stub (bookworm) and, in the oracle cache, trixie's and backports'.
STUBS = [
    "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "bpo/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
]


def test_later_section_overwrites_earlier_in_memory() -> None:
    # .sbat grown past the start of .sdmagic, as ukify does with a 252 stub.
    data = build_pe(
        [
            SectionSpec(b".sbat", b"S" * 0x180, virtual_address=0x1000),
            SectionSpec(b".sdmagic", b"M" * 0x20, virtual_address=0x1100),
        ]
    )
    pe = parse_pe(data)
    assert section_data(pe, data, ".sbat") == b"S" * 0x100 + b"M" * 0x20 + b"S" * 0x60
    assert section_data(pe, data, ".sdmagic") == b"M" * 0x20


def test_virtual_size_cuts_and_zero_fills() -> None:
    data = build_pe(
        [SectionSpec(b".cmdline", b"quiet\n"), SectionSpec(b".bss", b"abc", virtual_size=5000)]
    )
    pe = parse_pe(data)
    assert section_data(pe, data, ".cmdline") == b"quiet\n"
    assert section_data(pe, data, ".bss") == b"abc" + bytes(4997)


def test_bytes_no_one_writes_are_refused() -> None:
    data = build_pe([SectionSpec(b".a", b"x" * 16)])
    image = LoadedImage(parse_pe(data), data)
    assert image.read(SECTION_ALIGNMENT, 16) == b"x" * 16
    with pytest.raises(FormatError, match="undefined"):
        image.read(SECTION_ALIGNMENT + 0x100, 4)
    with pytest.raises(FormatError, match="SizeOfImage"):
        image.read(SECTION_ALIGNMENT, 1 << 20)


def _reloc_block(page: int, entries: list[tuple[int, int]]) -> bytes:
    words = [(kind << 12) | offset for kind, offset in entries]
    return struct.pack("<II", page, 8 + 2 * len(words)) + struct.pack(f"<{len(words)}H", *words)


def test_relocated_sections_are_refused_others_read() -> None:
    # DIR64 relocation at .data+8; the .reloc section sits at 0x3000.
    relocs = _reloc_block(0x2000, [(10, 8), (0, 0)])
    data = build_pe(
        [
            SectionSpec(b".cmdline", b"quiet", virtual_address=0x1000),
            SectionSpec(b".data", b"D" * 32, virtual_address=0x2000),
            SectionSpec(b".reloc", relocs, virtual_address=0x3000),
        ],
        base_relocations=(0x3000, len(relocs)),
    )
    pe = parse_pe(data)
    image = LoadedImage(pe, data)
    assert image.relocations == ((0x2008, 8),)
    assert section_data(pe, data, ".cmdline") == b"quiet"
    with pytest.raises(FormatError, match=r"relocations patch section '\.data'"):
        section_data(pe, data, ".data")
    assert image.relocated(0x2000, 9)
    assert image.relocated(0x200F, 1)
    assert not image.relocated(0x2010, 4)
    assert not image.relocated(0x2000, 8)


def test_unknown_relocation_type_is_refused() -> None:
    relocs = _reloc_block(0x1000, [(7, 0)])
    data = build_pe(
        [SectionSpec(b".reloc", relocs, virtual_address=0x1000)],
        base_relocations=(0x1000, len(relocs)),
    )
    with pytest.raises(FormatError, match="relocation type 7"):
        LoadedImage(parse_pe(data), data)


def test_section_beyond_size_of_image_is_refused() -> None:
    data = bytearray(build_pe([SectionSpec(b".a", b"x" * 16)]))
    size_of_image_at = 0x40 + 24 + 56
    struct.pack_into("<I", data, size_of_image_at, 0x800)
    with pytest.raises(FormatError, match="SizeOfImage"):
        parse_pe(bytes(data))


@pytest.mark.parametrize(
    "path", STUBS, ids=["bookworm-252", "trixie-257", "bookworm-backports-254"]
)
def test_real_stub_relocations_spare_its_payload_sections(path: str, uki_oracles: Path) -> None:
    data = (uki_oracles / path).read_bytes()
    pe = parse_pe(data)
    image = LoadedImage(pe, data)
    for name in (b".sdmagic", b".sbat"):
        section = next(s for s in pe.sections if s.name == name)
        assert not image.relocated(section.virtual_address, section.virtual_size)
        assert b"systemd" in image.section(section)


_SEED = build_pe(
    [
        SectionSpec(b".a", b"A" * 0x180, virtual_address=0x1000),
        SectionSpec(b".b", b"B" * 0x20, virtual_address=0x1100),
        SectionSpec(b".reloc", _reloc_block(0x1000, [(10, 0x150)]), virtual_address=0x2000),
    ],
    base_relocations=(0x2000, 10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x3FF), st.integers(0, 255)), max_size=6))
def test_mutated_images_raise_only_format_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_SEED)
    for offset, value in edits:
        data[offset] = value
    with contextlib.suppress(FormatError):
        pe = parse_pe(bytes(data))
        image = LoadedImage(pe, bytes(data))
        for section in pe.sections:
            with contextlib.suppress(FormatError):
                assert len(image.section(section)) == section.virtual_size
