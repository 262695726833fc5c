"""Fixed VHD footer and streaming conversion, checked against qemu-img as an outside oracle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from aicert.builder.platforms.azure import vhd
from aicert.verifier.errors import FormatError, InputError
from azure_fixtures import sparse_disk
from hypothesis import given, settings
from hypothesis import strategies as st

MIB = 1 << 20
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


def _footer(size: int = 20 * MIB) -> vhd.VhdFooter:
    return vhd.make_footer(size, unique_id=uuid.UUID(int=7), timestamp=12345)


def _qemu_info(path: Path, fmt: str = "vpc") -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-f", fmt, "--output=json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return dict(json.loads(out))


# ---- footer fields and checksum ------------------------------------------------------------


def test_footer_layout_matches_the_specification() -> None:
    raw = _footer(20 * MIB).to_bytes()
    assert len(raw) == 512
    assert raw[0:8] == b"conectix"
    assert raw[8:12] == (2).to_bytes(4, "big")  # features: reserved bit always set
    assert raw[12:16] == (0x00010000).to_bytes(4, "big")
    assert raw[16:24] == b"\xff" * 8  # fixed disks have no dynamic header
    assert raw[24:28] == (12345).to_bytes(4, "big")
    assert raw[28:32] == b"aict"
    assert raw[36:40] == b"Wi2k"
    assert int.from_bytes(raw[40:48], "big") == 20 * MIB
    assert int.from_bytes(raw[48:56], "big") == 20 * MIB
    assert raw[60:64] == (2).to_bytes(4, "big")  # disk type fixed
    assert raw[68:84] == uuid.UUID(int=7).bytes
    assert raw[84] == 0
    assert raw[85:] == bytes(427)
    checksum = int.from_bytes(raw[64:68], "big")
    zeroed = raw[:64] + bytes(4) + raw[68:]
    assert checksum == (~sum(zeroed)) & 0xFFFFFFFF


@pytest.mark.parametrize(
    ("sectors", "geometry"),
    [
        (2048, (30, 4, 17)),  # 1 MiB
        (40960, (602, 4, 17)),  # 20 MiB
        (2097152, (2080, 16, 63)),  # 1 GiB
        (83886080, (20560, 16, 255)),  # 40 GiB
        (65535 * 16 * 255 + 1000, (65535, 16, 255)),  # beyond CHS: maximum geometry
    ],
)
def test_chs_geometry_vectors(sectors: int, geometry: tuple[int, int, int]) -> None:
    assert vhd.chs_geometry(sectors) == geometry


@needs_qemu_img
@pytest.mark.parametrize("size", ["1M", "20M", "100M", "1000M", "3G", "40G", "130G"])
def test_geometry_and_checksum_agree_with_qemu(tmp_path: Path, size: str) -> None:
    """qemu-img writes footers by the same specification: parse them, recompute CHS."""
    image = tmp_path / "q.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", str(image), size],
        check=True,
    )
    footer = vhd.read_footer(image, check_azure=False)
    assert footer.disk_type == vhd.DISK_TYPE_FIXED
    assert footer.creator_application == b"qemu"
    geometry = (footer.cylinders, footer.heads, footer.sectors_per_track)
    assert vhd.chs_geometry(footer.current_size // 512) == geometry


def test_footer_round_trips() -> None:
    footer = _footer(64 * MIB)
    assert vhd.parse_footer(footer.to_bytes()) == footer


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "cookie"), (64, "checksum"), (300, "reserved"), (13, "checksum")],
)
def test_parse_rejects_damaged_footers(offset: int, message: str) -> None:
    raw = bytearray(_footer().to_bytes())
    raw[offset] ^= 0x01
    with pytest.raises(FormatError, match=message):
        vhd.parse_footer(bytes(raw))


def test_parse_rejects_short_and_long_input() -> None:
    raw = _footer().to_bytes()
    with pytest.raises(FormatError, match="truncated"):
        vhd.parse_footer(raw[:511])
    with pytest.raises(FormatError, match="trailing"):
        vhd.parse_footer(raw + b"\0")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_parse_random_bytes_raises_only_format_errors(data: bytes) -> None:
    try:
        footer = vhd.parse_footer(data)
    except FormatError:
        return
    assert footer.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=(1 << 40) // 512),
    st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_footers_parse_to_the_same_bytes_or_fail(
    sectors: int, mutations: list[tuple[int, int]]
) -> None:
    raw = bytearray(vhd.make_footer(sectors * 512, unique_id=uuid.uuid4(), timestamp=1).to_bytes())
    for offset, value in mutations:
        raw[offset] = value
    try:
        footer = vhd.parse_footer(bytes(raw))
    except FormatError:
        return
    assert footer.to_bytes() == bytes(raw)
    assert footer.checksum == vhd.footer_checksum(footer)


@given(st.integers(min_value=1, max_value=1 << 44))
def test_padded_size_is_whole_mib_and_covers_the_disk(raw_size: int) -> None:
    padded = vhd.padded_size(raw_size)
    assert padded % MIB == 0
    assert raw_size <= padded < raw_size + MIB
    assert vhd.padded_size(raw_size, minimum=20 * MIB) >= 20 * MIB


def test_make_footer_refuses_unaligned_sizes() -> None:
    with pytest.raises(InputError):
        vhd.make_footer(1000, unique_id=uuid.UUID(int=0), timestamp=0)


def test_check_fixed_for_azure() -> None:
    footer = _footer(20 * MIB)
    vhd.check_fixed_for_azure(footer, 20 * MIB + 512)
    with pytest.raises(FormatError, match="file size"):
        vhd.check_fixed_for_azure(footer, 20 * MIB)
    odd = vhd.make_footer(20 * MIB + 512, unique_id=uuid.UUID(int=0), timestamp=0)
    with pytest.raises(FormatError, match="whole MiB"):
        vhd.check_fixed_for_azure(odd, 20 * MIB + 1024)


def test_timestamp_comes_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert vhd.timestamp_from_environment() == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(vhd.VHD_EPOCH + 86400))
    assert vhd.timestamp_from_environment() == 86400
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    assert vhd.timestamp_from_environment() == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        vhd.timestamp_from_environment()


def test_unique_id_is_deterministic_per_digest() -> None:
    a = vhd.unique_id_for("ab" * 32)
    assert a == vhd.unique_id_for("AB" * 32)
    assert a != vhd.unique_id_for("cd" * 32)


# ---- streaming over real files --------------------------------------------------------------


def test_sha256_of_sparse_and_dense_files(tmp_path: Path) -> None:
    sparse = sparse_disk(tmp_path / "s.raw", 9 * MIB + 123, {5 * MIB: b"x" * 5000, 9 * MIB: b"y"})
    dense = tmp_path / "d.raw"
    dense.write_bytes(os.urandom(3 * MIB + 7))
    for path in (sparse, dense):
        assert vhd.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@needs_qemu_img
def test_written_vhd_is_read_by_qemu_with_the_padded_size(tmp_path: Path) -> None:
    raw = sparse_disk(
        tmp_path / "disk.raw", 30 * MIB + 4096, {0: b"\xeb\x3c\x90", 17 * MIB: os.urandom(70000)}
    )
    digest = vhd.sha256_of(raw)
    image = vhd.fixed_vhd_for(raw, digest_hex=digest, timestamp=0)
    out = tmp_path / "disk.vhd"
    vhd.write_vhd(image, out)
    assert out.stat().st_size == 31 * MIB + 512
    assert (out.stat().st_size - 512) % MIB == 0
    info = _qemu_info(out)
    assert info["format"] == "vpc"
    assert info["virtual-size"] == 31 * MIB
    # The zero ranges stayed holes.
    assert out.stat().st_blocks * 512 < 2 * MIB
    footer = vhd.read_footer(out)
    assert footer.unique_id == vhd.unique_id_for(digest)
    # qemu sees the raw bytes then zeros.
    subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(out)], check=True
    )


@needs_qemu_img
def test_qemu_refuses_a_footer_our_parser_refuses(tmp_path: Path) -> None:
    raw = sparse_disk(tmp_path / "disk.raw", 2 * MIB, {0: b"boot"})
    image = vhd.fixed_vhd_for(raw, digest_hex=vhd.sha256_of(raw), timestamp=0)
    out = tmp_path / "bad.vhd"
    vhd.write_vhd(image, out)
    with out.open("r+b") as f:
        f.seek(image.disk_size + 100)
        f.write(b"\x01")
    with pytest.raises(FormatError, match="reserved"):
        vhd.read_footer(out)
    failed = subprocess.run(
        ["qemu-img", "info", "-f", "vpc", str(out)], capture_output=True, check=False
    )
    assert failed.returncode != 0
    assert b"checksum" in failed.stderr


def test_small_disks_are_padded_to_the_minimum(tmp_path: Path) -> None:
    raw = sparse_disk(tmp_path / "disk.raw", 1000, {0: b"x"})
    image = vhd.fixed_vhd_for(raw, digest_hex="00" * 32, timestamp=0, min_disk_size=20 * MIB)
    assert image.disk_size == 20 * MIB
    assert image.size == 20 * MIB + 512


def test_missing_or_empty_disk_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        vhd.fixed_vhd_for(tmp_path / "nope.raw", digest_hex="00" * 32)
    (tmp_path / "empty.raw").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        vhd.fixed_vhd_for(tmp_path / "empty.raw", digest_hex="00" * 32)
