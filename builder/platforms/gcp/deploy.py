"""Publishing the image on Compute Engine (``aicert-build deploy gcp``).

1. pack ``disk.raw`` into a sparse, deterministic ``tar.gz`` (:mod:`.archive`) and hash
   the disk: the image is named after that digest, so the same disk is published once;
2. if the image exists and is READY with the same digest, stop: already published;
3. upload the archive to the bucket, create the image from it, delete the archive
   (also when creating the image failed: nothing is left in the bucket).

Guest OS features, and why each: ``UEFI_COMPATIBLE`` (the image boots only through
UEFI, a UKI at \\EFI\\BOOT\\BOOTX64.EFI; it is also what Shielded VM needs),
``GVNIC`` (the gcp profile puts the gve driver in the initrd, so VMs may use Google's
virtual NIC, which newer machine series require) and ``VIRTIO_SCSI_MULTIQUEUE``
(virtio_scsi is in the initrd; multiqueue needs nothing more). Not set:
``SEV_CAPABLE``/``SEV_SNP_CAPABLE``/``TDX_CAPABLE`` (they only mark images for
Confidential VMs, which aicert does not launch: its evidence is the vTPM's, and a
confidential VM's attestation report is not checked by the verifier),
``SECURE_BOOT`` (a Windows-only marker) and ``MULTI_IP_SUBNET`` (one NIC, one address).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aicert.builder.platforms.base import PublishedImage
from aicert.builder.platforms.gcp.archive import pack_disk
from aicert.builder.platforms.gcp.clients import GcpClients
from aicert.builder.platforms.gcp.errors import CloudConflictError, CloudNotFoundError
from aicert.verifier.errors import InputError
from google.cloud import compute_v1

Say = Callable[[str], None]

LABEL_MANAGED = "aicert-managed"
GUEST_OS_FEATURES = ("UEFI_COMPATIBLE", "GVNIC", "VIRTIO_SCSI_MULTIQUEUE")
DEFAULT_FAMILY = "aicert-os"
_DESCRIPTION = "aicert measured OS image; disk.raw sha256 "


@dataclass(frozen=True)
class GcpPublish:
    """Where to publish one disk image."""

    bucket: str
    disk: Path
    family: str = DEFAULT_FAMILY

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise InputError(f"bucket {self.bucket!r}: give a bucket name, without gs:// or '/'")


def image_name(disk_sha256: str) -> str:
    """The image name for a disk: GCE names are at most 63 characters, [a-z0-9-]."""
    return f"aicert-{disk_sha256[:32]}"


def publish_image(clients: GcpClients, spec: GcpPublish, *, say: Say) -> PublishedImage:
    with tempfile.TemporaryDirectory(prefix="aicert-gcp-") as work:
        say(f"packing {spec.disk} as disk.raw in a sparse tar.gz")
        archive = pack_disk(spec.disk, Path(work))
        name = image_name(archive.disk_sha256)
        existing = _get_image(clients, name)
        if existing is not None:
            published = _already(clients, existing, archive.disk_sha256)
            say(f"image {name} already published (disk {archive.disk_sha256[:12]})")
            return published
        blob_name = f"{name}.tar.gz"
        blob = clients.storage.bucket(spec.bucket).blob(blob_name)
        size = archive.path.stat().st_size
        say(f"uploading {size} bytes to gs://{spec.bucket}/{blob_name}")
        clients.call(
            f"uploading to gs://{spec.bucket}/{blob_name}",
            blob.upload_from_filename,
            str(archive.path),
            content_type="application/gzip",
            retry=None,
        )
        try:
            say(f"creating image {name}")
            image = compute_v1.Image(
                name=name,
                family=spec.family,
                description=_DESCRIPTION + archive.disk_sha256,
                labels={LABEL_MANAGED: "true"},
                architecture="X86_64",
                raw_disk=compute_v1.RawDisk(
                    source=f"https://storage.googleapis.com/{spec.bucket}/{blob_name}"
                ),
                guest_os_features=[compute_v1.GuestOsFeature(type_=f) for f in GUEST_OS_FEATURES],
            )
            operation = clients.call(
                f"creating image {name}",
                clients.images.insert,
                project=clients.project,
                image_resource=image,
            )
            clients.wait(f"creating image {name}", operation)
        finally:
            say(f"deleting gs://{spec.bucket}/{blob_name}")
            _delete_blob(clients, spec.bucket, blob_name)
    return PublishedImage(
        image_path(clients.project, name),
        already_published=False,
        summary=f"uploaded a {size}-byte archive of a {archive.disk_size}-byte disk",
    )


def _already(clients: GcpClients, image: compute_v1.Image, digest: str) -> PublishedImage:
    name = image.name
    delete = f"aicert-build destroy gcp --project {clients.project} --deployment {name}"
    if image.description != _DESCRIPTION + digest:
        raise CloudConflictError(
            f"image {name} exists but was not made from this disk (description"
            f" {image.description!r}); delete it with '{delete}'"
        )
    if image.status != "READY":
        raise CloudConflictError(
            f"image {name} exists in state {image.status}, not READY; wait, or delete it"
            f" with '{delete}' and deploy again"
        )
    return PublishedImage(image_path(clients.project, name), already_published=True)


def image_path(project: str, name: str) -> str:
    return f"projects/{project}/global/images/{name}"


def _get_image(clients: GcpClients, name: str) -> compute_v1.Image | None:
    try:
        image: compute_v1.Image = clients.call(
            f"looking up image {name}", clients.images.get, project=clients.project, image=name
        )
    except CloudNotFoundError:
        return None
    return image


def _delete_blob(clients: GcpClients, bucket: str, blob_name: str) -> None:
    blob = clients.storage.bucket(bucket).blob(blob_name)
    with contextlib.suppress(CloudNotFoundError):
        clients.call(f"deleting gs://{bucket}/{blob_name}", blob.delete, retry=None)
