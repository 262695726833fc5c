"""Tree-digest throughput against sha256sum, model_signing and a plain copy, side by side.

Every comparison runs its contenders alternately in the same process run, ``--repeat``
times, and prints the median throughput, the spread (min-max) and the ratio of medians.
Data is generated under ``--workdir`` and deleted at the end (unless ``--keep``).

Full size (the figures in benchmarks/README.md)::

    .venv/bin/python benchmarks/bench_hashing.py

Quick run (CI-sized)::

    .venv/bin/python benchmarks/bench_hashing.py --large-gib 0.25 --small-files 500 \\
        --big-files 2 --big-mib 64 --stream-gib 0.25 --repeat 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aicert.verifier.digest.treehash import hash_file, hash_tree

from aicert.model_signing_interop import model_signing_digest
from aicert.receive import receive_file
from aicert.writeback import WriteBehind

MiB = 1024 * 1024
GiB = 1024 * MiB
COPY_CHUNK = 1 * MiB


@dataclass
class Contender:
    name: str
    run: Callable[[], object]
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def cpu_now() -> float:
    """CPU seconds used so far by this process (all threads) and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def race(contenders: list[Contender], repeat: int, between: Callable[[], None]) -> None:
    for _ in range(repeat):
        for c in contenders:
            between()
            cpu0, t0 = cpu_now(), time.perf_counter()
            c.run()
            c.seconds.append(time.perf_counter() - t0)
            c.cpu.append(cpu_now() - cpu0)


def report(title: str, nbytes: int, contenders: list[Contender], baseline: str) -> None:
    base = statistics.median(next(c for c in contenders if c.name == baseline).seconds)
    print(f"\n== {title}: {nbytes / GiB:.2f} GiB per run, ratio = throughput / {baseline}")
    print(f"{'contender':44} {'median GB/s':>11} {'min-max GB/s':>15} {'ratio':>6} {'CPU s':>6}")
    for c in contenders:
        med = statistics.median(c.seconds)
        lo, hi = nbytes / max(c.seconds) / 1e9, nbytes / min(c.seconds) / 1e9
        print(
            f"{c.name:44} {nbytes / med / 1e9:11.2f} {lo:7.2f}-{hi:<7.2f} "
            f"{base / med:6.2f} {statistics.median(c.cpu):6.2f}"
        )


def make_file(path: Path, size: int, seed: bytes) -> None:
    block = hashlib.shake_256(seed).digest(64 * MiB)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def warm(*paths: Path) -> None:
    """Read files once so the page cache holds them (measures hashing, not the disk)."""
    for top in paths:
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for path in files:
            with path.open("rb") as f:
                while f.read(8 * MiB):
                    pass


def bench_large_file(work: Path, gib: float, repeat: int) -> None:
    path = work / "large.bin"
    size = int(gib * GiB)
    make_file(path, size, b"large")
    warm(path)
    sha256sum = shutil.which("sha256sum")
    openssl = shutil.which("openssl")
    contenders = []
    if sha256sum:
        contenders.append(
            Contender(
                "sha256sum",
                lambda: subprocess.run([sha256sum, path], check=True, stdout=subprocess.DEVNULL),
            )
        )
    if openssl:
        contenders.append(
            Contender(
                "openssl sha256",
                lambda: subprocess.run(
                    [openssl, "sha256", path], check=True, stdout=subprocess.DEVNULL
                ),
            )
        )
    contenders += [
        Contender(
            "aicert 1 worker, plain SHA-256 (shard 0)",
            lambda: hash_file(path, workers=1, shard_size=0),
        ),
        Contender("aicert 1 worker, sharded 256 MiB", lambda: hash_file(path, workers=1)),
        Contender("aicert 2 workers, sharded 256 MiB", lambda: hash_file(path, workers=2)),
    ]
    race(contenders, repeat, lambda: None)
    report("(1) one large file, page cache warm", size, contenders, contenders[0].name)
    path.unlink()


def bench_directory(
    work: Path, small_files: int, small_kib: int, big_files: int, big_mib: int, repeat: int
) -> None:
    from model_signing import hashing as ms_hashing  # noqa: PLC0415 - optional test dependency

    root = work / "tree"
    small = root / "small"
    small.mkdir(parents=True)
    block = hashlib.shake_256(b"small").digest(small_kib * 1024 + small_files)
    for i in range(small_files):
        # Distinct contents, so no layer can deduplicate.
        (small / f"{i // 1000:02d}").mkdir(exist_ok=True)
        (small / f"{i // 1000:02d}" / f"f{i:05d}.bin").write_bytes(
            block[i % small_files : i % small_files + small_kib * 1024]
        )
    for i in range(big_files):
        make_file(root / f"model-{i:02d}.safetensors", big_mib * MiB, b"big%d" % i)
    warm(root)
    total = small_files * small_kib * 1024 + big_files * big_mib * MiB
    results: dict[str, str] = {}

    def ms() -> None:
        results["model_signing"] = model_signing_root(ms_hashing.hash(root))

    def ms_workers(n: int) -> None:
        config = ms_hashing.Config().use_file_serialization(max_workers=n)
        results["model_signing"] = model_signing_root(config.hash(root))

    cpus = os.cpu_count() or 1
    # model_signing's default pool has min(32, CPUs + 4) threads; on a busy machine more
    # threads win a larger share of the CPU, so both are also run with equal thread counts.
    contenders = [
        Contender("model_signing.hashing.hash (its defaults)", ms),
        Contender(f"model_signing, {cpus} workers", lambda: ms_workers(cpus)),
        Contender(
            f"aicert plain SHA-256 (shard 0), {cpus + 4} workers",
            lambda: hash_tree(root, shard_size=0, workers=cpus + 4),
        ),
        Contender(
            "aicert plain SHA-256 (shard 0), 2 workers",
            lambda: results.__setitem__(
                "aicert", model_signing_digest(hash_tree(root, shard_size=0))
            ),
        ),
        Contender("aicert default (sharded 256 MiB), 2 workers", lambda: hash_tree(root)),
    ]
    race(contenders, repeat, lambda: None)
    report(
        f"(2) directory: {small_files} x {small_kib} KiB + {big_files} x {big_mib} MiB, warm",
        total,
        contenders,
        contenders[0].name,
    )
    same = results["model_signing"] == results["aicert"]
    print(f"model_signing root digest reproduced by aicert: {same} ({results['aicert']})")
    shutil.rmtree(root)


