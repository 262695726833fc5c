"""The gpu add-on profile: combined with a platform, rendered with its own sources,
build script and firmware, and refused where it makes no sense."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from aicert.builder.mkosi import (
    IMAGE_DIR,
    PROFILE_DIR,
    PROFILES,
    BuildParameters,
    check_profile,
    profile_parts,
    profile_platform,
    render_config,
)
from aicert.builder.package_lock import PackageLock
from aicert.verifier.errors import InputError


def _params(profile: str) -> BuildParameters:
    return BuildParameters(
        profile=profile,
        mirror="http://mirror.example/debian",
        security_mirror="http://security.example/debian-security",
        source_date_epoch=1764028800,
        seed="5b0f3a57-6a3c-4e0e-9f1a-3e9d6f1c2a11",
        lock=PackageLock({"image": {"python3": "3.13.5-1"}}),
    )


def _conf(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_gpu_goes_over_qemu_alone_and_over_azure_when_combined() -> None:
    assert {"gpu", "azure+gpu"} <= set(PROFILES)
    assert profile_parts("gpu") == ("qemu", "gpu")
    assert profile_parts("azure+gpu") == ("azure", "gpu")
    assert profile_parts("azure") == ("azure",)
    assert profile_platform("azure+gpu") == "azure"
    assert profile_platform("gpu") == "qemu"
    assert check_profile("azure+gpu") == "azure+gpu"


@pytest.mark.parametrize("profile", ["gpu+azure", "debug+gpu", "azure+gpu+gpu", "nvidia"])
def test_other_combinations_are_refused(profile: str) -> None:
    with pytest.raises(InputError, match="unknown profile"):
        check_profile(profile)


def test_azure_gpu_renders_the_platform_then_the_add_on(tmp_path: Path) -> None:
    render_config(_params("azure+gpu"), tmp_path / "cfg")
    dropins = sorted(p.name for p in (tmp_path / "cfg" / "mkosi.conf.d").iterdir())
    assert dropins == ["50-azure.conf", "60-gpu.conf"]
    assert (tmp_path / "cfg" / "mkosi.conf.d" / "60-gpu.conf").read_text() == (
        PROFILE_DIR / "gpu.conf"
    ).read_text()


def test_the_gpu_tree_keeps_the_firmware_and_names_its_build_script(tmp_path: Path) -> None:
    render_config(_params("gpu"), tmp_path / "gpu")
    render_config(_params("qemu"), tmp_path / "qemu")
    remove = {
        name: _conf(tmp_path / name / "mkosi.conf")["Content"]["RemoveFiles"].split()
        for name in ("gpu", "qemu")
    }
    assert "/usr/lib/firmware" in remove["qemu"]
    assert "/usr/lib/firmware" not in remove["gpu"]
    assert set(remove["qemu"]) - set(remove["gpu"]) == {"/usr/lib/firmware"}
    gpu = _conf(tmp_path / "gpu" / "mkosi.conf.d" / "60-gpu.conf")
    script = gpu["Content"]["BuildScripts"].replace("%D/", "")
    assert (tmp_path / "gpu" / script).is_file()
    assert "linux-headers-cloud-amd64" in gpu["Content"]["BuildPackages"].split()
    # The compiler and headers are build packages only, never image packages.
    assert not {"gcc", "gcc-14", "make", "dkms"} & set(gpu["Content"]["Packages"].split())


def test_the_gpu_sources_add_the_non_free_components_from_the_same_mirrors(
    tmp_path: Path,
) -> None:
    render_config(_params("gpu"), tmp_path / "gpu")
    sources = tmp_path / "gpu" / "mkosi.sandbox-gpu/etc/apt/sources.list.d/aicert-gpu.sources"
    text = sources.read_text()
    assert "URIs: http://mirror.example/debian\n" in text
    assert "URIs: http://security.example/debian-security\n" in text
    assert text.count("Components: contrib non-free non-free-firmware\n") == 2
    assert "Components: main" not in text


def test_the_qemu_tree_is_what_it_was_before_the_gpu_hook(tmp_path: Path) -> None:
    # The template hook renders the base configuration unchanged for other profiles.
    render_config(_params("qemu"), tmp_path / "qemu")
    text = (tmp_path / "qemu" / "mkosi.conf").read_text()
    assert text.endswith("        /boot/config-*\n        /usr/lib/firmware\n")
    assert "{%" not in text
    assert (IMAGE_DIR / "mkosi.gpu" / "nvidia-modules.build.chroot").stat().st_mode & 0o111
