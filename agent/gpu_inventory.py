"""The GPUs of this VM, read through NVML with ``nvidia-smi -q -x``.

nvidia-smi is part of the driver's user space (in the ``gpu`` image profile), so no
extra library is needed for the inventory, and its XML is one document for every GPU.
Its output is treated as untrusted input: bounded in size, no DTD internal subset or
entity declaration, and the fields kept must be short printable text. No nvidia-smi, or
no NVIDIA display controller on the PCI bus, means no GPU: an empty inventory, cleanly
(in the ``gpu`` image without a GPU no nvidia module loads, and nvidia-smi would fail
for want of a driver). NVIDIA's XML shape (``nvsmi_device_v12.dtd``):
``nvidia_smi_log`` holds ``driver_version`` and one ``gpu`` per device with
``product_name``, ``uuid`` and ``vbios_version``. The confidential-computing state is
system-wide in NVML (``nvmlSystemGetConfComputeState``: ``ccFeature``, ``devToolsMode``);
it is read from the ``confidential_compute`` element (``cc_feature``, ``devtools_mode``),
and a log without it is a system without CC (see tests/data/nvidia-smi/README.md).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.errors import FormatError, ToolError

from aicert.process import run

MAX_XML_BYTES = 4 * 1024 * 1024
MAX_GPUS = 64
MAX_FIELD = 128
NVIDIA_SMI_TIMEOUT_S = 60
PCI_DEVICES = Path("/sys/bus/pci/devices")
NVIDIA_PCI_VENDOR = "0x10de"
# PCI base class 0x03, display controller: NVIDIA's GPUs present themselves as VGA (0x0300)
# or 3D (0x0302) controllers; NVSwitches (0x0680) and audio functions are not GPUs.
DISPLAY_CLASS_PREFIX = "0x03"


@dataclass(frozen=True)
class GpuInfo:
    model: str
    uuid: str
    driver_version: str
    vbios_version: str
    cc_mode: str


def parse_nvidia_smi_xml(data: bytes) -> tuple[GpuInfo, ...]:
    """The GPUs an ``nvidia-smi -q -x`` document lists; FormatError on anything malformed."""
    if len(data) > MAX_XML_BYTES:
        raise FormatError(f"nvidia-smi XML: larger than {MAX_XML_BYTES} bytes")
    # nvidia-smi names an external DTD and declares nothing inline: refusing internal
    # subsets and entities keeps expansion out of the parser.
    if b"<!ENTITY" in data or b"[" in _doctype(data):
        raise FormatError("nvidia-smi XML: entity or internal DTD declarations are not allowed")
    try:
        root = ET.fromstring(data)  # noqa: S314 - no internal DTD or entity (checked above)
    except ET.ParseError as exc:
        raise FormatError(f"nvidia-smi XML: not well-formed ({exc})") from None
    if root.tag != "nvidia_smi_log":
        raise FormatError(f"nvidia-smi XML: root element is {root.tag!r}, not nvidia_smi_log")
    driver = _field(root, "driver_version", "nvidia_smi_log")
    cc_mode = _cc_mode(root)
    gpus = root.findall("gpu")
    if len(gpus) > MAX_GPUS:
        raise FormatError(f"nvidia-smi XML: more than {MAX_GPUS} GPUs")
    attached = root.findtext("attached_gpus")
    if attached is not None and attached.strip() != str(len(gpus)):
        raise FormatError(f"nvidia-smi XML: attached_gpus is {attached!r}, {len(gpus)} listed")
    found = tuple(
        GpuInfo(
            model=_field(g, "product_name", f"gpu {i}"),
            uuid=_field(g, "uuid", f"gpu {i}"),
            driver_version=driver,
            vbios_version=_field(g, "vbios_version", f"gpu {i}"),
            cc_mode=cc_mode,
        )
        for i, g in enumerate(gpus)
    )
    if len({g.uuid for g in found}) != len(found):
        raise FormatError("nvidia-smi XML: two GPUs have the same UUID")
    return found


def _doctype(data: bytes) -> bytes:
    start = data.find(b"<!DOCTYPE")
    return data[start : data.find(b">", start) + 1] if start >= 0 else b""


def _cc_mode(root: ET.Element) -> str:
    cc = root.find("confidential_compute")
    if cc is None:
        return "off"
    feature = _field(cc, "cc_feature", "confidential_compute").upper()
    devtools = _field(cc, "devtools_mode", "confidential_compute").upper()
    if feature not in ("ON", "OFF") or devtools not in ("ON", "OFF"):
        raise FormatError("nvidia-smi XML: cc_feature and devtools_mode must be ON or OFF")
    if feature == "OFF":
        return "off"
    return "devtools" if devtools == "ON" else "on"


def _field(parent: ET.Element, name: str, where: str) -> str:
    elements = parent.findall(name)
    if len(elements) != 1:
        raise FormatError(f"nvidia-smi XML: {where} must hold one {name}, not {len(elements)}")
    text = (elements[0].text or "").strip()
    if not text or len(text) > MAX_FIELD or not text.isprintable() or text == "N/A":
        raise FormatError(f"nvidia-smi XML: {where} {name} is empty, N/A or not short text")
    return text


def nvidia_pci_gpus(pci: Path = PCI_DEVICES) -> tuple[str, ...]:
    """The PCI addresses of the NVIDIA display controllers under ``pci``, sorted."""
    if not pci.is_dir():
        return ()
    found = []
    for device in sorted(pci.iterdir()):
        try:
            vendor = (device / "vendor").read_text().strip()
            kind = (device / "class").read_text().strip()
        except OSError as exc:
            # Skipping it could record "no GPU" for a VM whose job then uses one.
            raise ToolError(
                f"cannot read PCI device {device.name} ({exc.filename}): {exc.strerror}"
            ) from None
        if vendor == NVIDIA_PCI_VENDOR and kind.startswith(DISPLAY_CLASS_PREFIX):
            found.append(device.name)
    return tuple(found)


def read_gpus(pci: Path = PCI_DEVICES) -> tuple[GpuInfo, ...]:
    """The GPUs of this machine; none without the driver's nvidia-smi or an NVIDIA GPU.

    With GPUs, their device nodes exist afterwards: nvidia-smi makes /dev/nvidiactl and
    /dev/nvidiaN, and ``nvidia-modprobe -u -c=0`` loads nvidia-uvm and makes
    /dev/nvidia-uvm, which CUDA opens and which the job's container cannot make itself.
    """
    if shutil.which("nvidia-smi") is None or not nvidia_pci_gpus(pci):
        return ()
    proc = run(["nvidia-smi", "-q", "-x"], timeout=NVIDIA_SMI_TIMEOUT_S)
    gpus = parse_nvidia_smi_xml(proc.stdout)
    if gpus and shutil.which("nvidia-modprobe") is not None:
        run(["nvidia-modprobe", "-u", "-c=0"], timeout=NVIDIA_SMI_TIMEOUT_S)
    return gpus
