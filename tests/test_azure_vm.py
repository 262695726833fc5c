"""Trusted Launch VM creation against the local fake of Azure."""

from __future__ import annotations

import pytest
from aicert.builder.platforms.azure.clients import AzureClients
from aicert.builder.platforms.azure.deploy import (
    TAG_DEPLOYMENT,
    TAG_MANAGED,
    destroy,
)
from aicert.builder.platforms.azure.errors import CloudQuotaError, CloudUnsupportedError
from aicert.builder.platforms.azure.vm import VmSpec, create_vm
from aicert.verifier.errors import InputError
from azure_fake import FakeAzure
from azure_fixtures import RG

DISKS = "Microsoft.Compute/disks"
NETWORK_TYPES = {
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/networkInterfaces",
}


def _vm_spec(image_version: str, **kw: object) -> VmSpec:
    args: dict[str, object] = {
        "resource_group": RG,
        "location": "westeurope",
        "name": "job-1",
        "image_version_id": image_version,
        "caller_ip": "52.174.10.20",
        "agent_port": 8443,
    }
    args.update(kw)
    return VmSpec(**args)  # type: ignore[arg-type]


def test_vm_is_trusted_launch_and_reachable_only_from_the_caller(
    fake: FakeAzure, clients: AzureClients, image_version: str
) -> None:
    created = create_vm(clients, _vm_spec(image_version))
    (vm,) = fake.of_type("Microsoft.Compute/virtualMachines")
    props = vm["properties"]
    assert props["securityProfile"] == {
        "securityType": "TrustedLaunch",
        "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
    }
    assert props["storageProfile"]["imageReference"] == {"id": image_version}
    assert props["storageProfile"]["osDisk"]["createOption"] == "FromImage"
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    (scratch,) = props["storageProfile"]["dataDisks"]
    assert scratch | {"managedDisk": None} == {
        "lun": 0,
        "createOption": "Empty",
        "diskSizeGB": 128,
        "deleteOption": "Delete",
        "caching": "ReadOnly",
        "managedDisk": None,
    }
    disks = {d["properties"]["creationData"]["createOption"]: d for d in fake.of_type(DISKS)}
    assert disks["Empty"]["id"] == scratch["managedDisk"]["id"]
    assert disks["Empty"]["properties"]["diskSizeGB"] == 128
    assert "osProfile" not in props  # specialized image: no provisioning data
    assert props["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    assert created.azure_vm_id == props["vmId"]
    assert created.agent_port == 8443

    (nsg,) = fake.of_type("Microsoft.Network/networkSecurityGroups")
    (rule,) = nsg["properties"]["securityRules"]
    assert rule["properties"] | {"description": ""} == {
        "description": "",
        "protocol": "Tcp",
        "access": "Allow",
        "direction": "Inbound",
        "priority": 100,
        "sourceAddressPrefix": "52.174.10.20/32",
        "sourcePortRange": "*",
        "destinationAddressPrefix": "*",
        "destinationPortRange": "8443",
    }
    (pip,) = fake.of_type("Microsoft.Network/publicIPAddresses")
    assert pip["sku"]["name"] == "Standard"
    assert pip["properties"]["publicIPAllocationMethod"] == "Static"
    assert created.public_ip == pip["properties"]["ipAddress"]
    (nic,) = fake.of_type("Microsoft.Network/networkInterfaces")
    assert nic["properties"]["networkSecurityGroup"]["id"] == nsg["id"]

    for res in [vm, nsg, pip, nic, *fake.of_type("Microsoft.Network/virtualNetworks")]:
        assert res["tags"][TAG_MANAGED] == "true"
        assert res["tags"][TAG_DEPLOYMENT] == "vm/job-1"


def test_destroy_removes_the_vm_and_its_network_in_order(
    fake: FakeAzure, clients: AzureClients, image_version: str
) -> None:
    create_vm(clients, _vm_spec(image_version))
    destroy(clients, RG, deployment="vm/job-1")
    assert fake.types() == {
        "Microsoft.Compute/galleries",
        "Microsoft.Compute/galleries/images",
        "Microsoft.Compute/galleries/images/versions",
    }


def test_a_large_scratch_disk_is_not_host_cached(
    fake: FakeAzure, clients: AzureClients, image_version: str
) -> None:
    create_vm(clients, _vm_spec(image_version, scratch_gib=8192))
    (vm,) = fake.of_type("Microsoft.Compute/virtualMachines")
    (scratch,) = vm["properties"]["storageProfile"]["dataDisks"]
    assert (scratch["diskSizeGB"], scratch["caching"]) == (8192, "None")


def test_unsupported_size_is_a_clear_error_and_leaves_nothing(
    fake: FakeAzure, clients: AzureClients, image_version: str
) -> None:
    with pytest.raises(CloudUnsupportedError, match=r"Standard_A1_v2.*TrustedLaunch"):
        create_vm(clients, _vm_spec(image_version, vm_size="Standard_A1_v2"))
    assert not (fake.types() & NETWORK_TYPES)
    assert fake.of_type("Microsoft.Compute/virtualMachines") == []


def test_quota_error_cleans_up(fake: FakeAzure, clients: AzureClients, image_version: str) -> None:
    fake.inject(
        "PUT",
        r"/virtualMachines/job-1\?",
        409,
        "OperationNotAllowed",
        "Operation could not be completed as it results in exceeding approved standardDSv5Family "
        "Cores quota.",
    )
    with pytest.raises(CloudQuotaError, match="quota"):
        create_vm(clients, _vm_spec(image_version))
    assert not (fake.types() & NETWORK_TYPES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("caller_ip", "10.0.0.1"),
        ("caller_ip", "not-an-ip"),
        ("agent_port", 0),
        ("name", "-bad"),
        ("image_version_id", "/subscriptions/x/images/y"),
        ("scratch_gib", 0),
        ("scratch_gib", 32768),
    ],
)
def test_bad_vm_specs_are_input_errors(field: str, value: object) -> None:
    with pytest.raises(InputError):
        _vm_spec("/s/versions/1.0.0", **{field: value})