def model_signing_root(manifest: object) -> str:
    """The subject digest of the statement model_signing would sign for ``manifest``."""
    from model_signing._signing.signing import Payload  # noqa: PLC0415

    payload = Payload(manifest)  # type: ignore[arg-type]
    return str(payload.statement.pb.subject[0].digest["sha256"])


def paced(chunks: Callable[[], bytes], rate: float) -> Callable[[], bytes]:
    """Hand out chunks no faster than ``rate`` bytes/s, like a network link would."""
    started = time.perf_counter()
    sent = 0

    def next_chunk() -> bytes:
        nonlocal sent
        chunk = chunks()
        sent += len(chunk)
        delay = started + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return chunk

    return next_chunk


def bench_streaming(work: Path, gib: float, repeat: int, link_mbps: float) -> None:
    src = work / "stream-src.bin"
    dst = work / "stream-dst.bin"
    size = int(gib * GiB)
    make_file(src, size, b"stream")
    warm(src)

    def plain_copy(fsync: bool, rate: float | None = None, write_behind: bool = False) -> None:
        with src.open("rb") as f, dst.open("xb") as out:
            read = paced(lambda: f.read(COPY_CHUNK), rate) if rate else lambda: f.read(COPY_CHUNK)
            behind = WriteBehind(out.fileno()) if write_behind else None
            while chunk := read():
                out.write(chunk)
                if behind is not None:
                    out.flush()
                    behind.wrote(len(chunk))
            out.flush()
            if fsync:
                os.fsync(out.fileno())

    def hashed_copy(fsync: bool, rate: float | None = None) -> None:
        with src.open("rb") as f, receive_file(dst, fsync=fsync) as sink:
            read = paced(lambda: f.read(COPY_CHUNK), rate) if rate else lambda: f.read(COPY_CHUNK)
            while chunk := read():
                sink.write(chunk)

    def fresh() -> None:
        dst.unlink(missing_ok=True)
        os.sync()  # start each run with no dirty pages left by the previous one

    for fsync in (True, False):
        contenders = [
            Contender("plain copy", lambda fsync=fsync: plain_copy(fsync)),
            Contender("receive_file (write + hash)", lambda fsync=fsync: hashed_copy(fsync)),
        ]
        if fsync:
            # The same early writeback as receive_file, without the hashing: what the
            # hashing alone costs.
            contenders.append(
                Contender("plain copy + early writeback", lambda: plain_copy(True, None, True))
            )
        race(contenders, repeat, fresh)
        what = "to disk (fsync)" if fsync else "to page cache (no fsync)"
        report(f"(3) streaming {what}", size, contenders, "plain copy")
        hashed = statistics.median(contenders[1].seconds)
        for reference in [contenders[0], *contenders[2:]]:
            overhead = hashed / statistics.median(reference.seconds) - 1
            print(f"streaming overhead over {reference.name}: {overhead * 100:+.1f} %")
    if link_mbps:
        rate = link_mbps * 1e6 / 8
        contenders = [
            Contender("plain copy", lambda: plain_copy(True, rate)),
            Contender("receive_file (write + hash)", lambda: hashed_copy(True, rate)),
        ]
        race(contenders, repeat, fresh)
        report(
            f"(3) streaming from a {link_mbps:.0f} Mbit/s source to disk",
            size,
            contenders,
            "plain copy",
        )
        overhead = (
            statistics.median(contenders[1].seconds) / statistics.median(contenders[0].seconds) - 1
        )
        print(f"streaming overhead over plain copy: {overhead * 100:+.1f} %")
    dst.unlink(missing_ok=True)
    src.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/aicert-bench"))
    parser.add_argument("--large-gib", type=float, default=4.0)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--small-kib", type=int, default=100)
    parser.add_argument("--big-files", type=int, default=8)
    parser.add_argument("--big-mib", type=int, default=500)
    parser.add_argument("--stream-gib", type=float, default=2.0)
    parser.add_argument(
        "--link-mbps",
        type=float,
        default=4000,
        help="also stream from a source paced at this rate (a network link); 0 = skip",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["large", "directory", "streaming"], action="append")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = args.workdir / f"run-{os.getpid()}"
    work.mkdir(parents=True)
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()}, data in {work}")
    only = set(args.only or ["large", "directory", "streaming"])
    try:
        if "large" in only:
            bench_large_file(work, args.large_gib, args.repeat)
        if "directory" in only:
            bench_directory(
                work, args.small_files, args.small_kib, args.big_files, args.big_mib, args.repeat
            )
        if "streaming" in only:
            bench_streaming(work, args.stream_gib, args.repeat, args.link_mbps)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
