"""Warm image rebuild and boot to agent readiness, each over ``--runs`` runs, with the spread.

1. **Warm rebuild**: ``aicert-build image --output DIR`` with mkosi's caches warm (the
   first, untimed build warms them), run as a user runs it; target 60 s.
2. **Boot to ready**: the built disk in QEMU (OVMF, swtpm; the accelerator that
   ``aicert-build run`` would choose, or ``$AICERT_ACCEL``), from QEMU's start to the
   agent's AICERT-READY line on the serial console; target 45 s under TCG. On 2 cores,
   anything else running stretches the wall time, so each boot also reports figures that
   load changes less: QEMU's own CPU time (user + system) to readiness, and the
   guest kernel's clock at its milestones (from the console's printk timestamps): the
   verity root mounted, the switch to it, the scratch disk mounted and the last kernel
   line before the readiness line. "firmware" is the wall time from QEMU's start to the
   kernel's first line: OVMF, its hashing of the UKI, and systemd-stub.

Prints every run with the load average, the median, the spread (min-max) and the ratio
of the median to the target::

    .venv/bin/python benchmarks/bench_boot.py [--runs 5] [--output /var/tmp/aicert-bench-boot]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aicert.builder.platforms.local import qemu

from aicert.readiness_line import READY_PREFIX

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


# Guest-clock milestones: name and the console text whose printk timestamp marks it.
# systemd prints "running in system mode" once in the initrd and once after switching.
MILESTONES = (
    ("root", "erofs: (device"),
    ("switch", "running in system mode"),
    ("scratch", "EXT4-fs ("),
)
# Not anchored: systemd prefixes some lines with terminal escapes.
PRINTK = re.compile(r"\[\s*(\d+\.\d+)\] ([^\n]*)")
KERNEL_START = "Linux version"


@dataclass(frozen=True)
class Boot:
    seconds: float
    cpu_seconds: float
    firmware_seconds: float | None
    guest: dict[str, float]
    accel: str

    def describe(self) -> str:
        firmware = "?" if self.firmware_seconds is None else f"{self.firmware_seconds:.1f}"
        guest = ", ".join(f"{name} {value:.1f}" for name, value in self.guest.items())
        return (
            f"{self.seconds:.1f} s to ready under {self.accel}, QEMU CPU {self.cpu_seconds:.1f} s, "
            f"firmware {firmware} s; guest clock: {guest or 'no timestamps'}"
        )


def guest_milestones(console: str) -> dict[str, float]:
    """The guest kernel's clock at each milestone, and at its last line before READY."""
    stamps = [(float(m.group(1)), m.group(2)) for m in PRINTK.finditer(console)]
    found: dict[str, float] = {}
    for name, text in MILESTONES:
        hits = [stamp for stamp, line in stamps if text in line]
        if name == "switch":
            hits = hits[1:]
        if hits:
            found[name] = hits[0]
    if stamps:
        found["last"] = stamps[-1][0]
    return found


def boot(disk: Path) -> Boot:
    with qemu.Vm(qemu.VmSpec(disk=disk)) as vm:
        kernel_seen: list[float] = []
        done = threading.Event()

        def watch() -> None:
            # Polls the console for the kernel's first line: the end of the firmware phase.
            while not done.wait(0.05):
                if KERNEL_START in vm.console_text():
                    kernel_seen.append(vm.seconds_since_start())
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _report, seconds = vm.wait_ready(timeout=600)
        cpu = vm.cpu_seconds()
        done.set()
        watcher.join()
        console = vm.console_text()
        before_ready = console[: console.find(READY_PREFIX)]
        return Boot(
            seconds=seconds,
            cpu_seconds=cpu,
            firmware_seconds=kernel_seen[0] if kernel_seen else None,
            guest=guest_milestones(before_ready),
            accel=vm.accel,
        )


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
    boots: list[Boot] = []
    for run in range(1, args.runs + 1):
        boots.append(boot(image / "disk.raw"))
        print(f"  boot {run}: {boots[-1].describe()} ({load()})", flush=True)

    print()
    if rebuilds:
        print(summary("warm rebuild", rebuilds, REBUILD_TARGET_S))
    print(summary("boot to ready", [b.seconds for b in boots], BOOT_TARGET_S))
    cpu = [b.cpu_seconds for b in boots]
    print(
        f"QEMU CPU to ready: median {statistics.median(cpu):.1f} s, "
        f"spread {min(cpu):.1f}-{max(cpu):.1f} s"
    )


if __name__ == "__main__":
    main()
