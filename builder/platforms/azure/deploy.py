"""Publish the aicert disk image to an Azure Compute Gallery, and remove what aicert made.

Deploy, in order (each step reuses what an earlier run left, so a rerun resumes):

1. the resource group must exist; hash ``disk.raw`` and describe its fixed VHD;
2. if the image version exists: same disk and Succeeded → nothing to do; Failed →
   delete it and go on; another disk → conflict;
3. create or reuse the gallery and the image definition (Linux, Gen2, x64,
   specialized, ``SecurityType=TrustedLaunchSupported``); an existing definition
   with other properties is a conflict, found before the long upload;
4. the temporary upload disk: reused when an earlier run finished its upload
   (tag ``aicert:uploaded`` = disk SHA-256), else (re)created with create option
   Upload, Gen2, security type TrustedLaunch; write SAS, parallel page upload of
   the non-zero pages, revoke; a failed upload deletes the disk;
5. create the image version from the disk; if that fails, the version is deleted
   (none is left claiming success) and the uploaded disk kept for a rerun;
6. delete the temporary disk.

Why "specialized": the image has no provisioning agent (no waagent, no cloud-init)
and a read-only dm-verity root. A generalized image makes Azure hand the VM an OS
profile (computer name, admin user, SSH key or password) that a guest agent must
apply; nothing in the image would, and the measured root could not change anyway.
A specialized image is booted as it is; the in-image service only reports "Ready"
to the WireServer.

Every resource is tagged ``aicert:managed=true``, ``aicert:deployment=<gallery>/
<definition>/<version>`` and ``aicert:role``; :func:`destroy` finds them by tag.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aicert.verifier.errors import CloudError, InputError
from aicert.verifier.progress import progress_for
from azure.mgmt.compute import models as cm

from .clients import AzureClients
from .errors import CloudConflictError, CloudNotFoundError, azure_call
from .upload import RetryPolicy, UploadReport, blob_page_writer, upload_vhd
from .vhd import MIB, FixedVhd, fixed_vhd_for, sha256_of

TAG_MANAGED = "aicert:managed"
TAG_DEPLOYMENT = "aicert:deployment"
TAG_ROLE = "aicert:role"
TAG_DISK_SHA256 = "aicert:disk-sha256"
TAG_UPLOADED = "aicert:uploaded"
TAG_SECURE_BOOT_DB = "aicert:secure-boot-db-sha256"

# Azure refuses upload disks under 20 MiB (plus the footer).
AZURE_MIN_DISK = 20 * MIB
UPLOAD_SAS_SECONDS = 24 * 3600
IMAGE_PUBLISHER = "aicert"
IMAGE_OFFER = "aicert-os"
TRUSTED_LAUNCH_FEATURE = ("SecurityType", "TrustedLaunchSupported")

_GALLERY_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,78}[A-Za-z0-9_])?$")
_DEFINITION_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})$")

Say = Callable[[str], None]


@dataclass(frozen=True)
class DeploymentSpec:
    """Where and under which names to publish one disk image."""

    resource_group: str
    location: str
    disk: Path
    image_version: str
    gallery: str = "aicert_gallery"
    image_definition: str = "aicert-os"
    # DER certificates added to the UEFI db of VMs booted from this version, so that a
    # UKI signed by the project boots with Secure Boot on (besides Microsoft's UEFI CA).
    secure_boot_certs: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not _GALLERY_NAME.match(self.gallery):
            raise InputError(
                f"gallery name {self.gallery!r}: use letters, digits, '_' and '.' "
                "(no '-'), at most 80 characters"
            )
        if not _DEFINITION_NAME.match(self.image_definition):
            raise InputError(
                f"image definition name {self.image_definition!r}: use letters, digits, "
                "'-', '_' and '.', at most 80 characters"
            )
        m = _VERSION.match(self.image_version)
        if m is None or any(int(g) > 2**31 - 1 for g in m.groups()):
            raise InputError(
                f"image version {self.image_version!r}: use MAJOR.MINOR.PATCH (e.g. 1.0.0)"
            )

    @property
    def deployment_id(self) -> str:
        return f"{self.gallery}/{self.image_definition}/{self.image_version}"

    @property
    def upload_disk_name(self) -> str:
        version = self.image_version.replace(".", "-")
        # Disk names end with a letter, digit or "_": trim what the 80-character cut leaves.
        return f"aicert-upload-{self.image_definition}-{version}"[:80].rstrip("-.")

    @property
    def secure_boot_db_digest(self) -> str:
        """SHA-256 over the sorted db certificates ("" when there are none)."""
        if not self.secure_boot_certs:
            return ""
        return hashlib.sha256(b"".join(sorted(self.secure_boot_certs))).hexdigest()

    def tags(self, role: str, **extra: str) -> dict[str, str]:
        return {
            TAG_MANAGED: "true",
            TAG_DEPLOYMENT: self.deployment_id,
            TAG_ROLE: role,
            **extra,
        }


@dataclass(frozen=True)
class DeployResult:
    """The published image version and what the deploy did to get there."""

    image_version_id: str
    disk_sha256: str
    already_published: bool
    upload: UploadReport | None


def _get_or_none(getter: Callable[[], Any], action: str) -> Any:
    """The resource ``getter`` returns, or None when Azure says it does not exist."""
    try:
        with azure_call(action):
            return getter()
    except CloudNotFoundError:
        return None


def _text(value: Any) -> str:
    """An SDK enum member's wire value (str() of it would give the member name)."""
    return str(getattr(value, "value", value) or "")


