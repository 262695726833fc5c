"""Fixed VHD: the raw disk image padded to a whole MiB, followed by a 512-byte footer.

Azure accepts only fixed VHDs whose size minus the footer is a multiple of 1 MiB.
Everything here streams: the disk is never held in memory, and zero ranges of a
sparse source stay holes in a written VHD.

The footer layout is the one of the "Virtual Hard Disk Image Format Specification"
(Microsoft, 2006): big-endian fields, cookie ``conectix``, one's-complement checksum.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from aicert.verifier.errors import FormatError, InputError
from aicert.verifier.wire import Reader

SECTOR = 512
MIB = 1 << 20
FOOTER_SIZE = 512
COOKIE = b"conectix"
FEATURES_RESERVED = 0x00000002
FORMAT_VERSION = 0x00010000
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
DISK_TYPE_FIXED = 2
# The VHD epoch: seconds in the footer count from 2000-01-01 00:00:00 UTC.
VHD_EPOCH = 946_684_800
CREATOR_APPLICATION = b"aict"
CREATOR_VERSION = 0x00010000
# The specification names only "Wi2k" and "Mac "; QEMU and Hyper-V write "Wi2k" on every host.
CREATOR_HOST_OS = b"Wi2k"
# A fixed VHD's geometry cannot describe more than 65535 x 16 x 255 sectors (~127 GiB);
# larger disks keep the maximum geometry and rely on current_size, as Azure does.
MAX_CHS_SECTORS = 65535 * 16 * 255
# Namespace of the deterministic unique ids: uuid5(namespace, hex digest of the raw disk).
UNIQUE_ID_NAMESPACE = uuid.UUID("5b0c3c2e-6a7f-4d0e-9d55-6a1c3e9f0a11")

# 8+4+4+8+4+4+4+4+8+8+2+1+1+4+4+16+1+427 = 512 bytes.
_LAYOUT = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")


@dataclass(frozen=True)
class VhdFooter:
    """The fields of a VHD footer (all of them, so that it round-trips byte for byte)."""

    features: int
    format_version: int
    data_offset: int
    timestamp: int
    creator_application: bytes
    creator_version: int
    creator_host_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    unique_id: uuid.UUID
    saved_state: int

    def to_bytes(self) -> bytes:
        """The 512 footer bytes, with the checksum field as stored in this object."""
        return _pack(self, self.checksum)


def _pack(footer: VhdFooter, checksum: int) -> bytes:
    return _LAYOUT.pack(
        COOKIE,
        footer.features,
        footer.format_version,
        footer.data_offset,
        footer.timestamp,
        footer.creator_application,
        footer.creator_version,
        footer.creator_host_os,
        footer.original_size,
        footer.current_size,
        footer.cylinders,
        footer.heads,
        footer.sectors_per_track,
        footer.disk_type,
        checksum,
        footer.unique_id.bytes,
        footer.saved_state,
        bytes(427),
    )


def footer_checksum(footer: VhdFooter) -> int:
    """One's complement of the byte sum of the footer with its checksum field zeroed."""
    return ~sum(_pack(footer, 0)) & 0xFFFFFFFF


def chs_geometry(total_sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) by the algorithm of the VHD specification."""
    sectors = min(total_sectors, MAX_CHS_SECTORS)
    if sectors >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cyl_times_heads = sectors // spt
    else:
        spt = 17
        cyl_times_heads = sectors // spt
        heads = max((cyl_times_heads + 1023) // 1024, 4)
        if cyl_times_heads >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cyl_times_heads = sectors // spt
        if cyl_times_heads >= heads * 1024:
            spt, heads = 63, 16
            cyl_times_heads = sectors // spt
    return cyl_times_heads // heads, heads, spt


def padded_size(raw_size: int, *, minimum: int = MIB) -> int:
    """The disk size in a VHD for Azure: ``raw_size`` rounded up to a whole MiB, at least
    ``minimum`` (itself a whole number of MiB)."""
    if raw_size < 0:
        raise InputError(f"disk size cannot be negative: {raw_size}")
    return max(minimum, -(-raw_size // MIB) * MIB)


def unique_id_for(digest_hex: str) -> uuid.UUID:
    """A unique id derived from the raw disk's SHA-256, so the same image gives the same VHD."""
    return uuid.uuid5(UNIQUE_ID_NAMESPACE, digest_hex.lower())


