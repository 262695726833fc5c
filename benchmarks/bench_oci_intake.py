"""Environment intake against ``skopeo copy`` of the same image, side by side in one run.

A local docker-registry (Debian's, on 127.0.0.1) serves an image of ``--layers`` gzip
layers holding ``--layer-mib`` MiB each of random-ish files (half random bytes, half
repetitive text, so gzip has something to do). Contenders, run alternately
``--repeat`` times:

- ``skopeo``: ``skopeo copy docker://127.0.0.1:PORT/NAME@sha256:... dir:DIR`` (skopeo
  checks each blob's digest while copying, as we do);
- ``aicert pull``: what the agent's intake does up to the unpacking: the manifest and
  config by digest, then every layer written to disk while its digest is checked, the
  same way and with the same parallelism as ``pull_environment``;
- ``aicert intake``: ``pull_environment`` itself: pull, check, and unpack every layer
  into a root file system (checking each layer's diff ID) — more work than skopeo does;
- ``skopeo + umoci``: the same complete work with the usual tools, when umoci is
  installed: ``skopeo copy ... oci:DIR:env`` then ``umoci unpack --rootless``.

Prints the median time, throughput (compressed bytes per second), and the speed of each
contender relative to skopeo (goal for the pull: >= 0.9x), and of the intake relative
to skopeo + umoci.

    .venv/bin/python benchmarks/bench_oci_intake.py        # 8 x 64 MiB, ~265 MiB compressed
    .venv/bin/python benchmarks/bench_oci_intake.py --layers 2 --layer-mib 16 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from aicert.agent.oci.environment import PARALLEL_DOWNLOADS, pull_environment
from aicert.agent.oci.media import parse_manifest
from aicert.agent.oci.registry import RegistryClient
from oci_support import Registry, file, layer_tar, make_image, running_registry

from aicert.oci_reference import ImageReference, parse_reference
from aicert.process import run

MiB = 1024 * 1024


def random_ish_layer(seed: int, mib: int) -> bytes:
    """``mib`` MiB of files: 4 MiB ones, alternately random and repetitive text."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    entries = []
    for i in range(max(1, mib // 4)):
        if i % 2 == 0:
            data = rng.randbytes(4 * MiB)
        else:
            words = [rng.randbytes(6).hex() for _ in range(512)]
            line = " ".join(words).encode() + b"\n"
            data = (line * (4 * MiB // len(line) + 1))[: 4 * MiB]
        entries.append(file(f"opt/layer{seed}/part{i:03}.bin", data))
    return layer_tar(entries)


def aicert_pull(reference: ImageReference, dest: Path, plain_http: frozenset[str]) -> None:
    client = RegistryClient(reference, plain_http=plain_http)
    manifest = parse_manifest(client.manifest().data)
    dest.mkdir()
    (dest / "config").write_bytes(client.read_small_blob(manifest.config, "config"))
    with ThreadPoolExecutor(PARALLEL_DOWNLOADS) as pool:
        futures = [
            pool.submit(client.download_blob, layer, dest / layer.digest[7:], "layer")
            for layer in manifest.layers
        ]
        for future in futures:
            future.result()


def aicert_intake(reference: ImageReference, dest: Path, plain_http: frozenset[str]) -> None:
    pull_environment(reference, dest, max_bytes=1 << 40, plain_http=plain_http)


def skopeo_copy(registry: Registry, reference: ImageReference, dest: Path) -> None:
    run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{registry.host}/{reference.repository}@{reference.digest}",
            f"dir:{dest}",
        ]
    )


def skopeo_umoci(registry: Registry, reference: ImageReference, dest: Path) -> None:
    source = f"docker://{registry.host}/{reference.repository}@{reference.digest}"
    layout = f"oci:{dest / 'layout'}:env"
    dest.mkdir()
    run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", source, layout])
    run(["umoci", "unpack", "--rootless", "--image", layout[4:], str(dest / "bundle")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--layer-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/aicert-bench-oci"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    try:
        print(f"making {args.layers} layers of {args.layer_mib} MiB ...", flush=True)
        image = make_image([random_ish_layer(i, args.layer_mib) for i in range(args.layers)])
        compressed = sum(len(b) for d, b in image.blobs.items() if d != image.config_digest)
        with running_registry(args.workdir / "registry") as registry:
            reference = parse_reference(registry.push("bench/trainer", image))
            del image
            print(f"image {reference}: {compressed / MiB:.0f} MiB in layers", flush=True)
            plain = frozenset({registry.host})
            contenders: dict[str, Callable[[Path], None]] = {
                "skopeo copy": lambda d: skopeo_copy(registry, reference, d),
                "aicert pull": lambda d: aicert_pull(reference, d, plain),
                "aicert intake": lambda d: aicert_intake(reference, d, plain),
            }
            if shutil.which("umoci"):
                contenders["skopeo + umoci"] = lambda d: skopeo_umoci(registry, reference, d)
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for round_ in range(args.repeat):
                for name, contender in contenders.items():
                    dest = args.workdir / "out"
                    start = time.perf_counter()
                    contender(dest)
                    times[name].append(time.perf_counter() - start)
                    shutil.rmtree(dest)
                    os.sync()
                print(f"round {round_ + 1}/{args.repeat} done", flush=True)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    base = statistics.median(times["skopeo copy"])
    print(f"\nload average now: {os.getloadavg()[0]:.1f}")
    print(f"{'contender':<15} {'median s':>9} {'min-max s':>13} {'MiB/s':>7} {'vs skopeo':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<15} {median:>9.2f} {min(values):>6.2f}-{max(values):<6.2f} "
            f"{compressed / MiB / median:>7.0f} {base / median:>9.2f}x"
        )
    if "skopeo + umoci" in times:
        ratio = statistics.median(times["skopeo + umoci"]) / statistics.median(
            times["aicert intake"]
        )
        print(f"aicert intake vs skopeo + umoci: {ratio:.2f}x")


if __name__ == "__main__":
    main()
