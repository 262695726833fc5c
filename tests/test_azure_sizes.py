"""The table of Azure VM series: which sizes can boot the image as Trusted Launch VMs."""

from __future__ import annotations

import pytest
from aicert.builder.platforms.azure.cli import DEFAULT_AZURE_VM_SIZE
from aicert.builder.platforms.azure.sizes import (
    SERIES,
    Support,
    VmSizeError,
    check_vm_size,
    size_series,
)


@pytest.mark.parametrize(
    ("size", "key"),
    [
        ("Standard_D4s_v5", "Ds_v5"),
        ("Standard_NC4as_T4_v3", "NCas_T4_v3"),
        ("Standard_NC24ads_A100_v4", "NCads_A100_v4"),
        ("Standard_NV36ads_A10_v5", "NVads_A10_v5"),
        ("Standard_NCC40ads_H100_v5", "NCCads_H100_v5"),
        ("Standard_ND96asr_v4", "NDasr_v4"),
        ("Standard_ND96amsr_A100_v4", "NDamsr_A100_v4"),
        ("Standard_E4-2s_v5", "Es_v5"),
        ("Standard_A1_v2", "A_v2"),
    ],
)
def test_a_size_name_maps_to_its_series(size: str, key: str) -> None:
    series = size_series(size)
    assert series is not None
    assert series.key == key


def test_the_default_size_and_the_trusted_launch_gpu_series_pass() -> None:
    for size in (DEFAULT_AZURE_VM_SIZE, "Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4"):
        series = check_vm_size(size)
        assert series is not None
        assert series.support is Support.TRUSTED_LAUNCH


def test_every_series_that_is_not_trusted_launch_is_refused_with_its_reason() -> None:
    refused = [s for s in SERIES.values() if not s.runs_image]
    assert {s.support for s in refused} == {
        Support.CONFIDENTIAL,
        Support.NO_TRUSTED_LAUNCH,
        Support.RETIRED,
    }
    for series in refused:
        with pytest.raises(VmSizeError) as caught:
            check_vm_size(_a_size_of(series.key))
        assert series.name in caught.value.message
        assert series.support.value in caught.value.message


def test_the_confidential_h100_size_is_refused_as_a_confidential_vm() -> None:
    with pytest.raises(VmSizeError, match=r"confidential VM only.*Trusted Launch VMs only"):
        check_vm_size("Standard_NCC40ads_H100_v5")


def test_a_series_the_table_does_not_know_is_left_to_azure() -> None:
    assert check_vm_size("Standard_NC40ads_H100_v5") is None
    assert check_vm_size("Standard_HB120rs_v3") is None


@pytest.mark.parametrize("size", ["NC4as_T4_v3", "Standard_", "Standard_nc4as_T4_v3", ""])
def test_a_name_that_is_no_size_is_refused(size: str) -> None:
    with pytest.raises(VmSizeError, match="not an Azure VM size name"):
        check_vm_size(size)


def _a_size_of(key: str) -> str:
    """A size name of the series ``key`` (2 vCPUs inserted after the family letters)."""
    letters = len(key) - len(key.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    return f"Standard_{key[:letters]}2{key[letters:]}"
