"""The gcp image profile: selectable, and its initrd drivers for GCE's disks and NIC."""

from __future__ import annotations

import configparser
from pathlib import Path

from aicert.builder.mkosi import (
    PROFILE_DIR,
    PROFILES,
    BuildParameters,
    check_profile,
    render_config,
)
from aicert.builder.package_lock import PackageLock


def _profile() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PROFILE_DIR / "gcp.conf")
    return parser


def test_gcp_is_a_profile() -> None:
    assert "gcp" in PROFILES
    assert check_profile("gcp") == "gcp"
    assert _profile()["Build"]["Environment"] == "AICERT_PROFILE=gcp"


def test_the_initrd_gets_the_gvnic_and_scsi_disk_drivers() -> None:
    modules = _profile()["Content"]["KernelModulesInitrdInclude"].split()
    assert modules == [r"/sd_mod\.ko", r"/gve\.ko"]


def test_the_gcp_build_tree_carries_the_profile_and_differs_from_qemu(tmp_path: Path) -> None:
    def params(profile: str) -> BuildParameters:
        return BuildParameters(
            profile=profile,
            mirror="http://mirror.example/debian",
            security_mirror=None,
            source_date_epoch=1764028800,
            seed="5b0f3a57-6a3c-4e0e-9f1a-3e9d6f1c2a11",
            lock=PackageLock({"image": {"python3": "3.13.5-1"}}),
        )

    gcp = render_config(params("gcp"), tmp_path / "gcp")
    qemu = render_config(params("qemu"), tmp_path / "qemu")
    assert gcp != qemu
    copied = tmp_path / "gcp" / "mkosi.conf.d" / "50-gcp.conf"
    assert copied.read_text() == (PROFILE_DIR / "gcp.conf").read_text()