def _state(resource: Any) -> str:
    return _text(getattr(resource, "provisioning_state", None))


class _Deployer:
    def __init__(
        self,
        clients: AzureClients,
        spec: DeploymentSpec,
        *,
        say: Say,
        workers: int,
        retry: RetryPolicy,
        progress_stream: TextIO | None,
    ) -> None:
        self.clients = clients
        self.compute = clients.compute
        self.spec = spec
        self.say = say
        self.workers = workers
        self.retry = retry
        self.progress_stream = progress_stream

    # -- steps -----------------------------------------------------------------------------

    def run(self) -> DeployResult:
        spec = self.spec
        with azure_call(f"reading resource group {spec.resource_group}"):
            self.clients.resources.resource_groups.get(spec.resource_group)
        self.say(f"hashing {spec.disk}")
        digest = sha256_of(spec.disk)
        vhd = fixed_vhd_for(spec.disk, digest_hex=digest, min_disk_size=AZURE_MIN_DISK)
        version = self._existing_version(digest)
        if version is not None:
            self.say(f"image version {spec.deployment_id} already published (disk {digest[:12]})")
            self._delete_disk(spec.upload_disk_name)
            return DeployResult(str(version.id), digest, True, None)
        self._ensure_gallery()
        self._ensure_definition()
        disk, report = self._uploaded_disk(vhd, digest)
        version_id = self._create_version(str(disk.id), digest)
        self._delete_disk(spec.upload_disk_name)
        self.say(f"published {version_id}")
        return DeployResult(version_id, digest, False, report)

    def _existing_version(self, digest: str) -> Any:
        spec = self.spec
        version = _get_or_none(
            lambda: self.compute.gallery_image_versions.get(
                spec.resource_group, spec.gallery, spec.image_definition, spec.image_version
            ),
            f"reading image version {spec.deployment_id}",
        )
        if version is None:
            return None
        recorded = (version.tags or {}).get(TAG_DISK_SHA256)
        if recorded != digest:
            raise CloudConflictError(
                f"image version {spec.deployment_id} already exists for another disk "
                f"(sha256 {str(recorded)[:12]}…, this disk {digest[:12]}…); "
                "publish under a new --image-version"
            )
        recorded_db = (version.tags or {}).get(TAG_SECURE_BOOT_DB, "")
        if recorded_db != spec.secure_boot_db_digest:
            raise CloudConflictError(
                f"image version {spec.deployment_id} was published with other Secure Boot db "
                "certificates; publish under a new --image-version"
            )
        state = _state(version)
        if state == "Succeeded":
            return version
        if state in ("Creating", "Updating"):
            raise CloudConflictError(
                f"image version {spec.deployment_id} is still being created ({state}); "
                "wait for it, then run the deploy again"
            )
        self.say(f"image version {spec.deployment_id} is {state or 'unknown'}: deleting it")
        with azure_call(f"deleting image version {spec.deployment_id}"):
            self.compute.gallery_image_versions.begin_delete(
                spec.resource_group, spec.gallery, spec.image_definition, spec.image_version
            ).result()
        return None

    def _ensure_gallery(self) -> None:
        spec = self.spec
        gallery = _get_or_none(
            lambda: self.compute.galleries.get(spec.resource_group, spec.gallery),
            f"reading gallery {spec.gallery}",
        )
        if gallery is not None:
            self.say(f"using gallery {spec.gallery}")
            return
        self.say(f"creating gallery {spec.gallery}")
        body = cm.Gallery(
            location=spec.location,
            tags=spec.tags("gallery"),
            properties=cm.GalleryProperties(description="aicert measured OS images"),
        )
        with azure_call(f"creating gallery {spec.gallery}"):
            self.compute.galleries.begin_create_or_update(
                spec.resource_group, spec.gallery, body
            ).result()

    def _ensure_definition(self) -> None:
        spec = self.spec
        image = _get_or_none(
            lambda: self.compute.gallery_images.get(
                spec.resource_group, spec.gallery, spec.image_definition
            ),
            f"reading image definition {spec.image_definition}",
        )
        if image is not None:
            _check_definition(image, spec)
            self.say(f"using image definition {spec.image_definition}")
            return
        self.say(f"creating image definition {spec.image_definition}")
        body = cm.GalleryImage(
            location=spec.location,
            tags=spec.tags("image-definition"),
            properties=cm.GalleryImageProperties(
                description="aicert measured OS (UKI, dm-verity root, vTPM attestation)",
                os_type="Linux",
                os_state="Specialized",
                hyper_v_generation="V2",
                architecture="x64",
                identifier=cm.GalleryImageIdentifier(
                    publisher=IMAGE_PUBLISHER, offer=IMAGE_OFFER, sku=spec.image_definition
                ),
                features=[
                    cm.GalleryImageFeature(
                        name=TRUSTED_LAUNCH_FEATURE[0], value=TRUSTED_LAUNCH_FEATURE[1]
                    )
                ],
            ),
        )
        with azure_call(f"creating image definition {spec.image_definition}"):
            self.compute.gallery_images.begin_create_or_update(
                spec.resource_group, spec.gallery, spec.image_definition, body
            ).result()

    def _uploaded_disk(self, vhd: FixedVhd, digest: str) -> tuple[Any, UploadReport | None]:
        spec = self.spec
        name = spec.upload_disk_name
        disk = _get_or_none(
            lambda: self.compute.disks.get(spec.resource_group, name),
            f"reading disk {name}",
        )
        if disk is not None:
            done = (disk.tags or {}).get(TAG_UPLOADED) == digest
            if done and disk.disk_state == "Unattached" and _state(disk) == "Succeeded":
                self.say(f"resuming: disk {name} already holds this image")
                return disk, None
            self.say(f"disk {name} is left from an unfinished upload: deleting it")
            self._delete_disk(name)
        self.say(f"creating upload disk {name} ({vhd.size} bytes)")
        body = cm.Disk(
            location=spec.location,
            tags=spec.tags("upload-disk", **{TAG_DISK_SHA256: digest}),
            sku=cm.DiskSku(name="Standard_LRS"),
            properties=cm.DiskProperties(
                os_type="Linux",
                hyper_v_generation="V2",
                security_profile=cm.DiskSecurityProfile(security_type="TrustedLaunch"),
                creation_data=cm.CreationData(create_option="Upload", upload_size_bytes=vhd.size),
            ),
        )
        with azure_call(f"creating upload disk {name}"):
            disk = self.compute.disks.begin_create_or_update(
                spec.resource_group, name, body
            ).result()
        try:
            report = self._upload(name, vhd)
        except BaseException:
            self.say(f"upload failed: deleting disk {name}")
            self._delete_disk(name)
            raise
        with azure_call(f"tagging disk {name} as uploaded"):
            disk = self.compute.disks.begin_update(
                spec.resource_group,
                name,
                cm.DiskUpdate(tags={**(disk.tags or {}), TAG_UPLOADED: digest}),
            ).result()
        return disk, report

    def _upload(self, name: str, vhd: FixedVhd) -> UploadReport:
        spec = self.spec
        with azure_call(f"granting write access to disk {name}"):
            access = self.compute.disks.begin_grant_access(
                spec.resource_group,
                name,
                cm.GrantAccessData(access="Write", duration_in_seconds=UPLOAD_SAS_SECONDS),
            ).result()
        sas = access.access_sas
        if not sas:
            raise CloudError(f"Azure granted access to disk {name} without an upload URL")
        try:
            report = upload_vhd(
                vhd,
                blob_page_writer(self.clients.page_blob(sas, connections=self.workers)),
                workers=self.workers,
                policy=self.retry,
                progress=progress_for(self.progress_stream, label="upload"),
            )
        finally:
            self._revoke(name)
        self.say(
            f"uploaded {report.bytes_sent} of {report.vhd_size} bytes in "
            f"{report.page_writes} page writes ({report.retries} retries, "
            f"{report.seconds:.1f} s)"
        )
        return report

    def _revoke(self, name: str) -> None:
        with azure_call(f"revoking access to disk {name}"):
            self.compute.disks.begin_revoke_access(self.spec.resource_group, name).result()

    def _delete_disk(self, name: str) -> None:
        spec = self.spec
        disk = _get_or_none(
            lambda: self.compute.disks.get(spec.resource_group, name), f"reading disk {name}"
        )
        if disk is None:
            return
        if disk.disk_state in ("ActiveUpload", "ActiveSAS"):
            self._revoke(name)
        with azure_call(f"deleting disk {name}"):
            self.compute.disks.begin_delete(spec.resource_group, name).result()

    def _create_version(self, disk_id: str, digest: str) -> str:
        spec = self.spec
        self.say(f"creating image version {spec.deployment_id} (replication takes minutes)")
        extra_tags = {TAG_DISK_SHA256: digest}
        if spec.secure_boot_certs:
            extra_tags[TAG_SECURE_BOOT_DB] = spec.secure_boot_db_digest
        body = cm.GalleryImageVersion(
            location=spec.location,
            tags=spec.tags("image-version", **extra_tags),
            properties=cm.GalleryImageVersionProperties(
                publishing_profile=cm.GalleryImageVersionPublishingProfile(
                    target_regions=[
                        cm.TargetRegion(
                            name=spec.location,
                            regional_replica_count=1,
                            storage_account_type="Standard_LRS",
                        )
                    ],
                ),
                storage_profile=cm.GalleryImageVersionStorageProfile(
                    os_disk_image=cm.GalleryOSDiskImage(
                        source=cm.GalleryDiskImageSource(id=disk_id)
                    )
                ),
                security_profile=_secure_boot_profile(spec.secure_boot_certs),
            ),
        )
        try:
            with azure_call(f"creating image version {spec.deployment_id}"):
                version = self.compute.gallery_image_versions.begin_create_or_update(
                    spec.resource_group,
                    spec.gallery,
                    spec.image_definition,
                    spec.image_version,
                    body,
                ).result()
            if _state(version) != "Succeeded":
                raise CloudError(
                    f"image version {spec.deployment_id} ended in state {_state(version)!r}"
                )
        except CloudError as exc:
            self._delete_failed_version()
            raise type(exc)(
                f"{exc.message}; the uploaded disk {spec.upload_disk_name} is kept: run the "
                "deploy again to retry without uploading, or 'aicert-build destroy' to remove it"
            ) from exc
        return str(version.id)

    def _delete_failed_version(self) -> None:
        spec = self.spec
        with azure_call(f"deleting failed image version {spec.deployment_id}"):
            self.compute.gallery_image_versions.begin_delete(
                spec.resource_group, spec.gallery, spec.image_definition, spec.image_version
            ).result()


