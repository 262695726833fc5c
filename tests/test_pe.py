"""PE/COFF header parsing: real EFI binaries, built layouts, and hostile bytes."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from aicert.verifier.boot.pe import PE32_PLUS_MAGIC, find_section, parse_pe
from aicert.verifier.boot.pe_loader import section_data
from aicert.verifier.errors import FormatError
from hypothesis import given, settings
from hypothesis import strategies as st
from pe_build import CERT_ENTRY_OFFSET, CHECKSUM_OFFSET, SectionSpec, build_pe

BOOKWORM_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")


@pytest.fixture(scope="module")
def stub() -> bytes:
    if not BOOKWORM_STUB.exists():
        pytest.skip(f"{BOOKWORM_STUB} missing: run scripts/install-host-deps.sh")
    return BOOKWORM_STUB.read_bytes()


def test_real_stub_headers(stub: bytes) -> None:
    pe = parse_pe(stub)
    assert pe.magic == PE32_PLUS_MAGIC
    assert pe.machine == 0x8664
    names = [s.name for s in pe.sections]
    assert b".text" in names
    assert b".sdmagic" in names
    assert pe.checksum_offset == pe.pe_offset + 24 + 64
    assert pe.cert_dir_entry_offset == pe.pe_offset + 24 + 112 + 32
    assert pe.cert_table is not None
    assert pe.cert_table.size == 0
    assert b"systemd-stub" in section_data(pe, stub, ".sdmagic")


def test_built_layout_offsets() -> None:
    data = build_pe([SectionSpec(b".text", b"x" * 700)], certificate=b"C" * 24)
    pe = parse_pe(data)
    assert pe.checksum_offset == CHECKSUM_OFFSET
    assert pe.cert_dir_entry_offset == CERT_ENTRY_OFFSET
    assert pe.cert_table is not None
    assert (pe.cert_table.address, pe.cert_table.size) == (len(data) - 24, 24)
    (text,) = pe.sections
    assert (text.raw_size, text.virtual_size, text.raw_offset) == (1024, 700, pe.size_of_headers)


def test_first_section_of_a_name_wins_and_missing_name_fails() -> None:
    data = build_pe([SectionSpec(b".a", b"first"), SectionSpec(b".a", b"second")])
    pe = parse_pe(data)
    assert section_data(pe, data, ".a") == b"first"
    assert find_section(pe, b".b") is None
    with pytest.raises(FormatError, match=r"no \.b section"):
        section_data(pe, data, ".b")


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"ZM" + d[2:], "MZ"),
        (lambda d: _patch(d, 0x3C, "<I", 0x10000), "truncated"),
        (lambda d: _patch(d, 0x40, "<I", 0x4551), "signature"),
        (lambda d: _patch(d, 0x40 + 24, "<H", 0x10C), "neither PE32 nor PE32"),
        # SizeOfHeaders beyond the file.
        (lambda d: _patch(d, 0x40 + 24 + 60, "<I", 1 << 30), "SizeOfHeaders"),
        # NumberOfRvaAndSizes larger than the optional header holds.
        (lambda d: _patch(d, 0x40 + 24 + 108, "<I", 1000), "data directories"),
        # First section's SizeOfRawData runs past the end of the file.
        (lambda d: _patch(d, 0x40 + 24 + 240 + 16, "<I", 1 << 20), "outside the file"),
        # NumberOfSections too large for the file.
        (lambda d: _patch(d, 0x40 + 6, "<H", 0xFFFF), "section table"),
        (lambda d: d[:100], "truncated"),
    ],
)
def test_malformed_headers_raise_format_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    good = build_pe([SectionSpec(b".text", b"x" * 100)])
    with pytest.raises(FormatError, match=message):
        parse_pe(mutate(good))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_pe(data)


_SEED = build_pe(
    [SectionSpec(b".text", b"code" * 100), SectionSpec(b".data", b"d" * 10, virtual_size=64)],
    trailing=b"t" * 5,
    certificate=b"c" * 8,
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 0x3FF), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, len(_SEED)),
)
def test_mutated_headers_raise_only_format_error(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SEED)
    for offset, value in edits:
        data[offset] = value
    try:
        pe = parse_pe(bytes(data[:cut]))
    except FormatError:
        return
    for section in pe.sections:
        with contextlib.suppress(FormatError):
            section_data(pe, bytes(data[:cut]), section.display_name)
