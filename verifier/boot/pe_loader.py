"""A PE image as UEFI firmware lays it out in memory, for code that reads loaded sections.

systemd-stub measures and uses its sections from memory (ImageBase + VirtualAddress,
VirtualSize bytes: PeSectionVector.memory_offset/memory_size in src/boot/pe.c of
systemd 252 and 257), not from the file. edk2's loader (MdePkg BasePeCoffLib,
PeCoffLoaderLoadImage) builds that memory by copying the headers, then every section in
section-table order: min(VirtualSize, SizeOfRawData) bytes from the file (all of
SizeOfRawData when VirtualSize is 0), zero-filled up to VirtualSize. A later section
overwrites an earlier one where they overlap (ukify can produce such images: a grown
.sbat running into the stub's .sdmagic). Then the loader applies base relocations, which
depend on the load address; reading bytes a relocation touches is refused.

Only ranges fully written by the loader can be read: other bytes of the image buffer are
whatever the allocator left there.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from ..errors import FormatError
from ..wire import Reader
from .pe import BASE_RELOCATION_INDEX, PeFile, Section, find_section

_RELOCATION_WIDTH = {0: 0, 1: 2, 2: 2, 3: 4, 10: 8}
"""IMAGE_REL_BASED_* type → bytes patched (ABSOLUTE, HIGH, LOW, HIGHLOW, DIR64)."""


@dataclass(frozen=True)
class _Placement:
    """``size`` bytes the loader writes at ``address``: ``copied`` bytes from the file at
    ``file_offset``, then zeros."""

    address: int
    size: int
    file_offset: int
    copied: int


class LoadedImage:
    """Read access to the memory image of ``data`` (parsed as ``pe``) after loading."""

    def __init__(self, pe: PeFile, data: bytes) -> None:
        self.pe = pe
        self._data = memoryview(data).toreadonly()
        placements = [_Placement(0, pe.size_of_headers, 0, pe.size_of_headers)]
        for s in pe.sections:
            placements.append(
                _Placement(
                    s.virtual_address, s.memory_size, s.raw_offset, min(s.memory_size, s.raw_size)
                )
            )
        self._placements = tuple(placements)
        self.relocations = self._relocation_targets()

    def read(self, address: int, size: int) -> bytes:
        """The ``size`` bytes at RVA ``address``, before relocation."""
        if address < 0 or size < 0 or address + size > self.pe.size_of_image:
            raise FormatError(f"PE image: [{address}, +{size}) lies outside SizeOfImage")
        out = bytearray(size)
        end = address + size
        covered: list[tuple[int, int]] = []
        for p in self._placements:
            lo, hi = max(p.address, address), min(p.address + p.size, end)
            if lo >= hi:
                continue
            # Bytes [lo, hi) of this placement: file bytes up to `copied`, zeros after.
            file_hi = min(hi, p.address + p.copied)
            if lo < file_hi:
                src = p.file_offset + (lo - p.address)
                out[lo - address : file_hi - address] = self._data[src : src + file_hi - lo]
            zero_lo = max(lo, p.address + p.copied)
            if zero_lo < hi:
                out[zero_lo - address : hi - address] = bytes(hi - zero_lo)
            covered.append((lo, hi))
        reached = address
        for lo, hi in sorted(covered):
            if lo > reached:
                break
            reached = max(reached, hi)
        if reached < end:
            raise FormatError(f"PE image: the loader leaves bytes at RVA {reached} undefined")
        return bytes(out)

    def _relocation_targets(self) -> tuple[tuple[int, int], ...]:
        """Sorted (address, width) of every location the base relocations patch."""
        if len(self.pe.data_directories) <= BASE_RELOCATION_INDEX:
            return ()
        directory = self.pe.data_directories[BASE_RELOCATION_INDEX]
        if directory.size == 0:
            return ()
        r = Reader(
            self.read(directory.address, directory.size),
            endian="little",
            what="PE base relocations",
        )
        targets: list[tuple[int, int]] = []
        # The directory may end with padding shorter than a block header.
        while r.remaining >= 8:
            page = r.u32("page RVA")
            block_size = r.u32("block size")
            if block_size < 8 or block_size % 2:
                raise FormatError(f"PE base relocations: bad block size {block_size}")
            block = r.sub(block_size - 8, "relocation block")
            while not block.at_end():
                entry = block.u16("relocation entry")
                kind, offset = entry >> 12, entry & 0xFFF
                width = _RELOCATION_WIDTH.get(kind)
                if width is None:
                    raise FormatError(f"PE base relocations: unsupported relocation type {kind}")
                if width:
                    targets.append((page + offset, width))
        return tuple(sorted(targets))

    def relocated(self, address: int, size: int) -> bool:
        """Whether any base relocation patches a byte of [address, address + size)."""
        t = self.relocations
        i = bisect_left(t, (address, 0))
        if i < len(t) and t[i][0] < address + size:
            return True
        # Targets starting up to 8 bytes (the widest patch) before the range may reach into it.
        j = i - 1
        while j >= 0 and t[j][0] > address - 8:
            if t[j][0] + t[j][1] > address:
                return True
            j -= 1
        return False

    def section(self, section: Section) -> bytes:
        """VirtualSize bytes at the section's address, as the loaded image holds them."""
        if self.relocated(section.virtual_address, section.virtual_size):
            raise FormatError(
                f"PE image: base relocations patch section {section.display_name!r}; "
                "its loaded contents depend on the load address"
            )
        return self.read(section.virtual_address, section.virtual_size)


def section_data(pe: PeFile, data: bytes, name: str) -> bytes:
    """The loaded contents of the first section named ``name`` (see module docstring)."""
    try:
        wanted = name.encode("ascii")
    except UnicodeEncodeError:
        raise FormatError(f"PE section name {name!r} is not ASCII") from None
    section = find_section(pe, wanted)
    if section is None:
        raise FormatError(f"PE image has no {name} section")
    return LoadedImage(pe, data).section(section)
