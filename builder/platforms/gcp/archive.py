"""The raw disk packed the way Compute Engine imports it: ``disk.raw`` in a ``tar.gz``.

GCE requires one file named ``disk.raw`` in a gzip-compressed tar in GNU format; its
own instructions use ``tar --format=oldgnu -Sczf``. GNU tar's sparse mode (-S) stores
the disk's holes as a map instead of zeros, so the archive and its upload stay small.
The archive is deterministic: fixed owner, group, mode and mtime (the recipe's
SOURCE_DATE_EPOCH is not needed here: the digest of the disk names the image), and
gzip without a name or time stamp (-n).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.errors import InputError

from aicert.process import run

ARCHIVE_MEMBER = "disk.raw"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DiskArchive:
    path: Path
    disk_sha256: str
    disk_size: int


def disk_sha256(disk: Path) -> str:
    digest = hashlib.sha256()
    with disk.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pack_disk(disk: Path, workdir: Path) -> DiskArchive:
    """``workdir/disk.tar.gz`` holding ``disk`` as ``disk.raw`` (sparse, deterministic)."""
    if not disk.is_file():
        raise InputError(f"{disk} is not a disk image file; build one with 'aicert-build image'")
    size = disk.stat().st_size
    if size == 0 or size % 512:
        raise InputError(f"{disk} is {size} bytes, not a whole number of 512-byte sectors")
    stage = workdir / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    member = stage / ARCHIVE_MEMBER
    if member.exists() or member.is_symlink():
        member.unlink()
    # A hard link names the disk disk.raw without copying it (same file system);
    # otherwise a sparse-aware copy.
    try:
        os.link(disk, member)
    except OSError:
        run(["cp", "--sparse=always", disk, member])
    archive = workdir / "disk.tar.gz"
    run(
        [
            "tar",
            "--format=oldgnu",
            "--sparse",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0644",
            "--mtime=@0",
            "--use-compress-program=gzip -n",
            "-cf",
            archive,
            "-C",
            stage,
            ARCHIVE_MEMBER,
        ],
        timeout=3600,
    )
    member.unlink()
    return DiskArchive(archive, disk_sha256(disk), size)
