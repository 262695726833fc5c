"""A Trusted Launch VM booting a published aicert image, reachable only from the caller.

Created, all tagged like the deploy's resources (``aicert:deployment=vm/<name>``):

- a network security group whose one extra rule admits TCP to the agent port from the
  caller's address only (Azure's default rules deny all other inbound Internet traffic);
- a static Standard public IP, a virtual network with one subnet, and a NIC joining them;
- the VM: security type TrustedLaunch with vTPM (the attestation key lives there) and
  Secure Boot as asked (when on, the UKI must be signed by a certificate in the UEFI
  db: Microsoft's, or one published with ``deploy azure --secure-boot-cert``); the
  gallery image version as its OS image; an empty data disk at LUN 0 that the image
  formats as its scratch disk (inputs, outputs, job log); no OS profile (the image is
  specialized: nothing in it would apply one); boot diagnostics on (serial log); OS
  disk, data disk and NIC deleted with the VM.

If any step fails, what this call created is deleted again before the error is raised.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aicert.builder.job_file import MAX_SCRATCH_GIB
from aicert.verifier.errors import CloudError, InputError
from azure.mgmt.compute import models as cm
from azure.mgmt.network import models as nm

from .clients import AzureClients
from .deploy import TAG_DEPLOYMENT, TAG_MANAGED, TAG_ROLE, destroy
from .errors import azure_call

_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}[A-Za-z0-9]$")
AGENT_RULE_PRIORITY = 100
DEFAULT_SCRATCH_GIB = 128


@dataclass(frozen=True)
class VmSpec:
    """One VM for one job: where, from which image, and who may reach its agent."""

    resource_group: str
    location: str
    name: str
    image_version_id: str
    caller_ip: str
    agent_port: int
    vm_size: str = "Standard_D2s_v5"
    secure_boot: bool = True
    scratch_gib: int = DEFAULT_SCRATCH_GIB
    """Size of the empty data disk the agent keeps inputs and outputs on."""

    def __post_init__(self) -> None:
        if not _VM_NAME.match(self.name):
            raise InputError(f"VM name {self.name!r}: letters, digits and '-', 2 to 64 long")
        try:
            address = ipaddress.ip_address(self.caller_ip)
        except ValueError as exc:
            raise InputError(f"caller address {self.caller_ip!r} is not an IP address") from exc
        if not address.is_global:
            raise InputError(
                f"caller address {self.caller_ip} is not a public address; "
                "give the address the VM will see your connections come from"
            )
        if not 1 <= self.agent_port <= 65535:
            raise InputError(f"agent port {self.agent_port} is not a TCP port")
        if not 1 <= self.scratch_gib <= MAX_SCRATCH_GIB:
            raise InputError(f"scratch disk of {self.scratch_gib} GiB: 1 to {MAX_SCRATCH_GIB} GiB")
        if "/versions/" not in self.image_version_id.lower():
            raise InputError(f"{self.image_version_id!r} is not a gallery image version id")

    @property
    def deployment_id(self) -> str:
        return f"vm/{self.name}"

    def tags(self, role: str) -> dict[str, str]:
        return {TAG_MANAGED: "true", TAG_DEPLOYMENT: self.deployment_id, TAG_ROLE: role}

    @property
    def caller_prefix(self) -> str:
        bits = 32 if ipaddress.ip_address(self.caller_ip).version == 4 else 128
        return f"{self.caller_ip}/{bits}"


@dataclass(frozen=True)
class CreatedVm:
    """The VM and how to reach its agent."""

    vm_id: str
    azure_vm_id: str
    public_ip: str
    agent_port: int


def _nsg(spec: VmSpec) -> nm.NetworkSecurityGroup:
    rule = nm.SecurityRule(
        name="aicert-agent-from-caller",
        properties=nm.SecurityRulePropertiesFormat(
            description="The aicert agent, from the address that created this VM only",
            protocol="Tcp",
            access="Allow",
            direction="Inbound",
            priority=AGENT_RULE_PRIORITY,
            source_address_prefix=spec.caller_prefix,
            source_port_range="*",
            destination_address_prefix="*",
            destination_port_range=str(spec.agent_port),
        ),
    )
    return nm.NetworkSecurityGroup(
        location=spec.location,
        tags=spec.tags("network-security-group"),
        properties=nm.NetworkSecurityGroupPropertiesFormat(security_rules=[rule]),
    )


def _vm(spec: VmSpec, nic_id: str) -> cm.VirtualMachine:
    nic = cm.NetworkInterfaceReference(
        id=nic_id,
        properties=cm.NetworkInterfaceReferenceProperties(primary=True, delete_option="Delete"),
    )
    return cm.VirtualMachine(
        location=spec.location,
        tags=spec.tags("vm"),
        properties=cm.VirtualMachineProperties(
            hardware_profile=cm.HardwareProfile(vm_size=spec.vm_size),
            storage_profile=cm.StorageProfile(
                image_reference=cm.ImageReference(id=spec.image_version_id),
                os_disk=cm.OSDisk(
                    create_option="FromImage",
                    delete_option="Delete",
                    caching="ReadOnly",
                    managed_disk=cm.ManagedDiskParameters(storage_account_type="StandardSSD_LRS"),
                ),
                # Blank: aicert.agent.scratch formats it at boot. Only one blank disk
                # may be attached, or the image cannot tell which one is the scratch.
                data_disks=[
                    cm.DataDisk(
                        lun=0,
                        create_option="Empty",
                        disk_size_gb=spec.scratch_gib,
                        delete_option="Delete",
                        # Host read caching serves repeated epochs over the data; Azure
                        # allows it only on disks under 4 TiB.
                        caching="ReadOnly" if spec.scratch_gib < 4096 else "None",
                        managed_disk=cm.ManagedDiskParameters(
                            storage_account_type="StandardSSD_LRS"
                        ),
                    )
                ],
            ),
            network_profile=cm.NetworkProfile(network_interfaces=[nic]),
            security_profile=cm.SecurityProfile(
                security_type="TrustedLaunch",
                uefi_settings=cm.UefiSettings(
                    secure_boot_enabled=spec.secure_boot, v_tpm_enabled=True
                ),
            ),
            diagnostics_profile=cm.DiagnosticsProfile(
                boot_diagnostics=cm.BootDiagnostics(enabled=True)
            ),
        ),
    )


def create_vm(
    clients: AzureClients, spec: VmSpec, *, say: Callable[[str], None] = lambda _m: None
) -> CreatedVm:
    """Create the network and the Trusted Launch VM of ``spec``; on failure remove them."""
    try:
        return _create(clients, spec, say)
    except CloudError:
        say(f"VM creation failed: removing the resources of {spec.deployment_id}")
        destroy(clients, spec.resource_group, deployment=spec.deployment_id, say=say)
        raise


def _create(clients: AzureClients, spec: VmSpec, say: Callable[[str], None]) -> CreatedVm:
    rg, name, net = spec.resource_group, spec.name, clients.network

    def put(what: str, poller: Callable[[], Any]) -> Any:
        say(f"creating {what}")
        with azure_call(f"creating {what}"):
            return poller().result()

    nsg = put(
        f"network security group {name}-nsg",
        lambda: net.network_security_groups.begin_create_or_update(rg, f"{name}-nsg", _nsg(spec)),
    )
    public_ip = nm.PublicIPAddress(
        location=spec.location,
        tags=spec.tags("public-ip"),
        sku=nm.PublicIPAddressSku(name="Standard"),
        properties=nm.PublicIPAddressPropertiesFormat(public_ip_allocation_method="Static"),
    )
    pip = put(
        f"public IP {name}-ip",
        lambda: net.public_ip_addresses.begin_create_or_update(rg, f"{name}-ip", public_ip),
    )
    subnet = nm.Subnet(
        name="aicert", properties=nm.SubnetPropertiesFormat(address_prefix="10.42.0.0/26")
    )
    vnet_body = nm.VirtualNetwork(
        location=spec.location,
        tags=spec.tags("virtual-network"),
        properties=nm.VirtualNetworkPropertiesFormat(
            address_space=nm.AddressSpace(address_prefixes=["10.42.0.0/24"]), subnets=[subnet]
        ),
    )
    vnet = put(
        f"virtual network {name}-vnet",
        lambda: net.virtual_networks.begin_create_or_update(rg, f"{name}-vnet", vnet_body),
    )
    ip_config = nm.NetworkInterfaceIPConfiguration(
        name="primary",
        properties=nm.NetworkInterfaceIPConfigurationPropertiesFormat(
            primary=True,
            subnet=nm.Subnet(id=vnet.subnets[0].id),
            public_ip_address=nm.PublicIPAddress(id=pip.id),
            private_ip_allocation_method="Dynamic",
        ),
    )
    nic_body = nm.NetworkInterface(
        location=spec.location,
        tags=spec.tags("network-interface"),
        properties=nm.NetworkInterfacePropertiesFormat(
            network_security_group=nm.NetworkSecurityGroup(id=nsg.id),
            ip_configurations=[ip_config],
        ),
    )
    nic = put(
        f"network interface {name}-nic",
        lambda: net.network_interfaces.begin_create_or_update(rg, f"{name}-nic", nic_body),
    )
    vm = put(
        f"Trusted Launch VM {name} ({spec.vm_size})",
        lambda: clients.compute.virtual_machines.begin_create_or_update(
            rg, name, _vm(spec, str(nic.id))
        ),
    )
    with azure_call(f"reading public IP {name}-ip"):
        address = net.public_ip_addresses.get(rg, f"{name}-ip").ip_address
    if not address:
        raise CloudError(f"public IP {name}-ip has no address after the VM was created")
    return CreatedVm(str(vm.id), str(vm.vm_id or ""), str(address), spec.agent_port)
