"""Booting the measured image on EC2 for ``aicert-build run --platform aws``.

One instance per job, from the AMI that ``aicert-build deploy aws`` published, or,
without one, from an AMI this run publishes for itself and deregisters at the end
(with its snapshot). A security group admits only the caller's address on the
agent port. Everything the run made (tag ``aicert:deployment=run/<name>``) is
deleted at the end, on success, failure or Ctrl-C, and what is deleted is printed.

NitroTPM gives the AK no certificate (docs/aws.md): the agent's AK must chain to a
root given with ``--trust-root``, or attestation fails closed before anything is sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.builder.job_file import MAX_SCRATCH_GIB
from aicert.builder.platforms.base import BootedImage, Say, Verification
from aicert.verifier.boot.boot_reference import reference_from_recipe
from aicert.verifier.boot.platform_profile import load_profile
from aicert.verifier.errors import AicertError, CloudError, InputError
from cryptography import x509

from .clients import AwsClients
from .deploy import (
    TAG_DEPLOYMENT,
    TAG_MANAGED,
    TAG_ROLE,
    AwsDeploySpec,
    deploy_image,
    destroy,
    tag_list,
)
from .errors import CloudNotFoundError

# 4 vCPUs, 16 GiB, Nitro with NitroTPM and UEFI; within a new account's on-demand
# vCPU quota. See docs/aws.md.
DEFAULT_INSTANCE_TYPE = "m6i.xlarge"
DEFAULT_SCRATCH_GIB = 128
AGENT_PORT = 8443
DEFAULT_BOOT_TIMEOUT = 900.0
SCRATCH_DEVICE = "/dev/sdf"
RUNNING_TIMEOUT = 600.0


@dataclass(frozen=True)
class AwsRun:
    """Where to run one job on EC2 and what its result is verified against."""

    region: str
    output: Path
    recipe: Path
    """recipe.json of the image: the expected boot PCRs."""
    caller_ip: str
    """This machine's public address: the only one the security group admits."""
    image_id: str | None = None
    """The AMI ``deploy aws`` printed; None: publish ``disk`` for this run only."""
    disk: Path | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    scratch_gib: int = DEFAULT_SCRATCH_GIB
    subnet_id: str | None = None
    """None: the region's default VPC."""
    platform_profile: str | None = None
    agent_port: int = AGENT_PORT
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    trust_roots: tuple[x509.Certificate, ...] = ()
    """Roots the agent's AK certificate must chain to (AWS bundles none)."""

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.caller_ip)
        except ValueError as exc:
            raise InputError(f"caller address {self.caller_ip!r} is not an IP address") from exc
        if not address.is_global:
            raise InputError(
                f"caller address {self.caller_ip} is not a public address; "
                "give the address the instance will see your connections come from"
            )
        if not 1 <= self.agent_port <= 65535:
            raise InputError(f"agent port {self.agent_port} is not a TCP port")
        if not 1 <= self.scratch_gib <= MAX_SCRATCH_GIB:
            raise InputError(f"scratch disk of {self.scratch_gib} GiB: 1 to {MAX_SCRATCH_GIB} GiB")
        if self.image_id is None and self.disk is None:
            raise InputError("give the AMI id that 'deploy aws' printed, or an image directory")
        if self.image_id is not None and not self.image_id.startswith("ami-"):
            raise InputError(f"{self.image_id!r} is not an AMI id (ami-...)")


def new_run_name() -> str:
    return f"aicert-run-{secrets.token_hex(4)}"


def _tags(deployment: str, role: str) -> list[dict[str, str]]:
    return tag_list({TAG_MANAGED: "true", TAG_DEPLOYMENT: deployment, TAG_ROLE: role})


@contextlib.contextmanager
def boot_instance(
    clients: AwsClients, spec: AwsRun, *, run_name: str, say: Say
) -> Iterator[BootedImage]:
    """Run one instance until the ``with`` block ends, then delete all the run made."""
    verification = Verification(
        trust_roots=spec.trust_roots,
        boot_reference=reference_from_recipe(spec.recipe),
        platform_profile=load_profile(spec.platform_profile) if spec.platform_profile else None,
    )
    deployment = f"run/{run_name}"
    try:
        image_id = spec.image_id or _publish_for_run(clients, spec.disk, deployment, say)
        group_id = _security_group(clients, spec, run_name, deployment, say)
        instance = _launch(clients, spec, image_id, group_id, run_name, deployment)
        say(f"instance {instance} launched from {image_id}")
        address = _wait_running(clients, instance)
        say(f"instance {instance} running, agent at {address}:{spec.agent_port}")
        yield BootedImage(
            agent_url=f"https://{address}:{spec.agent_port}",
            verification=verification,
            agent_roots=spec.trust_roots,
            up_timeout=spec.boot_timeout,
        )
    finally:
        _delete_run(clients, deployment, say)


