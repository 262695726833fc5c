"""The scratch disk: find the blank disk the platform attached and make it ext4.

Inputs, outputs and the job log live on a disk the platform attaches (QEMU: a sparse
file from ``aicert-build run``; Azure: an empty managed data disk), not in RAM and not
on the read-only verity root. The disk arrives blank. Before the agent's API starts,
``aicert-scratch.service`` formats it as ext4 labelled ``aicert-scratch``, which
``var-lib-aicert.mount`` mounts; a disk that already carries the label is used as is.
The unit runs ``python3 -m aicert.agent.scratch`` (:func:`main`), which imports nothing
of the agent beyond this module: it lies on the boot's critical path, and the agent's
whole command line costs seconds to import under emulation. ``aicert-agent
prepare-scratch`` does the same by hand.

Only a whole disk on which ``blkid -p`` finds nothing (no partition table, no file
system, no RAID or LVM signature) is ever formatted, so no data can be lost; exactly
one such disk must be present, or nothing is formatted. Azure's local NVMe disks
("Microsoft NVMe Direct Disk", the temporary disk of some VM sizes) also arrive blank;
they are never chosen, because their contents vanish when the VM is deallocated and
their size depends on the VM size, not on the job.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aicert.verifier.errors import AicertError, FormatError, InputError, ToolError

from aicert.process import run

SCRATCH_LABEL: Final = "aicert-scratch"
# Block devices that are never a platform's disk: loop, RAM, device mapper, RAID,
# optical, network block and floppy devices.
_NOT_A_DISK: Final = re.compile(r"(loop|ram|zram|dm-|md|sr|nbd|fd)\d*")
_EPHEMERAL_MODELS: Final = ("Microsoft NVMe Direct Disk",)
# blkid's exit status when it found nothing on the device.
_BLKID_NOTHING_FOUND: Final = 2


class ScratchDiskError(InputError):
    """No single blank disk (or single labelled one) to use as the scratch disk."""


@dataclass(frozen=True)
class BlockDisk:
    """One whole disk as the kernel and ``blkid -p`` see it."""

    name: str
    """The kernel's name, e.g. ``vdb``, ``sdc``, ``nvme1n1``."""
    size: int
    """Bytes."""
    removable: bool
    read_only: bool
    model: str
    """The device model, "" when the driver reports none (virtio)."""
    probed: Mapping[str, str]
    """What ``blkid -p -o export`` found (TYPE, LABEL, PTTYPE, ...); empty: blank."""

    @property
    def is_blank(self) -> bool:
        return not self.probed

    @property
    def label(self) -> str | None:
        return self.probed.get("LABEL")

    def describe(self) -> str:
        what = self.probed.get("TYPE") or self.probed.get("PTTYPE") or "blank"
        model = f" {self.model}" if self.model else ""
        return f"{self.name} ({self.size / 1024**3:.1f} GiB{model}, {what})"


@dataclass(frozen=True)
class ScratchPlan:
    """The disk chosen for the scratch file system, and whether it must be formatted."""

    disk: BlockDisk
    needs_format: bool