def _secure_boot_profile(certs: tuple[bytes, ...]) -> cm.ImageVersionSecurityProfile | None:
    """UEFI db of the image version: Microsoft's UEFI CA template plus ``certs``."""
    if not certs:
        return None
    return cm.ImageVersionSecurityProfile(
        uefi_settings=cm.GalleryImageVersionUefiSettings(
            signature_template_names=["MicrosoftUefiCertificateAuthorityTemplate"],
            additional_signatures=cm.UefiKeySignatures(
                db=[
                    cm.UefiKey(
                        type="x509",
                        value=[base64.b64encode(der).decode() for der in sorted(certs)],
                    )
                ]
            ),
        )
    )


def _check_definition(image: Any, spec: DeploymentSpec) -> None:
    """Refuse to publish into an image definition with other fixed properties."""
    features = {f.name: f.value for f in (image.features or [])}
    wanted = {
        "OS type": ("Linux", image.os_type),
        "OS state": ("Specialized", image.os_state),
        "Hyper-V generation": ("V2", image.hyper_v_generation),
        "architecture": ("x64", image.architecture or "x64"),
        "SecurityType feature": (TRUSTED_LAUNCH_FEATURE[1], features.get("SecurityType")),
    }
    wrong = [
        f"{k} is {_text(got)!r}, not {want!r}"
        for k, (want, got) in wanted.items()
        if want != _text(got)
    ]
    if wrong:
        raise CloudConflictError(
            f"image definition {spec.gallery}/{spec.image_definition} exists with other "
            f"properties ({'; '.join(wrong)}); choose another --image-definition"
        )


