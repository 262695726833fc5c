"""Authenticode digests as edk2 measures them, against lief and explicit byte ranges."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import lief
import pytest
from aicert.verifier.boot.authenticode import authenticode_digest
from aicert.verifier.boot.pe import parse_pe
from aicert.verifier.errors import FormatError
from aicert.verifier.tpm.pcr import SHA1, SHA256, SHA384
from hypothesis import given, settings
from hypothesis import strategies as st
from pe_build import CERT_ENTRY_OFFSET, CHECKSUM_OFFSET, SectionSpec, build_pe

HOST_EFI_BINARIES = [
    Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
    Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
]
# Relative to the oracle cache (the uki_oracles fixture): trixie's and backports' stubs,
# and Debian trixie's kernel.
ORACLE_EFI_BINARIES = [
    "root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "root/usr/lib/systemd/boot/efi/addonx64.efi.stub",
    "root/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
    "bpo/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "kernel/vmlinuz",
]


def lief_authentihash(data: bytes, tmp_path: Path, alg: str = "SHA_256") -> bytes:
    path = tmp_path / "image.efi"
    path.write_bytes(data)
    binary = lief.PE.parse(str(path))
    assert binary is not None
    return bytes(binary.authentihash(getattr(lief.PE.ALGORITHMS, alg)))


def _matches_lief(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    assert authenticode_digest(data) == lief_authentihash(data, tmp_path)
    assert authenticode_digest(data, SHA1) == lief_authentihash(data, tmp_path, "SHA_1")
    assert authenticode_digest(data, SHA384) == lief_authentihash(data, tmp_path, "SHA_384")


@pytest.mark.parametrize("path", HOST_EFI_BINARIES, ids=lambda p: p.name)
def test_host_efi_binaries_match_lief(path: Path, tmp_path: Path) -> None:
    _matches_lief(path, tmp_path)  # systemd-boot-efi: scripts/install-host-deps.sh


@pytest.mark.parametrize("relative", ORACLE_EFI_BINARIES)
def test_debian_efi_binaries_match_lief(relative: str, uki_oracles: Path, tmp_path: Path) -> None:
    _matches_lief(uki_oracles / relative, tmp_path)


def test_regular_layout_matches_lief(tmp_path: Path) -> None:
    data = build_pe(
        [SectionSpec(b".text", b"A" * 1000), SectionSpec(b".data", b"B" * 10, virtual_size=5000)],
        trailing=b"T" * 7,
        certificate=b"C" * 16,
    )
    assert authenticode_digest(data) == lief_authentihash(data, tmp_path)


def test_certificate_table_and_checksum_are_not_hashed() -> None:
    unsigned = build_pe([SectionSpec(b".text", b"A" * 1000)], checksum=0)
    signed = build_pe(
        [SectionSpec(b".text", b"A" * 1000)], certificate=b"W" * 64, checksum=0xDEADBEEF
    )
    assert authenticode_digest(signed) == authenticode_digest(unsigned)


def test_headers_sections_and_trailer_in_edk2_order() -> None:
    # Sections listed out of file order: edk2 sorts them by PointerToRawData.
    data = bytearray(
        build_pe(
            [SectionSpec(b".one", b"1" * 600), SectionSpec(b".two", b"2" * 10)],
            trailing=b"tail",
            certificate=b"C" * 8,
        )
    )
    pe = parse_pe(bytes(data))
    one, two = pe.sections
    # Swap the two section headers in the table.
    t = pe.section_table_offset
    data[t : t + 80] = data[t + 40 : t + 80] + data[t : t + 40]
    data = bytes(data)
    soh = pe.size_of_headers
    expected = hashlib.sha256(
        data[:CHECKSUM_OFFSET]
        + data[CHECKSUM_OFFSET + 4 : CERT_ENTRY_OFFSET]
        + data[CERT_ENTRY_OFFSET + 8 : soh]
        + data[one.raw_offset : one.raw_offset + one.raw_size]
        + data[two.raw_offset : two.raw_offset + two.raw_size]
        + b"tail"
    ).digest()
    assert authenticode_digest(data) == expected


def test_gaps_follow_edk2_byte_count_not_offsets(tmp_path: Path) -> None:
    """edk2 hashes trailing data from offset SizeOfHeaders + sum(SizeOfRawData), so with
    gaps before sections it re-hashes section bytes and skips the real tail; lief does not.
    The firmware writes the PCR, so the firmware's rule is the one that counts."""
    data = build_pe(
        [
            SectionSpec(b".text", b"A" * 1000, gap_before=512),
            SectionSpec(b".data", b"B" * 10, gap_before=100),
        ],
        trailing=b"T" * 7,
    )
    pe = parse_pe(data)
    text, data_section = pe.sections
    hashed = pe.size_of_headers + text.raw_size + data_section.raw_size
    expected = hashlib.sha256(
        data[:CHECKSUM_OFFSET]
        + data[CHECKSUM_OFFSET + 4 : CERT_ENTRY_OFFSET]
        + data[CERT_ENTRY_OFFSET + 8 : pe.size_of_headers]
        + data[text.raw_offset : text.raw_offset + text.raw_size]
        + data[data_section.raw_offset : data_section.raw_offset + data_section.raw_size]
        + data[hashed:]
    ).digest()
    assert authenticode_digest(data) == expected
    assert authenticode_digest(data) != lief_authentihash(data, tmp_path)


def test_empty_sections_are_skipped() -> None:
    with_empty = build_pe([SectionSpec(b".text", b"A" * 100), SectionSpec(b".bss", b"")])
    pe = parse_pe(with_empty)
    assert pe.sections[1].raw_size == 0
    expected = hashlib.sha256(
        with_empty[:CHECKSUM_OFFSET]
        + with_empty[CHECKSUM_OFFSET + 4 : CERT_ENTRY_OFFSET]
        + with_empty[CERT_ENTRY_OFFSET + 8 :]
    ).digest()
    assert authenticode_digest(with_empty) == expected


def test_certificate_larger_than_unhashed_rest_is_refused() -> None:
    data = bytearray(build_pe([SectionSpec(b".text", b"A" * 100)], certificate=b"C" * 8))
    # Claim the certificate starts inside the section: sections + certificate > file size.
    pe = parse_pe(bytes(data))
    assert pe.cert_table is not None
    data[CERT_ENTRY_OFFSET : CERT_ENTRY_OFFSET + 8] = (pe.size_of_headers).to_bytes(4, "little") + (
        len(data) - pe.size_of_headers
    ).to_bytes(4, "little")
    with pytest.raises(FormatError, match="more than the file"):
        authenticode_digest(bytes(data))


def test_sha256_is_the_default() -> None:
    data = build_pe([SectionSpec(b".text", b"x")])
    assert authenticode_digest(data) == authenticode_digest(data, SHA256)


_SEED = build_pe(
    [SectionSpec(b".text", b"code" * 100), SectionSpec(b".data", b"d" * 10, virtual_size=64)],
    trailing=b"t" * 5,
    certificate=b"c" * 8,
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(_SEED)),
)
def test_mutated_images_raise_only_format_error(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SEED)
    for offset, value in edits:
        data[offset] = value
    try:
        digest = authenticode_digest(bytes(data[:cut]))
    except FormatError:
        return
    assert len(digest) == 32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_raise_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        authenticode_digest(data)
