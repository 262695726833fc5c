"""System test: boot the built image in QEMU (OVMF, swtpm) and check its boot PCRs.

The image reports readiness with its PCRs and firmware event log on the serial
console; PCRs 4, 9, 11, 12 and 13 must equal the prediction that recipe.json
holds (computed by verifier code from the UKI bytes), PCR 15 must be untouched
(reserved for the agent), and the firmware log must replay to PCRs 0-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aicert.builder.platforms.local import qemu
from aicert.verifier.boot.firmware_replay import verify_firmware_log
from aicert.verifier.boot.platform_profile import load_profile
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.tpm.pcr import SHA256

pytestmark = pytest.mark.system

BOOT_PCRS = (4, 9, 11, 12, 13)
# The verifier's QEMU profile holds PCR 5 too, but PCR 5 measures the GPT, whose
# partition UUIDs derive from the roothash: it matches only the image it was
# recorded from (docs/pcr-map.md).
IMAGE_INDEPENDENT_FIRMWARE_PCRS = (0, 1, 2, 3, 7)


def test_boot_reports_ready_and_pcrs_match_recipe(built_image: Path) -> None:
    recipe = json.loads((built_image / "recipe.json").read_text())
    expected = {int(k): bytes.fromhex(v) for k, v in recipe["expected_pcrs"]["pcrs"].items()}
    assert set(expected) == set(BOOT_PCRS), "recipe.json must predict PCR 9 too"

    vm = qemu.Vm(qemu.VmSpec(disk=built_image / "disk.raw"))
    with vm:
        report, seconds = vm.wait_ready(timeout=300)
        workdir = vm.workdir
    print(f"AICERT-READY after {seconds:.1f} s under {vm.accel}")
    assert not workdir.exists(), "the VM's temporary files must be removed"

    mismatched = {
        pcr: (report.pcrs[pcr].hex(), expected[pcr].hex())
        for pcr in BOOT_PCRS
        if report.pcrs[pcr] != expected[pcr]
    }
    assert not mismatched, f"booted PCRs differ from recipe.json (got, expected): {mismatched}"
    assert report.pcrs[15] == bytes(32), "PCR 15 is reserved for the agent"

    log = parse_event_log(report.event_log)
    verify_firmware_log(log, SHA256, report.pcrs, range(8))

    profile = load_profile("qemu")
    for pcr in IMAGE_INDEPENDENT_FIRMWARE_PCRS:
        accepted = {v.value for v in profile.pcrs[pcr].variants}
        assert report.pcrs[pcr] in accepted, f"PCR {pcr} differs from platform-qemu"
