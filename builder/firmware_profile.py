"""Record the QEMU platform's firmware reference profile from a real boot.

``aicert-build record-profile --platform qemu`` boots a built image on the
reference machine of :mod:`aicert.builder.platforms.local.qemu`, takes the firmware event log
and the PCRs from the AICERT-READY line, checks that the log's digests match
their event data and replay to the reported PCRs, and stores the replayed
values of the firmware PCRs (0-3, 7) with a description of how they were
obtained (QEMU and OVMF package versions, machine type, devices). The verifier
reads it with ``--platform-profile qemu``.

PCR 5 is left out: it holds the disk's GPT (partition UUIDs, sizes), which mkosi
derives from the image, so it changes with every image and is only replayed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from aicert.builder.platforms.local import qemu
from aicert.builder.recipe import load_recipe
from aicert.verifier.boot.firmware_replay import check_event_digests, replay, verify_against_pcrs
from aicert.verifier.boot.platform_profile import (
    FIRMWARE_PCRS,
    PlatformProfile,
    Provenance,
    single_variant_profile,
)
from aicert.verifier.errors import InputError, ToolError
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.tpm.pcr import SHA256

from aicert.process import run
from aicert.readiness_line import ReadinessReport

PLATFORMS = ("qemu",)
PROFILE_PATH = Path(__file__).resolve().parent.parent / "verifier" / "data" / "platform-qemu.json"


def package_version(name: str) -> str:
    try:
        proc = run(["dpkg-query", "-W", "-f=${Version}", name])
    except ToolError:
        return "unknown"
    return proc.stdout.decode().strip() or "unknown"


def profile_from_report(report: ReadinessReport, vm: qemu.Vm, image: Path) -> PlatformProfile:
    """The firmware PCRs of ``report``, once its event log proves them."""
    log = parse_event_log(report.event_log)
    check_event_digests(log)
    verify_against_pcrs(log, SHA256, report.pcrs, FIRMWARE_PCRS)
    replayed = replay(log, SHA256)
    pcrs = {pcr: replayed[pcr] for pcr in FIRMWARE_PCRS}
    recipe = load_recipe(image.parent / "recipe.json")
    obtained = (
        f"aicert-build record-profile --platform qemu: PCRs replayed from the firmware event "
        f"log of a boot of image roothash {recipe['outputs']['roothash']} "
        f"(profile {recipe['inputs']['profile']}); {qemu.qemu_version()}; "
        f"ovmf {package_version('ovmf')} ({qemu.OVMF_CODE.name} + fresh {qemu.OVMF_VARS.name}); "
        f"swtpm {package_version('swtpm')}; machine {qemu.MACHINE}, accel {vm.accel}, "
        f"-m {vm.spec.memory_mib} -smp {vm.spec.cpus}; devices: tpm-crb, "
        "virtio-blk-pci (bootindex 0), virtio-blk-pci scratch disk (blank, serial "
        f"{qemu.SCRATCH_SERIAL}), virtio-net-pci with romfile= (no option ROM), "
        "virtio-rng-pci"
    )
    return single_variant_profile(
        "qemu",
        "QEMU q35 + OVMF (Debian ovmf, OVMF_CODE_4M.fd) + swtpm CRB TPM, "
        "direct UKI boot, Secure Boot off",
        pcrs,
        Provenance(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), obtained),
        firmware_log=True,
    )


def record_profile(image_dir: Path, out: Path, *, timeout: float = 300.0) -> PlatformProfile:
    disk = image_dir / "disk.raw"
    if not (image_dir / "recipe.json").is_file() or not disk.is_file():
        raise InputError(f"{image_dir} is not an aicert-build image directory")
    with qemu.Vm(qemu.VmSpec(disk=disk)) as vm:
        report, _seconds = vm.wait_ready(timeout)
        profile = profile_from_report(report, vm, disk)
    try:
        out.write_text(json.dumps(profile.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the profile to {out}: {exc.strerror}") from exc
    return profile
