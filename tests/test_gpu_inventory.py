"""The agent's GPU inventory: nvidia-smi's XML parsed strictly; no nvidia-smi, no GPU."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from aicert.agent import gpu_inventory
from aicert.agent.gpu_inventory import GpuInfo, nvidia_pci_gpus, parse_nvidia_smi_xml, read_gpus
from aicert.verifier.errors import FormatError, ToolError
from hypothesis import given, settings
from hypothesis import strategies as st

SAMPLES = Path(__file__).parent / "data" / "nvidia-smi"


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_two_h100s_in_cc_mode() -> None:
    gpus = parse_nvidia_smi_xml(_sample("h100-cc-on.xml"))
    assert gpus == (
        GpuInfo(
            "NVIDIA H100 80GB HBM3",
            "GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91",
            "550.90.07",
            "96.00.9F.00.01",
            "on",
        ),
        GpuInfo(
            "NVIDIA H100 80GB HBM3",
            "GPU-a2b4c6d8-1e3f-4a5b-8c7d-9e0f1a2b3c4d",
            "550.90.07",
            "96.00.9F.00.01",
            "on",
        ),
    )


def test_devtools_and_off_modes() -> None:
    (h200,) = parse_nvidia_smi_xml(_sample("h200-devtools.xml"))
    assert (h200.model, h200.cc_mode, h200.vbios_version) == (
        "NVIDIA H200",
        "devtools",
        "96.00.A5.00.02",
    )
    (plain,) = parse_nvidia_smi_xml(_sample("h100-no-cc.xml"))
    assert plain.cc_mode == "off"


def test_a_log_without_the_cc_block_is_cc_off() -> None:
    data = _sample("h100-cc-on.xml")
    start, end = data.index(b"\t<confidential_compute>"), data.index(b"</confidential_compute>")
    stripped = data[:start] + data[end + len(b"</confidential_compute>\n") :]
    assert {g.cc_mode for g in parse_nvidia_smi_xml(stripped)} == {"off"}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b"<nvidia_smi_log>", b'<!DOCTYPE x [<!ENTITY a "b">]><nvidia_smi_log>', "entity"),
        (b"<attached_gpus>2</attached_gpus>", b"<attached_gpus>3</attached_gpus>", "attached"),
        (
            b"<uuid>GPU-a2b4c6d8-1e3f-4a5b-8c7d-9e0f1a2b3c4d</uuid>",
            b"<uuid>GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91</uuid>",
            "same UUID",
        ),
        (
            b"<vbios_version>96.00.9F.00.01</vbios_version>",
            b"<vbios_version>N/A</vbios_version>",
            "N/A",
        ),
        (b"<cc_feature>ON</cc_feature>", b"<cc_feature>MAYBE</cc_feature>", "ON or OFF"),
        (b"<driver_version>550.90.07</driver_version>", b"", "one driver_version"),
        (
            b"<product_name>NVIDIA H100 80GB HBM3</product_name>",
            b"<product_name>NVIDIA\x01H100</product_name>",
            "not well-formed",
        ),
    ],
)
def test_malformed_logs_are_refused(old: bytes, new: bytes, message: str) -> None:
    data = _sample("h100-cc-on.xml").replace(old, new, 1)
    with pytest.raises(FormatError, match=message):
        parse_nvidia_smi_xml(data)


def test_an_oversized_log_is_refused() -> None:
    with pytest.raises(FormatError, match="larger than"):
        parse_nvidia_smi_xml(b" " * (gpu_inventory.MAX_XML_BYTES + 1))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_corrupted_logs_fail_only_with_format_error(data: st.DataObject) -> None:
    sample = _sample("h100-cc-on.xml")
    cut = data.draw(st.integers(0, len(sample)))
    flip = data.draw(st.integers(0, len(sample) - 1))
    mutated = bytearray(sample[:cut] if data.draw(st.booleans()) else sample)
    if flip < len(mutated):
        mutated[flip] = data.draw(st.integers(0, 255))
    try:
        gpus = parse_nvidia_smi_xml(bytes(mutated))
    except FormatError:
        return
    assert all(g.uuid and g.model and g.cc_mode in ("on", "devtools", "off") for g in gpus)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_fail_only_with_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_nvidia_smi_xml(data)


def test_no_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_gpus() == ()


def _pci(tmp_path: Path, *devices: tuple[str, str, str]) -> Path:
    """A sysfs-like PCI device folder: (address, vendor, class) per device."""
    pci = tmp_path / "pci"
    for address, vendor, kind in devices:
        (pci / address).mkdir(parents=True)
        (pci / address / "vendor").write_text(f"{vendor}\n")
        (pci / address / "class").write_text(f"{kind}\n")
    pci.mkdir(exist_ok=True)
    return pci


def _tool(folder: Path, name: str, body: str) -> None:
    tool = folder / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)


def test_nvidia_smi_output_is_read_through_the_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-ins for nvidia-smi (printing the sample) and nvidia-modprobe (recording its
    # arguments) on PATH: the real run() path.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(
        bin_dir,
        "nvidia-smi",
        f"[ \"$1 $2\" = '-q -x' ] || exit 9\ncat {SAMPLES / 'h100-no-cc.xml'}",
    )
    _tool(bin_dir, "nvidia-modprobe", f'echo "$@" >{tmp_path / "modprobe.args"}')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pci = _pci(
        tmp_path, ("0000:00:01.0", "0x1af4", "0x010000"), ("0000:01:00.0", "0x10de", "0x030200")
    )
    (gpu,) = read_gpus(pci)
    assert gpu.cc_mode == "off"
    assert gpu.uuid == "GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91"
    # The unified-memory node, which CUDA in the job's container needs, was made.
    assert (tmp_path / "modprobe.args").read_text() == "-u -c=0\n"


def test_the_driver_without_an_nvidia_gpu_means_no_gpu_and_nvidia_smi_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gpu image on a VM without a GPU: nvidia-smi is installed but no nvidia module
    # loads, so it would fail (exit 9, "couldn't communicate with the NVIDIA driver").
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2\nexit 9")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # A virtio disk and an NVIDIA function that is not a display controller (HD audio).
    pci = _pci(
        tmp_path, ("0000:00:01.0", "0x1af4", "0x010000"), ("0000:01:00.1", "0x10de", "0x040300")
    )
    assert nvidia_pci_gpus(pci) == ()
    assert read_gpus(pci) == ()
    assert read_gpus(tmp_path / "no-pci-bus") == ()


def test_nvidia_display_controllers_are_found_by_vendor_and_class(tmp_path: Path) -> None:
    pci = _pci(
        tmp_path,
        ("0000:02:00.0", "0x10de", "0x030200"),
        ("0000:01:00.0", "0x10de", "0x030000"),
        ("0000:03:00.0", "0x10de", "0x068000"),
        ("0000:04:00.0", "0x1002", "0x030000"),
    )
    assert nvidia_pci_gpus(pci) == ("0000:01:00.0", "0000:02:00.0")


def test_a_pci_device_that_cannot_be_read_is_an_error_not_no_gpu(tmp_path: Path) -> None:
    pci = _pci(tmp_path, ("0000:01:00.0", "0x10de", "0x030000"))
    (pci / "0000:01:00.0" / "class").unlink()
    with pytest.raises(ToolError, match=r"cannot read PCI device 0000:01:00\.0"):
        nvidia_pci_gpus(pci)
