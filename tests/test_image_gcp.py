"""The gcp image profile: selectable, and its initrd drivers for GCE's disks and NIC."""

from __future__ import annotations

import configparser

from aicert.builder.mkosi import PROFILE_DIR, PROFILES, check_profile


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