def deploy_image(
    clients: AzureClients,
    spec: DeploymentSpec,
    *,
    say: Say = lambda _msg: None,
    workers: int = 8,
    retry: RetryPolicy | None = None,
    progress_stream: TextIO | None = None,
) -> DeployResult:
    """Publish ``spec.disk`` as gallery image version ``spec.deployment_id`` (idempotent)."""
    if not spec.disk.is_file():
        raise InputError(f"{spec.disk} does not exist: build the image first (aicert-build image)")
    return _Deployer(
        clients,
        spec,
        say=say,
        workers=workers,
        retry=retry or RetryPolicy(),
        progress_stream=progress_stream,
    ).run()


# -- destroy -------------------------------------------------------------------------------

# Deletion order: users of a resource go before it, children before parents.
_DELETE_ORDER = (
    "microsoft.compute/virtualmachines",
    "microsoft.network/networkinterfaces",
    "microsoft.network/publicipaddresses",
    "microsoft.network/networksecuritygroups",
    "microsoft.network/virtualnetworks",
    "microsoft.compute/disks",
    "microsoft.compute/galleries/images/versions",
    "microsoft.compute/galleries/images",
    "microsoft.compute/galleries",
)


@dataclass(frozen=True)
class ManagedResource:
    """A resource found by its aicert tag."""

    id: str
    type: str
    name: str

    @property
    def names(self) -> list[str]:
        """Resource group, then the names along the id (parent first)."""
        segs = [s for s in self.id.split("/") if s]
        return [segs[3], *segs[7::2]]


