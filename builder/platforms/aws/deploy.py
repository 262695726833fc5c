"""Publish the aicert disk image as an AMI (UEFI, NitroTPM), and remove what aicert made.

Deploy, in order (a rerun reuses what an earlier one left):

1. hash ``disk.raw``;
2. an AMI of this name owned by the account: same disk (tag ``aicert:disk-sha256``),
   same UEFI variable store, UEFI boot and ``TpmSupport=v2.0`` → nothing to do;
   ``failed`` → deregister it and go on; anything else → conflict;
3. a completed snapshot tagged with this disk's SHA-256 for this AMI name is reused;
   else the disk goes up through the EBS direct APIs (:mod:`.snapshot`);
4. RegisterImage: x86_64, HVM, ENA, ``BootMode=uefi``, ``TpmSupport=v2.0``,
   ``ImdsSupport=v2.0``, root ``/dev/xvda`` from the snapshot (gp3); ``UefiData``
   when Secure Boot keys are given. If registering fails the snapshot is kept for
   a rerun, and the error says so.

Every resource is tagged ``aicert:managed=true``, ``aicert:deployment=<AMI name>``
(``run/<name>`` for a run's instance and security group) and ``aicert:role``;
:func:`destroy` finds them by these tags.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.builder.platforms.base import Leftover
from aicert.verifier.errors import InputError

from .clients import AwsClients
from .errors import CloudConflictError
from .snapshot import SnapshotUpload, upload_snapshot

TAG_MANAGED = "aicert:managed"
TAG_DEPLOYMENT = "aicert:deployment"
TAG_ROLE = "aicert:role"
TAG_DISK_SHA256 = "aicert:disk-sha256"
TAG_UEFI_DATA = "aicert:uefi-data-sha256"

ROOT_DEVICE = "/dev/xvda"
UEFI_DATA_MAGIC = b"AMZNUEFI"
"""The start of the AWS UEFI variable store once its base64 is decoded."""
MAX_UEFI_DATA = 64 * 1024
"""RegisterImage takes at most 64 KiB of base64 UEFI data."""
_AMI_NAME = re.compile(r"^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$")

Say = Callable[[str], None]


@dataclass(frozen=True)
class AwsDeploySpec:
    """Which disk to publish under which AMI name."""

    disk: Path
    image_name: str
    uefi_data: str | None = None
    """The AWS UEFI variable store (PK, KEK, db) for Secure Boot, base64 as python-uefivars
    ``-o aws`` writes it and RegisterImage takes it; None: AWS's defaults."""
    workers: int = 8

    def __post_init__(self) -> None:
        if not _AMI_NAME.match(self.image_name):
            raise InputError(
                f"AMI name {self.image_name!r}: 3 to 128 letters, digits, spaces and "
                "( ) [ ] . / - ' @ _"
            )
        if self.uefi_data is not None:
            check_uefi_data(self.uefi_data)

    @property
    def uefi_digest(self) -> str:
        if self.uefi_data is None:
            return ""
        return hashlib.sha256(base64.b64decode(self.uefi_data)).hexdigest()

    def tags(self, role: str, **extra: str) -> dict[str, str]:
        return {TAG_MANAGED: "true", TAG_DEPLOYMENT: self.image_name, TAG_ROLE: role, **extra}


def check_uefi_data(text: str) -> None:
    """Refuse what cannot be an AWS UEFI variable store before anything is uploaded."""
    if len(text) > MAX_UEFI_DATA:
        raise InputError(f"UEFI data of {len(text)} bytes: AWS takes at most {MAX_UEFI_DATA}")
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:
        blob = b""
    if not blob.startswith(UEFI_DATA_MAGIC):
        raise InputError(
            "the UEFI data is not a base64 AWS variable store (no AMZNUEFI header); make it with "
            "'uefivars -i none -o aws -O uefi.bin -P PK.esl -K KEK.esl --db db.esl'"
        )


@dataclass(frozen=True)
class DeployResult:
    image_id: str
    disk_sha256: str
    already_published: bool
    upload: SnapshotUpload | None


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise InputError(
            f"{path} does not exist: build it with 'aicert-build image --profile aws'"
        ) from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest()