def _publish_for_run(clients: AwsClients, disk: Path | None, deployment: str, say: Say) -> str:
    if disk is None:
        raise InputError("give the AMI id that 'deploy aws' printed, or an image directory")
    return deploy_image(clients, AwsDeploySpec(disk=disk, image_name=deployment), say=say).image_id


def _default_vpc(clients: AwsClients) -> str:
    vpcs = clients.ec2_call(
        "looking up the default VPC",
        "describe_vpcs",
        Filters=[{"Name": "is-default", "Values": ["true"]}],
    )["Vpcs"]
    if not vpcs:
        raise CloudNotFoundError(
            f"region {clients.region} has no default VPC; pass --subnet with a public subnet"
        )
    return str(vpcs[0]["VpcId"])


def _security_group(
    clients: AwsClients, spec: AwsRun, run_name: str, deployment: str, say: Say
) -> str:
    if spec.subnet_id is None:
        vpc = _default_vpc(clients)
    else:
        (subnet,) = clients.ec2_call(
            f"reading subnet {spec.subnet_id}", "describe_subnets", SubnetIds=[spec.subnet_id]
        )["Subnets"]
        vpc = str(subnet["VpcId"])
    group = clients.ec2_call(
        f"creating security group {run_name}",
        "create_security_group",
        GroupName=run_name,
        Description=f"aicert agent port for {spec.caller_ip} only",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(deployment, "sg")}],
    )
    group_id = str(group["GroupId"])
    say(f"security group {group_id} admits {spec.caller_ip}/32 on port {spec.agent_port}")
    clients.ec2_call(
        f"opening port {spec.agent_port} to {spec.caller_ip}",
        "authorize_security_group_ingress",
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": spec.agent_port,
                "ToPort": spec.agent_port,
                "IpRanges": [{"CidrIp": f"{spec.caller_ip}/32", "Description": "aicert caller"}],
            }
        ],
    )
    return group_id


def _launch(
    clients: AwsClients, spec: AwsRun, image_id: str, group_id: str, run_name: str, deployment: str
) -> str:
    kwargs: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SecurityGroupIds": [group_id],
        # The image formats the blank scratch volume for inputs and outputs.
        "BlockDeviceMappings": [
            {
                "DeviceName": SCRATCH_DEVICE,
                "Ebs": {
                    "VolumeSize": spec.scratch_gib,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                    "Encrypted": True,
                },
            }
        ],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [*_tags(deployment, "instance"), {"Key": "Name", "Value": run_name}],
            },
            {"ResourceType": "volume", "Tags": _tags(deployment, "volume")},
        ],
        # RunInstances is idempotent per token: a retried request starts no second instance.
        "ClientToken": run_name,
    }
    if spec.subnet_id is not None:
        kwargs["SubnetId"] = spec.subnet_id
    reservation = clients.ec2_call(
        f"launching a {spec.instance_type} instance", "run_instances", **kwargs
    )
    return str(reservation["Instances"][0]["InstanceId"])


def _wait_running(clients: AwsClients, instance_id: str) -> str:
    """The public address of ``instance_id`` once it runs."""
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while True:
        (res,) = clients.ec2_call(
            f"reading instance {instance_id}", "describe_instances", InstanceIds=[instance_id]
        )["Reservations"]
        inst = res["Instances"][0]
        state = inst["State"]["Name"]
        if state == "running":
            address = inst.get("PublicIpAddress")
            if not address:
                raise CloudError(
                    f"instance {instance_id} has no public address; use a subnet that assigns "
                    "public IPv4 addresses (the default VPC does)"
                )
            return str(address)
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            reason = inst.get("StateReason", {}).get("Message", "no reason given")
            raise CloudError(f"instance {instance_id} is {state} before it ran: {reason}")
        if time.monotonic() > deadline:
            raise CloudError(f"instance {instance_id} still {state} after {RUNNING_TIMEOUT:.0f} s")
        time.sleep(1)


def _delete_run(clients: AwsClients, deployment: str, say: Say) -> None:
    """Delete every resource tagged for this run; if that fails, say how to finish it."""
    say(f"deleting the resources of {deployment}")
    try:
        deleted = destroy(clients, deployment, say=say)
    except (AicertError, KeyboardInterrupt) as exc:
        raise CloudError(
            f"could not delete every resource of {deployment} ({exc}); finish with "
            f"'aicert-build destroy aws --region {clients.region} --deployment {deployment}'"
        ) from exc
    say(f"deleted {len(deleted)} resources of {deployment}")