def find_managed(
    clients: AzureClients, resource_group: str, *, deployment: str | None = None
) -> list[ManagedResource]:
    """Resources of ``resource_group`` tagged by aicert (of one deployment, if given)."""
    if deployment is None:
        flt = f"tagName eq '{TAG_MANAGED}' and tagValue eq 'true'"
    else:
        if "'" in deployment:
            raise InputError(f"deployment id {deployment!r} cannot contain quotes")
        flt = f"tagName eq '{TAG_DEPLOYMENT}' and tagValue eq '{deployment}'"
    with azure_call(f"listing aicert resources in {resource_group}"):
        found = [
            # ARM lists nested resources under names like "gallery/image/1.0.0".
            ManagedResource(str(r.id), str(r.type), str(r.id).rsplit("/", 1)[-1])
            for r in clients.resources.resources.list_by_resource_group(resource_group, filter=flt)
        ]
    rank = {t: i for i, t in enumerate(_DELETE_ORDER)}
    return sorted(found, key=lambda r: (rank.get(r.type.lower(), -1), r.id))


def destroy(
    clients: AzureClients,
    resource_group: str,
    *,
    deployment: str | None = None,
    say: Say = lambda _msg: None,
) -> list[ManagedResource]:
    """Delete what aicert created in ``resource_group``; returns what was deleted.

    A gallery or image definition that still holds resources aicert did not create is
    kept (and named). Resource types aicert does not create are never touched.
    """
    deleted: list[ManagedResource] = []
    kept: list[str] = []
    for res in find_managed(clients, resource_group, deployment=deployment):
        deleter = _DELETERS.get(res.type.lower())
        if deleter is None:
            kept.append(f"{res.id} (type {res.type} is not one aicert creates)")
            continue
        say(f"deleting {res.type} {res.name}")
        try:
            with azure_call(f"deleting {res.id}"):
                deleter(clients, res)
        except CloudConflictError as exc:
            kept.append(f"{res.id} ({exc.message})")
            continue
        deleted.append(res)
    if kept:
        raise CloudConflictError(
            f"deleted {len(deleted)} resources; kept {len(kept)}: " + "; ".join(kept)
        )
    return deleted


