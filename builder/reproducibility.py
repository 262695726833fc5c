"""``aicert-build check-reproducible``: build twice from a clean state and compare.

Each build gets its own output, workspace and incremental cache (so the tools
tree and the image are made from scratch twice); only the download cache of
Debian packages is shared, which changes no bytes of the result. On a
difference the report names the first differing GPT partition of the disk and
the first differing section of the UKI.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.builder.image import BuildResult, ImageRequest, build_image
from aicert.builder.mkosi import snapshot_sources
from aicert.builder.module_signing import ModuleSigning
from aicert.verifier.boot.pe import parse_pe
from aicert.verifier.errors import FormatError

_CHUNK = 1 << 20
SECTOR_SIZE = 512  # the image's SectorSize=


@dataclass(frozen=True)
class Comparison:
    """What two builds agree on, and where they first differ."""

    same_uki: bool
    same_roothash: bool
    same_disk: bool
    differences: tuple[str, ...]

    @property
    def reproducible(self) -> bool:
        return self.same_uki and self.same_roothash and self.same_disk


def compare_builds(first: Path, second: Path) -> Comparison:
    a = _outputs(first)
    b = _outputs(second)
    same_uki = a["uki"]["sha256"] == b["uki"]["sha256"]
    same_disk = a["disk"]["sha256"] == b["disk"]["sha256"]
    same_roothash = a["roothash"] == b["roothash"]
    differences: list[str] = []
    if not same_uki:
        differences += uki_differences(first / "uki.efi", second / "uki.efi")
    if not same_disk:
        differences += partition_differences(first / "disk.raw", second / "disk.raw")
    return Comparison(same_uki, same_roothash, same_disk, tuple(differences))


def _outputs(build: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((build / "recipe.json").read_text())
    outputs: dict[str, Any] = body["outputs"]
    return outputs


def uki_differences(first: Path, second: Path) -> list[str]:
    """Names of the UKI sections whose contents differ (or that only one UKI has)."""
    sections = [_sections(first), _sections(second)]
    names = sorted(set(sections[0]) | set(sections[1]))
    return [
        f"UKI section {name}" for name in names if sections[0].get(name) != sections[1].get(name)
    ]


def _sections(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    pe = parse_pe(data)
    return {
        s.name.decode(errors="replace"): hashlib.sha256(
            data[s.raw_offset : s.raw_offset + s.raw_size]
        ).hexdigest()
        for s in pe.sections
    }


def partition_differences(first: Path, second: Path) -> list[str]:
    """Differing partitions (by GPT name and type), or the partition tables themselves."""
    tables = [read_gpt(first), read_gpt(second)]
    if [(p["name"], p["size"]) for p in tables[0]] != [(p["name"], p["size"]) for p in tables[1]]:
        return ["disk partition layout (GPT)"]
    found = []
    for a, b in zip(tables[0], tables[1], strict=True):
        if _range_digest(first, a["start"], a["size"]) != _range_digest(
            second, b["start"], b["size"]
        ):
            found.append(f"disk partition {a['name']} ({a['type']})")
    return found or ["disk partition table or gaps between partitions"]


def read_gpt(disk: Path, sector: int = SECTOR_SIZE) -> list[dict[str, Any]]:
    """The used entries of the disk's GPT: name, type GUID, byte offset and size."""
    with disk.open("rb") as f:
        f.seek(sector)
        header = f.read(92)
        if len(header) < 92 or header[:8] != b"EFI PART":
            raise FormatError(f"{disk} has no GPT header at LBA 1")
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        if not 128 <= entry_size <= 4096 or count > 1024:
            raise FormatError(f"{disk}: implausible GPT entry array ({count} x {entry_size})")
        f.seek(entries_lba * sector)
        table = f.read(count * entry_size)
    if len(table) != count * entry_size:
        raise FormatError(f"{disk}: GPT entry array is truncated")
    partitions = []
    for i in range(count):
        entry = table[i * entry_size : (i + 1) * entry_size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        partitions.append(
            {
                "name": name,
                "type": str(uuid.UUID(bytes_le=entry[:16])).upper(),
                "start": first * sector,
                "size": (last - first + 1) * sector,
            }
        )
    return partitions


def _range_digest(path: Path, start: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(start)
        left = size
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def check_reproducible(
    profile: str,
    workdir: Path,
    package_cache: Path,
    on_line: Callable[[str], None],
    source: Path | None = None,
    module_signing: ModuleSigning | None = None,
) -> tuple[Comparison, list[BuildResult]]:
    """Build ``profile`` twice from a clean state under ``workdir`` and compare the results.

    Both builds read one snapshot of the source tree (``source``, or one taken first),
    so edits made to the checkout meanwhile do not count as irreproducibility.
    """
    source = source or snapshot_sources(workdir / "source")
    results = []
    for n in (1, 2):
        request = ImageRequest(
            output=workdir / f"build-{n}",
            profile=profile,
            package_cache=package_cache,
            incremental_cache=None,
            source_root=source,
            module_signing=module_signing,
        )
        results.append(build_image(request, on_line))
    return compare_builds(results[0].output, results[1].output), results