def timestamp_from_environment() -> int:
    """VHD timestamp from SOURCE_DATE_EPOCH (0, i.e. the VHD epoch, when unset or earlier)."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return 0
    try:
        epoch = int(value)
    except ValueError as exc:
        raise InputError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from exc
    return min(max(epoch - VHD_EPOCH, 0), 0xFFFFFFFF)


def make_footer(disk_size: int, *, unique_id: uuid.UUID, timestamp: int) -> VhdFooter:
    """The footer of a fixed VHD whose disk (all before the footer) is ``disk_size`` bytes."""
    if disk_size <= 0 or disk_size % SECTOR:
        raise InputError(f"a fixed VHD disk size must be a positive multiple of 512: {disk_size}")
    cylinders, heads, spt = chs_geometry(disk_size // SECTOR)
    footer = VhdFooter(
        features=FEATURES_RESERVED,
        format_version=FORMAT_VERSION,
        data_offset=FIXED_DATA_OFFSET,
        timestamp=timestamp,
        creator_application=CREATOR_APPLICATION,
        creator_version=CREATOR_VERSION,
        creator_host_os=CREATOR_HOST_OS,
        original_size=disk_size,
        current_size=disk_size,
        cylinders=cylinders,
        heads=heads,
        sectors_per_track=spt,
        disk_type=DISK_TYPE_FIXED,
        checksum=0,
        unique_id=unique_id,
        saved_state=0,
    )
    return replace(footer, checksum=footer_checksum(footer))


def parse_footer(data: bytes) -> VhdFooter:
    """Parse and check a 512-byte VHD footer (cookie, checksum, reserved bytes)."""
    r = Reader(data, endian="big", what="VHD footer")
    if r.take(8, "cookie") != COOKIE:
        raise FormatError("VHD footer: cookie is not 'conectix'")
    footer = VhdFooter(
        features=r.u32("features"),
        format_version=r.u32("file format version"),
        data_offset=r.u64("data offset"),
        timestamp=r.u32("timestamp"),
        creator_application=r.take(4, "creator application"),
        creator_version=r.u32("creator version"),
        creator_host_os=r.take(4, "creator host OS"),
        original_size=r.u64("original size"),
        current_size=r.u64("current size"),
        cylinders=r.u16("cylinders"),
        heads=r.u8("heads"),
        sectors_per_track=r.u8("sectors per track"),
        disk_type=r.u32("disk type"),
        checksum=r.u32("checksum"),
        unique_id=uuid.UUID(bytes=r.take(16, "unique id")),
        saved_state=r.u8("saved state"),
    )
    if any(r.take(427, "reserved")):
        raise FormatError("VHD footer: reserved bytes are not zero")
    r.expect_end()
    expected = footer_checksum(footer)
    if footer.checksum != expected:
        raise FormatError(
            f"VHD footer: checksum is {footer.checksum:#010x}, the footer sums to {expected:#010x}"
        )
    if footer.format_version != FORMAT_VERSION:
        raise FormatError(f"VHD footer: unsupported format version {footer.format_version:#010x}")
    return footer


def check_fixed_for_azure(footer: VhdFooter, file_size: int) -> None:
    """Check that ``footer`` describes a fixed VHD of ``file_size`` bytes that Azure accepts."""
    if footer.disk_type != DISK_TYPE_FIXED:
        raise FormatError(f"VHD footer: disk type {footer.disk_type}, Azure needs 2 (fixed)")
    if footer.data_offset != FIXED_DATA_OFFSET:
        raise FormatError("VHD footer: a fixed disk must have data offset 0xFFFFFFFFFFFFFFFF")
    if footer.current_size + FOOTER_SIZE != file_size:
        raise FormatError(
            f"VHD footer: current size {footer.current_size} + 512 is not the file size {file_size}"
        )
    if footer.current_size % MIB:
        raise FormatError(f"VHD footer: disk size {footer.current_size} is not a whole MiB")
    if footer.saved_state:
        raise FormatError("VHD footer: saved state is set")


def read_footer(path: Path, *, check_azure: bool = True) -> VhdFooter:
    """Read and parse the footer of the VHD file at ``path``; by default also check that
    Azure accepts it (fixed, whole MiB, size matching the file)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < FOOTER_SIZE:
                raise FormatError(f"{path}: {size} bytes, too short for a VHD footer")
            f.seek(size - FOOTER_SIZE)
            footer = parse_footer(f.read(FOOTER_SIZE))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if check_azure:
        check_fixed_for_azure(footer, size)
    return footer


