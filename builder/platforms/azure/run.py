"""Booting the measured image on Azure for ``aicert-build run --platform azure``.

One VM per job, booted from the published gallery image version: Azure's vTPM holds
the attestation key (its certificate chains to Microsoft's Azure Virtual TPM Root
CA, bundled with the verifier), Secure Boot is on, and an NSG admits only the
caller's address on the agent port. The job flow is the platform-independent one
of :func:`aicert.builder.job_runner.run_on`. Every resource of the VM (tagged
``aicert:deployment=vm/<name>``) is deleted at the end, on success, failure or
Ctrl-C/SIGTERM, and what is deleted is printed.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aicert.builder.platforms.azure.clients import AzureClients
from aicert.builder.platforms.azure.deploy import destroy
from aicert.builder.platforms.azure.vm import DEFAULT_SCRATCH_GIB, VmSpec, create_vm
from aicert.builder.platforms.base import BootedImage, Say, Verification
from aicert.verifier.boot.boot_reference import reference_from_recipe
from aicert.verifier.boot.platform_profile import load_profile
from aicert.verifier.errors import AicertError, CloudError
from aicert.verifier.tpm.ak_chain import bundled_intermediates, bundled_roots
from cryptography import x509
from cryptography.hazmat.primitives import serialization

# 4 vCPUs, 16 GiB, Gen2 and Trusted Launch: within the default quota of most subscriptions
# (GPU families start at a quota of 0), and the image has no GPU driver yet. See docs/azure.md.
DEFAULT_VM_SIZE = "Standard_D4s_v5"
AGENT_PORT = 8443
DEFAULT_BOOT_TIMEOUT = 900.0


@dataclass(frozen=True)
class AzureRun:
    """Where to run one job on Azure and what its result is verified against."""

    subscription: str
    resource_group: str
    location: str
    image_version_id: str
    """The gallery image version that ``aicert-build deploy azure`` printed."""
    output: Path
    recipe: Path
    """recipe.json of the published image: the expected boot PCRs."""
    caller_ip: str
    """This machine's public address: the only one the VM's NSG admits."""
    vm_size: str = DEFAULT_VM_SIZE
    scratch_gib: int = DEFAULT_SCRATCH_GIB
    """The empty data disk the image formats for inputs and outputs."""
    platform_profile: str | None = None
    """A bundled profile name or a file (``aicert-build profile capture``); None: none."""
    agent_port: int = AGENT_PORT
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    trust_roots: tuple[x509.Certificate, ...] = ()
    """Roots accepted besides the bundled Azure ones."""


def new_vm_name() -> str:
    return f"aicert-run-{secrets.token_hex(4)}"


@contextlib.contextmanager
def boot_vm(
    clients: AzureClients, spec: AzureRun, *, vm_name: str, say: Say
) -> Iterator[BootedImage]:
    """Create the VM until the ``with`` block ends, then delete every resource it had."""
    verification = Verification(
        trust_roots=spec.trust_roots,
        boot_reference=reference_from_recipe(spec.recipe),
        platform_profile=load_profile(spec.platform_profile) if spec.platform_profile else None,
    )
    vm = VmSpec(
        resource_group=spec.resource_group,
        location=spec.location,
        name=vm_name,
        image_version_id=spec.image_version_id,
        caller_ip=spec.caller_ip,
        agent_port=spec.agent_port,
        vm_size=spec.vm_size,
        scratch_gib=spec.scratch_gib,
    )
    try:
        created = create_vm(clients, vm, say=say)
        say(
            f"VM {vm.name} created (Azure VM id {created.azure_vm_id}), "
            f"agent at {created.public_ip}:{created.agent_port}"
        )
        yield BootedImage(
            agent_url=f"https://{created.public_ip}:{created.agent_port}",
            verification=verification,
            agent_roots=(*bundled_roots(), *spec.trust_roots),
            intermediates=tuple(
                c.public_bytes(serialization.Encoding.DER) for c in bundled_intermediates()
            ),
            up_timeout=spec.boot_timeout,
        )
    finally:
        _delete_vm(clients, vm, say)


def _delete_vm(clients: AzureClients, vm: VmSpec, say: Say) -> None:
    """Delete every resource tagged for ``vm``; if that fails, say how to finish it."""
    say(f"deleting the resources of {vm.deployment_id}")
    try:
        deleted = destroy(clients, vm.resource_group, deployment=vm.deployment_id, say=say)
    except (AicertError, KeyboardInterrupt) as exc:
        raise CloudError(
            f"could not delete every resource of {vm.deployment_id} ({exc}); finish with "
            f"'aicert-build destroy azure --resource-group {vm.resource_group} "
            f"--deployment {vm.deployment_id}'"
        ) from exc
    say(f"deleted {len(deleted)} resources of {vm.deployment_id}")
