"""Upload a raw disk as an EBS snapshot through the EBS direct APIs.

StartSnapshot, one PutSnapshotBlock per non-zero 512 KiB block (a block never
written reads as zeros, so the sparse parts of ``disk.raw`` cost nothing), then
CompleteSnapshot with the count of blocks written. Each block carries its
SHA-256, which EBS checks on receipt; a throttled block is retried with backoff
by :func:`~aicert.builder.platforms.aws.errors.call`.

Why not S3 + ImportSnapshot: it needs a bucket, the ``vmimport`` service role and an
import task that converts the disk on AWS's side; the direct APIs need none of
these, write exactly the bytes of the disk, and leave nothing behind but the
snapshot itself.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.errors import CloudError, InputError

from .clients import AwsClients

BLOCK = 512 * 1024
GIB = 1 << 30


@dataclass(frozen=True)
class SnapshotUpload:
    snapshot_id: str
    blocks_written: int
    bytes_sent: int
    disk_size: int
    seconds: float


def volume_gib(size: int) -> int:
    """The smallest whole number of GiB that holds ``size`` bytes (EBS sizes are GiB)."""
    return max(1, -(-size // GIB))


def nonzero_blocks(disk: Path) -> Iterator[tuple[int, bytes]]:
    """(index, 512 KiB block) for every block of ``disk`` that is not all zeros."""
    zero = bytes(BLOCK)
    with disk.open("rb") as f:
        index = 0
        while chunk := f.read(BLOCK):
            if len(chunk) < BLOCK:
                chunk = chunk.ljust(BLOCK, b"\0")
            if chunk != zero:
                yield index, chunk
            index += 1


def upload_snapshot(
    clients: AwsClients,
    disk: Path,
    *,
    tags: dict[str, str],
    description: str,
    client_token: str,
    workers: int = 8,
) -> SnapshotUpload:
    """Write ``disk`` into a new snapshot; on any failure the snapshot is deleted."""
    try:
        size = disk.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {disk}: {exc.strerror}") from exc
    started = time.monotonic()
    snap = clients.ebs_call(
        "starting the EBS snapshot",
        "start_snapshot",
        VolumeSize=volume_gib(size),
        Description=description,
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        ClientToken=client_token,
        Timeout=60,
    )
    snapshot_id = str(snap["SnapshotId"])
    try:
        written = _put_blocks(clients, snapshot_id, disk, workers)
        clients.ebs_call(
            f"completing snapshot {snapshot_id}",
            "complete_snapshot",
            SnapshotId=snapshot_id,
            ChangedBlocksCount=written,
        )
        _wait_completed(clients, snapshot_id)
    except BaseException:
        clients.ec2_call(
            f"deleting the unfinished snapshot {snapshot_id}",
            "delete_snapshot",
            SnapshotId=snapshot_id,
        )
        raise
    return SnapshotUpload(snapshot_id, written, written * BLOCK, size, time.monotonic() - started)


def _put_blocks(clients: AwsClients, snapshot_id: str, disk: Path, workers: int) -> int:
    def put(item: tuple[int, bytes]) -> None:
        index, data = item
        clients.ebs_call(
            f"writing block {index} of snapshot {snapshot_id}",
            "put_snapshot_block",
            SnapshotId=snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )

    # At most 2 x workers blocks are read ahead, so memory stays bounded on any disk size.
    written = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[None]] = set()
        for item in nonzero_blocks(disk):
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                written += _settled(done)
            pending.add(pool.submit(put, item))
        written += _settled(pending)
    return written


def _settled(futures: set[Future[None]]) -> int:
    """How many of ``futures`` succeeded; the first failure is raised (the rest are waited for)."""
    wait(futures)
    for future in futures:
        future.result()
    return len(futures)


def _wait_completed(clients: AwsClients, snapshot_id: str, timeout: float = 1800.0) -> None:
    """CompleteSnapshot is asynchronous: the snapshot is usable once EC2 says completed."""
    deadline = time.monotonic() + timeout
    while True:
        (snap,) = clients.ec2_call(
            f"reading snapshot {snapshot_id}", "describe_snapshots", SnapshotIds=[snapshot_id]
        )["Snapshots"]
        state = snap.get("State")
        if state == "completed":
            return
        if state == "error" or time.monotonic() > deadline:
            why = snap.get("StateMessage") or "no reason given"
            raise CloudError(f"snapshot {snapshot_id} is {state} ({why}); run the deploy again")
        time.sleep(2)