def find_image(clients: AwsClients, name: str) -> dict[str, Any] | None:
    images = clients.ec2_call(
        f"looking up AMI {name!r}",
        "describe_images",
        Owners=["self"],
        Filters=[{"Name": "name", "Values": [name]}],
    )["Images"]
    return images[0] if images else None


def deploy_image(clients: AwsClients, spec: AwsDeploySpec, *, say: Say) -> DeployResult:
    """Publish ``spec.disk`` as AMI ``spec.image_name`` (idempotent)."""
    say(f"hashing {spec.disk}")
    digest = sha256_of(spec.disk)
    image = find_image(clients, spec.image_name)
    if image is not None and _reusable(clients, image, spec, digest, say):
        say(f"AMI {image['ImageId']} ({spec.image_name}) already published (disk {digest[:12]})")
        return DeployResult(str(image["ImageId"]), digest, True, None)
    snapshot_id, upload = _snapshot_for(clients, spec, digest, say)
    say(f"registering AMI {spec.image_name} (UEFI, NitroTPM v2.0) from {snapshot_id}")
    kwargs: dict[str, Any] = {
        "Name": spec.image_name,
        "Description": f"aicert measured OS, disk sha256 {digest}",
        "Architecture": "x86_64",
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "BootMode": "uefi",
        "TpmSupport": "v2.0",
        "ImdsSupport": "v2.0",
        "RootDeviceName": ROOT_DEVICE,
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE,
                "Ebs": {
                    "SnapshotId": snapshot_id,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "TagSpecifications": [
            {
                "ResourceType": "image",
                "Tags": tag_list(
                    spec.tags("image", **{TAG_DISK_SHA256: digest, TAG_UEFI_DATA: spec.uefi_digest})
                ),
            }
        ],
    }
    if spec.uefi_data is not None:
        kwargs["UefiData"] = spec.uefi_data
    try:
        image_id = str(
            clients.ec2_call(f"registering AMI {spec.image_name}", "register_image", **kwargs)[
                "ImageId"
            ]
        )
    except BaseException:
        say(f"registering failed: snapshot {snapshot_id} is kept, a rerun of the deploy reuses it")
        raise
    say(f"published {image_id}")
    return DeployResult(image_id, digest, False, upload)


def _reusable(
    clients: AwsClients, image: dict[str, Any], spec: AwsDeploySpec, digest: str, say: Say
) -> bool:
    """True for an AMI that already holds this disk; False after removing a failed one."""
    name, image_id, state = spec.image_name, image["ImageId"], image.get("State")
    tags = tags_of(image)
    if state == "failed":
        say(f"AMI {image_id} ({name}) failed to register: deregistering it")
        clients.ec2_call(f"deregistering AMI {image_id}", "deregister_image", ImageId=image_id)
        return False
    if tags.get(TAG_DISK_SHA256) != digest:
        raise CloudConflictError(
            f"AMI {name!r} ({image_id}) already exists for another disk "
            f"(sha256 {tags.get(TAG_DISK_SHA256, 'unknown')[:12]}…, this disk {digest[:12]}…); "
            "publish under a new --image-name"
        )
    if tags.get(TAG_UEFI_DATA, "") != spec.uefi_digest:
        raise CloudConflictError(
            f"AMI {name!r} ({image_id}) was published with other UEFI Secure Boot data; "
            "publish under a new --image-name"
        )
    if image.get("BootMode") != "uefi" or image.get("TpmSupport") != "v2.0":
        raise CloudConflictError(
            f"AMI {name!r} ({image_id}) does not boot UEFI with NitroTPM "
            f"(BootMode {image.get('BootMode')}, TpmSupport {image.get('TpmSupport')}); "
            "publish under a new --image-name"
        )
    if state != "available":
        raise CloudConflictError(
            f"AMI {name!r} ({image_id}) is {state}; wait for it, then run the deploy again"
        )
    return True


def _snapshot_for(
    clients: AwsClients, spec: AwsDeploySpec, digest: str, say: Say
) -> tuple[str, SnapshotUpload | None]:
    found = clients.ec2_call(
        "looking up snapshots of this disk",
        "describe_snapshots",
        OwnerIds=["self"],
        Filters=[
            {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [spec.image_name]},
            {"Name": f"tag:{TAG_DISK_SHA256}", "Values": [digest]},
        ],
    )["Snapshots"]
    for snap in found:
        if snap.get("State") == "completed":
            say(f"resuming: snapshot {snap['SnapshotId']} already holds this disk")
            return str(snap["SnapshotId"]), None
        say(f"snapshot {snap['SnapshotId']} is left from an unfinished upload: deleting it")
        clients.ec2_call(
            f"deleting snapshot {snap['SnapshotId']}",
            "delete_snapshot",
            SnapshotId=snap["SnapshotId"],
        )
    say(f"uploading {spec.disk} as an EBS snapshot")
    upload = upload_snapshot(
        clients,
        spec.disk,
        tags=spec.tags("snapshot", **{TAG_DISK_SHA256: digest}),
        description=f"aicert {spec.image_name}",
        # StartSnapshot is idempotent per token: a retried request makes no second snapshot.
        client_token=hashlib.sha256(f"{spec.image_name}\0{digest}".encode()).hexdigest()[:64],
        workers=spec.workers,
    )
    say(
        f"uploaded {upload.bytes_sent} bytes of a {upload.disk_size}-byte disk in "
        f"{upload.blocks_written} blocks ({upload.seconds:.1f} s)"
    )
    return upload.snapshot_id, upload


def find_managed(clients: AwsClients, deployment: str | None = None) -> list[Leftover]:
    """aicert's resources in the region (of one deployment), in the order they are deleted."""
    filters = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]}]
    if deployment is not None:
        filters.append({"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]})
    found: list[Leftover] = []
    reservations = clients.ec2_call(
        "listing aicert instances", "describe_instances", Filters=filters
    )["Reservations"]
    for res in reservations:
        for inst in res["Instances"]:
            if inst["State"]["Name"] != "terminated":
                found.append(Leftover("instance", inst["InstanceId"]))
    for group in clients.ec2_call(
        "listing aicert security groups", "describe_security_groups", Filters=filters
    )["SecurityGroups"]:
        found.append(Leftover("security-group", group["GroupId"]))
    for image in clients.ec2_call(
        "listing aicert AMIs", "describe_images", Owners=["self"], Filters=filters
    )["Images"]:
        found.append(Leftover("image", image["ImageId"]))
    for snap in clients.ec2_call(
        "listing aicert snapshots", "describe_snapshots", OwnerIds=["self"], Filters=filters
    )["Snapshots"]:
        found.append(Leftover("snapshot", snap["SnapshotId"]))
    return found


def delete_managed(clients: AwsClients, found: list[Leftover], *, say: Say) -> list[Leftover]:
    """Delete ``found`` in order: instances (waiting until terminated) before their
    security groups, AMIs before their snapshots."""
    instances = [m.id for m in found if m.kind == "instance"]
    if instances:
        say(f"terminating {', '.join(instances)}")
        clients.ec2_call("terminating instances", "terminate_instances", InstanceIds=instances)
        wait_terminated(clients, instances)
    for m in found:
        if m.kind == "security-group":
            say(f"deleting security group {m.id}")
            clients.ec2_call(
                f"deleting security group {m.id}", "delete_security_group", GroupId=m.id
            )
        elif m.kind == "image":
            say(f"deregistering AMI {m.id}")
            clients.ec2_call(f"deregistering AMI {m.id}", "deregister_image", ImageId=m.id)
    for m in found:
        if m.kind == "snapshot":
            say(f"deleting snapshot {m.id}")
            clients.ec2_call(f"deleting snapshot {m.id}", "delete_snapshot", SnapshotId=m.id)
    return found


def wait_terminated(clients: AwsClients, instance_ids: list[str], timeout: float = 600.0) -> None:
    """Until every instance is terminated: its security group cannot go before."""
    deadline = time.monotonic() + timeout
    while True:
        reservations = clients.ec2_call(
            "waiting for instances to terminate", "describe_instances", InstanceIds=instance_ids
        )["Reservations"]
        states = {i["State"]["Name"] for r in reservations for i in r["Instances"]}
        if states <= {"terminated"}:
            return
        if time.monotonic() > deadline:
            raise CloudConflictError(
                f"instances {', '.join(instance_ids)} are still {', '.join(sorted(states))} "
                f"after {timeout:.0f} s"
            )
        time.sleep(1)


def destroy(clients: AwsClients, deployment: str | None, *, say: Say) -> list[Leftover]:
    return delete_managed(clients, find_managed(clients, deployment), say=say)
