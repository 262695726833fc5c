"""Azure VM sizes: which series can boot the image as a Trusted Launch VM.

The image runs on Azure only as a Trusted Launch VM (Gen2, vTPM; ``vm.py``). A size
whose series Azure does not offer with Trusted Launch, or offers only as a
confidential VM (security type ``ConfidentialVM``, a different VM and attestation
path that aicert does not create), is refused before anything is created. The table
follows Microsoft's size and Trusted Launch pages (docs/azure.md, "VM sizes", names
them); a series not in it is left to Azure, which refuses an unsupported size at
creation without leaving anything behind.

A size name is ``Standard_`` + family letters + vCPU count (+ ``-N`` constrained
cores) + feature letters + optional accelerator + version, e.g.
``Standard_NC40ads_H100_v5``: the series key drops the counts, ``NCads_H100_v5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from aicert.verifier.errors import InputError

_SIZE: Final = re.compile(
    r"Standard_(?P<family>[A-Z]+)(?P<cpus>\d+)(?:-\d+)?(?P<features>[a-z]*)"
    r"(?:_(?P<accelerator>[A-Z][A-Za-z0-9]*))?(?:_(?P<version>v\d+))?"
)


class Support(Enum):
    TRUSTED_LAUNCH = "trusted launch"
    CONFIDENTIAL = "confidential VM only"
    NO_TRUSTED_LAUNCH = "no trusted launch"
    RETIRED = "retired"


@dataclass(frozen=True)
class SizeSeries:
    """One series of sizes, as Microsoft's documentation names and describes it."""

    key: str
    name: str
    support: Support
    gpu: str | None = None
    note: str = ""

    @property
    def runs_image(self) -> bool:
        return self.support is Support.TRUSTED_LAUNCH


_CVM_NOTE: Final = (
    "a confidential VM series (security type ConfidentialVM); aicert creates Trusted "
    "Launch VMs only"
)

SERIES: Final = {
    s.key: s
    for s in (
        # General purpose: the default size and the common Trusted Launch ones.
        SizeSeries("Ds_v5", "Dsv5", Support.TRUSTED_LAUNCH),
        SizeSeries("Dds_v5", "Ddsv5", Support.TRUSTED_LAUNCH),
        SizeSeries("Das_v5", "Dasv5", Support.TRUSTED_LAUNCH),
        SizeSeries("Dads_v5", "Dadsv5", Support.TRUSTED_LAUNCH),
        SizeSeries("Ds_v4", "Dsv4", Support.TRUSTED_LAUNCH),
        SizeSeries("Ds_v3", "Dsv3", Support.TRUSTED_LAUNCH),
        SizeSeries("Es_v5", "Esv5", Support.TRUSTED_LAUNCH),
        SizeSeries("Fs_v2", "Fsv2", Support.TRUSTED_LAUNCH),
        SizeSeries("A_v2", "Av2", Support.NO_TRUSTED_LAUNCH, note="Generation 1 only"),
        SizeSeries("Dps_v5", "Dpsv5", Support.NO_TRUSTED_LAUNCH, note="Arm64 (Ampere)"),
        SizeSeries("DCas_v5", "DCasv5", Support.CONFIDENTIAL, note=_CVM_NOTE),
        SizeSeries("DCads_v5", "DCadsv5", Support.CONFIDENTIAL, note=_CVM_NOTE),
        SizeSeries("ECas_v5", "ECasv5", Support.CONFIDENTIAL, note=_CVM_NOTE),
        SizeSeries("ECads_v5", "ECadsv5", Support.CONFIDENTIAL, note=_CVM_NOTE),
        # GPU series.
        SizeSeries("NCas_T4_v3", "NCasT4_v3", Support.TRUSTED_LAUNCH, gpu="NVIDIA T4"),
        SizeSeries("NCads_A100_v4", "NC_A100_v4", Support.TRUSTED_LAUNCH, gpu="NVIDIA A100 PCIe"),
        SizeSeries("NVads_A10_v5", "NVadsA10_v5", Support.TRUSTED_LAUNCH, gpu="NVIDIA A10"),
        SizeSeries("NVs_v3", "NVv3", Support.TRUSTED_LAUNCH, gpu="NVIDIA Tesla M60"),
        SizeSeries("NDrs_v2", "NDv2", Support.TRUSTED_LAUNCH, gpu="NVIDIA V100"),
        SizeSeries(
            "NCCads_H100_v5",
            "NCCads_H100_v5",
            Support.CONFIDENTIAL,
            gpu="NVIDIA H100 NVL (CC mode)",
            note=_CVM_NOTE,
        ),
        SizeSeries(
            "NDasr_v4",
            "NDasrA100_v4",
            Support.NO_TRUSTED_LAUNCH,
            gpu="NVIDIA A100 SXM",
            note="listed by Microsoft as not supporting Trusted Launch",
        ),
        SizeSeries(
            "NDamsr_A100_v4",
            "NDm_A100_v4",
            Support.NO_TRUSTED_LAUNCH,
            gpu="NVIDIA A100 SXM 80 GB",
            note="listed by Microsoft as not supporting Trusted Launch",
        ),
        SizeSeries(
            "NCs_v3",
            "NCv3",
            Support.RETIRED,
            gpu="NVIDIA V100",
            note="retired by Azure on 2025-09-30",
        ),
    )
}


class VmSizeError(InputError):
    """A VM size that cannot boot the image as a Trusted Launch VM."""


def size_series(size: str) -> SizeSeries | None:
    """The table's series of ``size``; None for a series the table does not know.

    Raises VmSizeError if ``size`` is not shaped like an Azure size name at all.
    """
    match = _SIZE.fullmatch(size)
    if match is None:
        raise VmSizeError(f"{size!r} is not an Azure VM size name (e.g. Standard_NC4as_T4_v3)")
    parts = [match["family"] + match["features"], match["accelerator"], match["version"]]
    return SERIES.get("_".join(p for p in parts if p))


def check_vm_size(size: str) -> SizeSeries | None:
    """``size``'s series if it can run the image (None: not in the table, left to Azure)."""
    series = size_series(size)
    if series is not None and not series.runs_image:
        detail = f": {series.note}" if series.note else ""
        raise VmSizeError(
            f"VM size {size} ({series.name} series) cannot run the image as a Trusted "
            f"Launch VM ({series.support.value}{detail})"
        )
    return series