@dataclass(frozen=True)
class FixedVhd:
    """A fixed VHD seen through its source: ``raw`` bytes, zero padding, then ``footer``.

    Nothing is copied: readers take the raw file's bytes where they lie.
    """

    raw: Path
    raw_size: int
    footer: VhdFooter

    @property
    def disk_size(self) -> int:
        return self.footer.current_size

    @property
    def size(self) -> int:
        """Bytes of the whole VHD, footer included (the Azure upload size)."""
        return self.disk_size + FOOTER_SIZE


def raw_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) ranges of the open file ``fd`` that may hold data; holes are left out.

    Falls back to the whole file where the file system cannot report holes.
    """
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            yield pos, size
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def sha256_of(path: Path, *, chunk: int = 4 * MIB) -> str:
    """Hex SHA-256 of a (possibly sparse) file, streaming; holes are hashed without reading."""
    digest = hashlib.sha256()
    zeros = bytes(chunk)
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            pos = 0
            for start, end in raw_extents(f.fileno(), size):
                _hash_zeros(digest, start - pos, zeros)
                f.seek(start)
                left = end - start
                while left:
                    block = f.read(min(chunk, left))
                    if not block:
                        raise InputError(f"{path} shrank while it was being read")
                    digest.update(block)
                    left -= len(block)
                pos = end
            _hash_zeros(digest, size - pos, zeros)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest()


def _hash_zeros(digest: hashlib._Hash, n: int, zeros: bytes) -> None:
    while n > 0:
        step = min(n, len(zeros))
        digest.update(zeros[:step] if step < len(zeros) else zeros)
        n -= step


def fixed_vhd_for(
    raw: Path, *, digest_hex: str, timestamp: int | None = None, min_disk_size: int = MIB
) -> FixedVhd:
    """Describe the fixed VHD of the raw disk ``raw`` whose SHA-256 is ``digest_hex``.

    ``min_disk_size`` pads small disks further (Azure refuses uploads under 20 MiB).
    """
    try:
        raw_size = raw.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {raw}: {exc.strerror}") from exc
    if raw_size == 0:
        raise InputError(f"{raw} is empty")
    footer = make_footer(
        padded_size(raw_size, minimum=min_disk_size),
        unique_id=unique_id_for(digest_hex),
        timestamp=timestamp_from_environment() if timestamp is None else timestamp,
    )
    return FixedVhd(raw=raw, raw_size=raw_size, footer=footer)


def write_vhd(vhd: FixedVhd, out: Path, *, chunk: int = 4 * MIB) -> None:
    """Write ``vhd`` to ``out``, streaming; all-zero chunks become holes in the output."""
    zeros = bytes(chunk)
    try:
        with vhd.raw.open("rb") as src, out.open("wb") as dst:
            for start, end in raw_extents(src.fileno(), vhd.raw_size):
                src.seek(start)
                pos = start
                while pos < end:
                    block = src.read(min(chunk, end - pos))
                    if not block:
                        raise InputError(f"{vhd.raw} shrank while it was being read")
                    if block != zeros[: len(block)]:
                        dst.seek(pos)
                        dst.write(block)
                    pos += len(block)
            dst.truncate(vhd.disk_size)
            dst.seek(vhd.disk_size)
            dst.write(vhd.footer.to_bytes())
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from exc
