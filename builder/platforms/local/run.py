"""Booting the measured image locally for ``aicert-build run --platform local``.

The local platform imitates Azure Trusted Launch: a swtpm is provisioned like
Azure's vTPM (AK at 0x81000003, its certificate in NV 0x01C101D0, issued by the
local CA), the image boots in QEMU with OVMF, the agent is reached through one
forwarded port on 127.0.0.1, and everything (QEMU, swtpm, scratch disk, TPM
state) is removed at the end, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aicert.builder.platforms.base import BootedImage, Say, Verification
from aicert.builder.platforms.local import qemu
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.boot.boot_reference import reference_from_recipe
from aicert.verifier.boot.platform_profile import load_profile
from aicert.verifier.errors import InputError
from cryptography.hazmat.primitives import serialization

DEFAULT_SCRATCH_BYTES = 16 * 1024**3
LOCAL_PROFILE = "qemu"
# The local CA's root, written next to the certificate: auditors need it as --trust-root.
LOCAL_CA_ROOT_NAME = "local-ca-root.pem"


@dataclass(frozen=True)
class LocalRun:
    image: Path
    """Directory with disk.raw, uki.efi and recipe.json from ``aicert-build image``."""
    output: Path
    ca_dir: Path
    scratch_bytes: int = DEFAULT_SCRATCH_BYTES
    boot_timeout: float = 900.0
    guest_forwards: tuple[str, ...] = ()
    """Host services the VM may reach (see :attr:`qemu.VmSpec.guest_forwards`)."""


def default_ca_dir() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "aicert" / "local-ca"


def image_files(image: Path) -> tuple[Path, Path]:
    disk, recipe = image / "disk.raw", image / "recipe.json"
    for path in (disk, recipe):
        if not path.is_file():
            raise InputError(
                f"{path} is missing: build the image first with "
                f"'aicert-build image --output {image}'"
            )
    return disk, recipe


@contextlib.contextmanager
def boot_local(spec: LocalRun, *, say: Say) -> Iterator[BootedImage]:
    """Provision a swtpm like Azure's vTPM and boot the image in QEMU on it, until the
    ``with`` block ends; the agent has reported ready when this yields."""
    disk, recipe = image_files(spec.image)
    ca = LocalCa.load_or_create(spec.ca_dir)
    intermediate = ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
    verification = Verification(
        trust_roots=(ca.root_certificate,),
        boot_reference=reference_from_recipe(recipe),
        platform_profile=load_profile(LOCAL_PROFILE),
    )
    with tempfile.TemporaryDirectory(prefix="aicert-run-") as tmp:
        work = Path(tmp)
        tpm_state = work / "tpm"
        vm_id = secrets.token_hex(8)
        say(f"provisioning the local vTPM like Azure's (VM {vm_id}, CA {spec.ca_dir})")
        with Swtpm.tcp(tpm_state) as tpm:
            provision_like_azure(tpm.tcti, ca, vm_id)
        scratch = qemu.make_scratch_disk(work / "scratch.raw", spec.scratch_bytes)
        # The agent fetches the intermediate in the VM from the AK certificate's AIA link,
        # as on Azure's newer vTPM CAs; nothing hands it in.
        issuer = work / "intermediate-ca.der"
        issuer.write_bytes(intermediate)
        vm_spec = qemu.VmSpec(
            disk=disk,
            tpm_state=tpm_state,
            scratch=scratch,
            issuer_certificate=issuer,
            guest_forwards=spec.guest_forwards,
        )
        with qemu.Vm(vm_spec) as vm:
            say(f"booting {disk} in QEMU ({vm.accel}), agent port 127.0.0.1:{vm.host_port}")
            _, seconds = vm.wait_ready(spec.boot_timeout)
            say(f"image booted and reported ready in {seconds:.0f} s")
            yield BootedImage(
                agent_url=f"https://127.0.0.1:{vm.host_port}",
                verification=verification,
                agent_roots=(ca.root_certificate,),
                agent_failed=vm.agent_failure,
                result_files=((LOCAL_CA_ROOT_NAME, ca.root_path),),
            )
