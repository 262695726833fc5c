"""How many bytes does `deploy azure` send, and how parallel is the upload?

Runs the real deploy code (Azure SDK included) against the local fake of Azure
(tests/azure_fake.py), whose page endpoint sleeps ``--latency`` seconds per write
to stand in for a network round trip, and prints, per image: raw size, VHD size,
bytes sent, page writes, the most writes seen in flight at once, and time.

Images: a sparse 1 GiB file with a few MiB of data; a dense (non-sparse) 600 MB
file holding ~200 MB of data laid out like a disk (boot partition, file system,
verity tree, scattered metadata blocks); and any disk images given with --image.

    .venv/bin/python benchmarks/bench_azure_upload.py [--image out/disk.raw] [--latency 0.01]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from aicert.builder.platforms.azure.clients import AzureClients, ClientOptions
from aicert.builder.platforms.azure.deploy import DeploymentSpec, deploy_image
from azure_fake import FakeAzure, FakeCredential

MIB = 1 << 20


def sparse_image(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(1 << 30)
        for offset, size in ((0, 64 * 1024), (1 * MIB, 3 * MIB), (700 * MIB, 512 * 1024)):
            f.seek(offset)
            f.write(os.urandom(size))
    return path


def dense_image(path: Path) -> Path:
    """600 MB written in full (zeros included), ~200 MB of it data."""
    rng = random.Random(1)  # noqa: S311 - a reproducible layout, not a secret
    size = 600 * 1000 * 1000 // 4096 * 4096
    with path.open("wb") as f:
        f.write(bytes(size))
        f.seek(0)
        f.write(os.urandom(34 * 512))  # protective MBR + GPT
        f.seek(MIB)
        f.write(os.urandom(45 * MIB))  # ESP: the UKI
        f.seek(130 * MIB)
        f.write(os.urandom(145 * MIB))  # erofs root
        f.seek(400 * MIB)
        f.write(os.urandom(2 * MIB))  # verity hash tree
        for _ in range(2000):  # file-system metadata scattered over free space
            f.seek(rng.randrange(0, size - 4096) // 4096 * 4096)
            f.write(os.urandom(4096))
        f.seek(size - 33 * 512)
        f.write(os.urandom(33 * 512))  # backup GPT
    return path


def measure(disk: Path, latency: float, workers: int) -> None:
    fake = FakeAzure()
    fake.add_resource_group("bench")
    fake.page_latency = latency
    clients = AzureClients(
        fake.subscription,
        FakeCredential(),
        ClientOptions(transport=fake.transport(), polling_interval=0),
    )
    spec = DeploymentSpec(
        resource_group="bench", location="westeurope", disk=disk, image_version="1.0.0"
    )
    started = time.monotonic()
    result = deploy_image(clients, spec, workers=workers)
    took = time.monotonic() - started
    up = result.upload
    assert up is not None
    on_disk = disk.stat().st_blocks * 512
    print(
        f"{disk.name}: raw {up.raw_size / MIB:.1f} MiB (allocated {on_disk / MIB:.1f} MiB), "
        f"VHD {up.vhd_size / MIB:.1f} MiB, sent {up.bytes_sent / MIB:.1f} MiB "
        f"({100 * up.bytes_sent / up.raw_size:.1f} % of raw) in {up.page_writes} page writes, "
        f"max {fake.max_page_in_flight} in flight of {workers}, upload {up.seconds:.1f} s, "
        f"deploy {took:.1f} s, {len(fake.requests)} requests"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, action="append", default=[])
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aicert-bench-") as tmp:
        images = [sparse_image(Path(tmp) / "sparse-1GiB.raw"), dense_image(Path(tmp) / "dense.raw")]
        for disk in [*images, *args.image]:
            measure(disk, args.latency, args.workers)


if __name__ == "__main__":
    main()