def parse_blkid_export(text: str) -> dict[str, str]:
    """The ``KEY=value`` lines of ``blkid -o export``; anything else is a FormatError."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_]+", key):
            raise FormatError(f"unexpected line from blkid: {line!r}")
        found[key] = value
    return found


def choose_scratch(disks: Sequence[BlockDisk]) -> ScratchPlan:
    """The disk labelled ``aicert-scratch``, else the one blank disk; else ScratchDiskError."""
    labelled = [d for d in disks if d.label == SCRATCH_LABEL and d.probed.get("TYPE") == "ext4"]
    if len(labelled) == 1:
        return ScratchPlan(labelled[0], needs_format=False)
    if labelled:
        names = ", ".join(d.name for d in labelled)
        raise ScratchDiskError(f"several disks are labelled {SCRATCH_LABEL} ({names})")
    blank = [
        d
        for d in disks
        if d.is_blank
        and d.size > 0
        and not d.removable
        and not d.read_only
        and not d.model.startswith(_EPHEMERAL_MODELS)
    ]
    if len(blank) == 1:
        return ScratchPlan(blank[0], needs_format=True)
    seen = "; ".join(d.describe() for d in disks) or "none"
    if not blank:
        raise ScratchDiskError(
            "no blank disk for the scratch file system (disks: "
            f"{seen}); attach one empty disk, as 'aicert-build run' does"
        )
    raise ScratchDiskError(
        f"{len(blank)} blank disks, cannot tell which is the scratch disk (disks: {seen}); "
        "attach exactly one empty disk"
    )


def _read_attr(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return default


def probe(device: Path) -> dict[str, str]:
    """What ``blkid -p`` (low-level probing, no cache) finds on ``device``."""
    proc = run(["blkid", "-p", "-o", "export", device], check=False)
    if proc.returncode == _BLKID_NOTHING_FOUND:
        return {}
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        raise ToolError(f"blkid cannot probe {device}: exit status {proc.returncode} {detail}")
    return parse_blkid_export(proc.stdout.decode(errors="replace"))


def scan_disks(
    sys_block: Path = Path("/sys/block"),
    dev: Path = Path("/dev"),
    probe_device: Callable[[Path], Mapping[str, str]] = probe,
) -> list[BlockDisk]:
    """Every whole disk in ``sys_block`` (sysfs), probed through its node in ``dev``."""
    disks = []
    for entry in sorted(sys_block.iterdir()):
        if _NOT_A_DISK.fullmatch(entry.name):
            continue
        try:
            sectors = int(_read_attr(entry / "size", "0"))
        except ValueError as exc:
            raise FormatError(f"{entry}/size is not a number") from exc
        disks.append(
            BlockDisk(
                name=entry.name,
                size=sectors * 512,  # sysfs counts 512-byte sectors whatever the block size
                removable=_read_attr(entry / "removable", "0") == "1",
                read_only=_read_attr(entry / "ro", "0") == "1",
                model=_read_attr(entry / "device" / "model"),
                probed=probe_device(dev / entry.name) if sectors else {},
            )
        )
    return disks


def format_scratch(device: Path) -> None:
    """An empty ext4 labelled ``aicert-scratch`` on ``device``, with no reserved blocks.

    No ``-F``: should anything appear on the device after the probe, mkfs.ext4 asks
    before overwriting it, reads no answer from the service's stdin and gives up.
    ``lazy_journal_init`` skips zeroing the journal (64 MiB of the 69 MiB mkfs writes on
    8 GiB, on the boot's critical path). mke2fs's caveat, a crash before the journal was
    once overwritten, does not apply: the disk arrives zeroed, and a crashed boot's job
    is lost anyway (one job per boot).
    """
    options = "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
    run(["mkfs.ext4", "-q", "-L", SCRATCH_LABEL, "-m", "0", "-E", options, device])


def prepare_scratch(
    *,
    sys_block: Path = Path("/sys/block"),
    dev: Path = Path("/dev"),
    wait: float = 60.0,
    udev: bool = True,
    say: Callable[[str], None] = lambda _line: None,
) -> ScratchPlan:
    """Find the scratch disk (waiting up to ``wait`` s for it to appear) and format it.

    With ``udev``, udev is told about the new file system and waited for, so that
    /dev/disk/by-label/aicert-scratch, which the mount unit needs, exists on return.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            plan = choose_scratch(scan_disks(sys_block, dev))
            break
        except ScratchDiskError:
            # Disks on a SCSI or VMBus controller may be announced after this starts.
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
    device = dev / plan.disk.name
    if not plan.needs_format:
        say(f"scratch disk {plan.disk.describe()} already carries {SCRATCH_LABEL}")
        return plan
    say(f"formatting {plan.disk.describe()} as ext4 {SCRATCH_LABEL}")
    format_scratch(device)
    if udev:
        run(["udevadm", "trigger", "--settle", "--action=change", device])
    return plan


def main(argv: list[str] | None = None) -> int:
    """``python3 -m aicert.agent.scratch [--wait S]``: what aicert-scratch.service runs."""
    parser = argparse.ArgumentParser(prog="aicert-agent prepare-scratch", description=__doc__)
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        prepare_scratch(wait=args.wait, say=print)
    except AicertError as exc:
        # The host finds the failure on the console by this prefix (qemu.AGENT_ERROR_MARKER).
        print(f"aicert-agent: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