def _delete_disk(clients: AzureClients, res: ManagedResource) -> None:
    rg, name = res.names
    disk = clients.compute.disks.get(rg, name)
    if disk.disk_state in ("ActiveUpload", "ActiveSAS"):
        clients.compute.disks.begin_revoke_access(rg, name).result()
    clients.compute.disks.begin_delete(rg, name).result()


_DELETERS: dict[str, Callable[[AzureClients, ManagedResource], None]] = {
    "microsoft.compute/virtualmachines": lambda c, r: c.compute.virtual_machines.begin_delete(
        *r.names
    ).result(),
    "microsoft.network/networkinterfaces": lambda c, r: c.network.network_interfaces.begin_delete(
        *r.names
    ).result(),
    "microsoft.network/publicipaddresses": lambda c, r: c.network.public_ip_addresses.begin_delete(
        *r.names
    ).result(),
    "microsoft.network/networksecuritygroups": lambda c, r: (
        c.network.network_security_groups.begin_delete(*r.names).result()
    ),
    "microsoft.network/virtualnetworks": lambda c, r: c.network.virtual_networks.begin_delete(
        *r.names
    ).result(),
    "microsoft.compute/disks": _delete_disk,
    "microsoft.compute/galleries/images/versions": lambda c, r: (
        c.compute.gallery_image_versions.begin_delete(*r.names).result()
    ),
    "microsoft.compute/galleries/images": lambda c, r: c.compute.gallery_images.begin_delete(
        *r.names
    ).result(),
    "microsoft.compute/galleries": lambda c, r: c.compute.galleries.begin_delete(*r.names).result(),
}
