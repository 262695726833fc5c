"""Warm image rebuild and boot to agent readiness, each over ``--runs`` runs, with the spread.

1. **Warm rebuild**: ``aicert-build image --output DIR`` with mkosi's caches warm (the
   first, untimed build warms them), run as a user runs it; target 60 s.
2. **Boot to ready**: the built disk in QEMU (OVMF, swtpm; the accelerator that
   ``aicert-build run`` would choose, or ``$AICERT_ACCEL``), from QEMU's start to the
   agent's AICERT-READY line on the serial console; target 45 s under TCG. The load
   average is printed before and after: on 2 cores, anything else running stretches
   both figures.

Prints every run, the median, the spread (min-max) and the ratio of the median to the
target::

    .venv/bin/python benchmarks/bench_boot.py [--runs 5] [--output /var/tmp/aicert-bench-boot]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aicert.builder.platforms.local import qemu

REPO = Path(__file__).resolve().parents[1]
REBUILD_TARGET_S = 60.0
BOOT_TARGET_S = 45.0


def build(output: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "aicert-build"), "image", "--output", str(output)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def boot(disk: Path) -> tuple[float, str]:
    with qemu.Vm(qemu.VmSpec(disk=disk)) as vm:
        _report, seconds = vm.wait_ready(timeout=600)
        return seconds, vm.accel


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(name: str, values: list[float], target: float) -> str:
    median = statistics.median(values)
    return (
        f"{name}: median {median:.1f} s, spread {min(values):.1f}-{max(values):.1f} s "
        f"over {len(values)} runs; {median / target:.2f}x the {target:.0f} s target"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("/var/tmp/aicert-bench-boot"))
    parser.add_argument("--skip-rebuild", action="store_true", help="time boots only")
    args = parser.parse_args()
    image = args.output / "image"

    print(f"warming the caches: one untimed build ({load()})", flush=True)
    build(image)
    rebuilds: list[float] = []
    if not args.skip_rebuild:
        for run in range(1, args.runs + 1):
            rebuilds.append(build(image))
            print(f"  rebuild {run}: {rebuilds[-1]:.1f} s ({load()})", flush=True)
    boots: list[float] = []
    for run in range(1, args.runs + 1):
        seconds, accel = boot(image / "disk.raw")
        boots.append(seconds)
        print(f"  boot {run}: {seconds:.1f} s to ready under {accel} ({load()})", flush=True)

    print()
    if rebuilds:
        print(summary("warm rebuild", rebuilds, REBUILD_TARGET_S))
    print(summary("boot to ready", boots, BOOT_TARGET_S))


if __name__ == "__main__":
    sys.exit(main())
