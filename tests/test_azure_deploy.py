"""`aicert-build deploy azure` and `destroy` against a local fake of Azure.

The real Azure SDK runs end to end; only its HTTP transport is replaced by
:mod:`azure_fake`, which answers like Resource Manager and the blob page endpoint.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.platforms.azure import vhd
from aicert.builder.platforms.azure.clients import AzureClients, ClientOptions, connect
from aicert.builder.platforms.azure.deploy import (
    TAG_DEPLOYMENT,
    TAG_DISK_SHA256,
    TAG_MANAGED,
    TAG_ROLE,
    TAG_SECURE_BOOT_DB,
    TAG_UPLOADED,
    DeploymentSpec,
    DeployResult,
    deploy_image,
    destroy,
    find_managed,
)
from aicert.builder.platforms.azure.errors import (
    CloudConflictError,
    CloudError,
    CloudLoginError,
    CloudNotFoundError,
    CloudPermissionError,
    CloudQuotaError,
    CloudTransientError,
    CloudUnsupportedError,
)
from aicert.builder.platforms.azure.upload import RetryPolicy
from aicert.builder.platforms.commands import require_profile
from aicert.builder.recipe import RECIPE_FORMAT
from aicert.verifier.errors import InputError
from azure.core.credentials import AccessToken
from azure.identity import ChainedTokenCredential, EnvironmentCredential
from azure.mgmt.compute import models as cm
from azure_fake import FakeAzure, FakeCredential
from azure_fixtures import MIB, RG, cli_context, sparse_disk
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

NO_WAIT = RetryPolicy(attempts=4, first_delay=0.0)
DISKS = "Microsoft.Compute/disks"
VERSIONS = "Microsoft.Compute/galleries/images/versions"
IMAGES = "Microsoft.Compute/galleries/images"
GALLERIES = "Microsoft.Compute/galleries"


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 48 MiB sparse image with some boot-like data scattered over it."""
    return sparse_disk(
        tmp_path / "disk.raw",
        48 * MIB,
        {0: os.urandom(64 * 1024), 5 * MIB: os.urandom(9 * MIB), 47 * MIB: os.urandom(4096)},
    )


def _image_dir(disk: Path, profile: str = "azure") -> str:
    """The directory of ``disk``, with the recipe.json of a ``profile`` build next to it."""
    recipe = {"format": RECIPE_FORMAT, "inputs": {"profile": profile}}
    (disk.parent / "recipe.json").write_text(json.dumps(recipe))
    return str(disk.parent)


def _spec(disk: Path, version: str = "1.0.0") -> DeploymentSpec:
    return DeploymentSpec(
        resource_group=RG, location="westeurope", disk=disk, image_version=version
    )


def _deploy(
    clients: AzureClients, disk: Path, version: str = "1.0.0", *, workers: int = 8
) -> DeployResult:
    return deploy_image(clients, _spec(disk, version), retry=NO_WAIT, workers=workers)


def _leave_active_upload(clients: AzureClients, spec: DeploymentSpec) -> None:
    """The state a deploy killed mid-upload leaves: disk created, SAS granted, not revoked."""
    clients.compute.disks.begin_create_or_update(
        RG,
        spec.upload_disk_name,
        cm.Disk(
            location="westeurope",
            tags=spec.tags("upload-disk"),
            creation_data=cm.CreationData(create_option="Upload", upload_size_bytes=20 * MIB + 512),
        ),
    ).result()
    clients.compute.disks.begin_grant_access(
        RG, spec.upload_disk_name, cm.GrantAccessData(access="Write", duration_in_seconds=60)
    ).result()


def _vhd_bytes_sha256(disk: Path, tmp: Path) -> str:
    image = vhd.fixed_vhd_for(
        disk, digest_hex=vhd.sha256_of(disk), min_disk_size=20 * MIB, timestamp=None
    )
    out = tmp / "expected.vhd"
    vhd.write_vhd(image, out)
    return vhd.sha256_of(out)


# ---- the happy path -------------------------------------------------------------------------


def test_deploy_creates_a_trusted_launch_image_version(
    fake: FakeAzure, clients: AzureClients, small_disk: Path, tmp_path: Path
) -> None:
    result = _deploy(clients, small_disk)
    digest = hashlib.sha256(small_disk.read_bytes()).hexdigest()
    assert result.disk_sha256 == digest
    assert not result.already_published
    deployment = "aicert_gallery/aicert-os/1.0.0"

    # The upload disk: create option Upload, Gen2, Trusted Launch, tagged; deleted at the end.
    disk_id = next(k for k in fake.put_bodies if "/disks/" in k)
    disk_put = fake.put_bodies[disk_id][0]
    props = disk_put["properties"]
    image = vhd.fixed_vhd_for(small_disk, digest_hex=digest, min_disk_size=20 * MIB)
    assert props["creationData"] == {"createOption": "Upload", "uploadSizeBytes": image.size}
    assert (props["creationData"]["uploadSizeBytes"] - 512) % MIB == 0
    assert props["hyperVGeneration"] == "V2"
    assert props["osType"] == "Linux"
    assert props["securityProfile"] == {"securityType": "TrustedLaunch"}
    assert disk_put["tags"][TAG_MANAGED] == "true"
    assert disk_put["tags"][TAG_DEPLOYMENT] == deployment
    assert disk_put["tags"][TAG_ROLE] == "upload-disk"
    assert fake.of_type(DISKS) == []

    # SAS granted, revoked, and the blob holds exactly the VHD.
    assert fake.count("POST", "/beginGetAccess") == 1
    assert fake.count("POST", "/endGetAccess") == 1
    blob_file = tmp_path / "blob.vhd"
    fake.blob_of(disk_id).write_to(blob_file)
    assert vhd.sha256_of(blob_file) == _vhd_bytes_sha256(small_disk, tmp_path)
    assert vhd.read_footer(blob_file).unique_id == vhd.unique_id_for(digest)

    # Gallery, definition and version, with their fixed properties and tags.
    (gallery,) = fake.of_type(GALLERIES)
    assert gallery["tags"][TAG_ROLE] == "gallery"
    (definition,) = fake.of_type(IMAGES)
    dprops = definition["properties"]
    assert dprops["osType"] == "Linux"
    assert dprops["osState"] == "Specialized"
    assert dprops["hyperVGeneration"] == "V2"
    assert dprops["architecture"] == "x64"
    assert dprops["features"] == [{"name": "SecurityType", "value": "TrustedLaunchSupported"}]
    assert dprops["identifier"] == {"publisher": "aicert", "offer": "aicert-os", "sku": "aicert-os"}
    (version,) = fake.of_type(VERSIONS)
    assert version["id"] == result.image_version_id
    assert version["properties"]["provisioningState"] == "Succeeded"
    assert version["properties"]["storageProfile"]["osDiskImage"]["source"]["id"].lower() == (
        disk_id
    )
    assert version["tags"][TAG_DISK_SHA256] == digest
    for res in (gallery, definition, version):
        assert res["tags"][TAG_MANAGED] == "true"
        assert res["tags"][TAG_DEPLOYMENT] == deployment

    # The long-running operations were polled (each created resource polled once InProgress).
    assert fake.count("GET", "/operations/") >= 6


def test_sparse_1_gib_image_uploads_only_its_non_zero_pages(
    fake: FakeAzure, clients: AzureClients, tmp_path: Path
) -> None:
    disk = sparse_disk(
        tmp_path / "disk.raw",
        1 << 30,
        {0: os.urandom(1000), 300 * MIB: os.urandom(3 * MIB), (1 << 30) - 4096: b"end"},
    )
    fake.page_latency = 0.01
    result = _deploy(clients, disk)
    assert result.upload is not None
    # 1000 B → one 4 KiB block, 3 MiB, the last block, and the 512-byte footer.
    assert result.upload.bytes_sent == 4096 + 3 * MIB + 4096 + 512
    assert result.upload.vhd_size == (1 << 30) + 512
    (blob,) = fake.retired_blobs.values()
    assert blob.bytes_written == result.upload.bytes_sent
    blob_file = tmp_path / "blob.vhd"
    blob.write_to(blob_file)
    assert vhd.sha256_of(blob_file) == _vhd_bytes_sha256(disk, tmp_path)


def test_page_writes_run_in_parallel(
    fake: FakeAzure, clients: AzureClients, tmp_path: Path
) -> None:
    disk = sparse_disk(tmp_path / "disk.raw", 64 * MIB, {MIB: os.urandom(40 * MIB)})
    fake.page_latency = 0.02
    result = _deploy(clients, disk, workers=8)
    assert result.upload is not None
    assert fake.max_page_in_flight > 1
    assert result.upload.page_writes == 11  # 10 x 4 MiB + footer


# ---- idempotence and resumption -------------------------------------------------------------


def test_rerun_with_the_same_version_reuses_everything(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    _deploy(clients, small_disk)
    puts, pages = fake.count("PUT", "management"), fake.page_write_count
    again = _deploy(clients, small_disk)
    assert again.already_published
    assert again.upload is None
    assert fake.count("PUT", "management") == puts
    assert fake.page_write_count == pages


def test_second_version_reuses_gallery_and_definition(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    _deploy(clients, small_disk, "1.0.0")
    _deploy(clients, small_disk, "1.0.1")
    assert len(fake.of_type(VERSIONS)) == 2
    assert len(fake.put_bodies[fake.of_type(GALLERIES)[0]["id"].lower()]) == 1


def test_same_version_for_another_disk_is_a_conflict(
    fake: FakeAzure, clients: AzureClients, small_disk: Path, tmp_path: Path
) -> None:
    _deploy(clients, small_disk)
    other = sparse_disk(tmp_path / "other.raw", 30 * MIB, {0: b"different"})
    with pytest.raises(CloudConflictError, match="new --image-version"):
        _deploy(clients, other)


def test_existing_definition_with_other_properties_stops_before_upload(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    base = f"/subscriptions/{fake.subscription}/resourceGroups/{RG}/providers/Microsoft.Compute"
    fake.put_resource(f"{base}/galleries/aicert_gallery", {"location": "westeurope"})
    fake.put_resource(
        f"{base}/galleries/aicert_gallery/images/aicert-os",
        {
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "hyperVGeneration": "V2",
                "identifier": {"publisher": "x", "offer": "y", "sku": "z"},
            },
        },
    )
    with pytest.raises(CloudConflictError, match="OS state is 'Generalized'"):
        _deploy(clients, small_disk)
    assert fake.count("PUT", "/disks/") == 0


def test_transient_failures_are_retried(
    fake: FakeAzure, clients: AzureClients, small_disk: Path, tmp_path: Path
) -> None:
    fake.inject("PUT", r"comp=page", 503, "ServerBusy", "try later", times=3)
    fake.inject("PUT", r"comp=page", 500, "InternalError", "oops", times=1)
    fake.inject(
        "PUT", r"/disks/", 429, "TooManyRequests", "throttled", headers={"Retry-After": "0"}
    )
    # Parallel writers may all land on one page: give it more attempts than faults.
    spec = _spec(small_disk)
    result = deploy_image(clients, spec, retry=RetryPolicy(attempts=6, first_delay=0.0))
    assert result.upload is not None
    assert result.upload.retries == 4
    (blob,) = fake.retired_blobs.values()
    blob_file = tmp_path / "blob.vhd"
    blob.write_to(blob_file)
    assert vhd.sha256_of(blob_file) == _vhd_bytes_sha256(small_disk, tmp_path)
    assert fake.count("PUT", "/disks/") == 2  # the SDK retried the throttled create


def test_permanent_upload_failure_deletes_the_disk_and_leaves_no_version(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    fake.inject("PUT", r"comp=page", 403, "AuthenticationFailed", "SAS expired", times=None)
    with pytest.raises(CloudPermissionError, match="uploading the disk image"):
        _deploy(clients, small_disk)
    assert fake.of_type(DISKS) == []
    assert fake.of_type(VERSIONS) == []
    assert fake.count("POST", "/endGetAccess") == 1  # revoked before the delete
    # Once the fault is gone, the same command completes.
    fake.faults.clear()
    assert not _deploy(clients, small_disk).already_published
    (version,) = fake.of_type(VERSIONS)
    assert version["properties"]["provisioningState"] == "Succeeded"


def test_upload_that_stays_throttled_gives_up_and_cleans_up(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    fake.inject("PUT", r"comp=page", 503, "ServerBusy", "busy", times=None)
    with pytest.raises(CloudTransientError, match="HTTP 503"):
        _deploy(clients, small_disk)
    assert fake.of_type(DISKS) == []
    assert fake.of_type(VERSIONS) == []


def test_failed_image_version_is_deleted_and_the_rerun_resumes_without_upload(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    fake.fail_operations_of(VERSIONS, "InternalOperationError", "replication failed")
    with pytest.raises(CloudError, match=r"replication failed.*disk aicert-upload"):
        _deploy(clients, small_disk)
    assert fake.of_type(VERSIONS) == []
    (disk,) = fake.of_type(DISKS)
    assert disk["tags"][TAG_UPLOADED] == hashlib.sha256(small_disk.read_bytes()).hexdigest()
    assert disk["properties"]["diskState"] == "Unattached"
    pages = fake.page_write_count

    fake.failing_operations.clear()
    result = _deploy(clients, small_disk)
    assert result.upload is None  # resumed: nothing uploaded again
    assert fake.page_write_count == pages
    assert fake.of_type(DISKS) == []
    (version,) = fake.of_type(VERSIONS)
    assert version["properties"]["provisioningState"] == "Succeeded"


def test_interrupted_upload_is_restarted(
    fake: FakeAzure, clients: AzureClients, small_disk: Path, tmp_path: Path
) -> None:
    """A deploy killed mid-upload leaves a disk in ActiveUpload; the rerun starts it over."""
    _leave_active_upload(clients, _spec(small_disk))
    result = _deploy(clients, small_disk)
    assert result.upload is not None
    assert fake.of_type(DISKS) == []
    # The abandoned disk was revoked and deleted, then a new one created and filled.
    assert fake.count("POST", "/endGetAccess") == 2
    assert fake.count("DELETE", "/disks/") == 2
    blob_file = tmp_path / "blob.vhd"
    (blob,) = [b for b in fake.retired_blobs.values() if b.writes]
    blob.write_to(blob_file)
    assert vhd.sha256_of(blob_file) == _vhd_bytes_sha256(small_disk, tmp_path)


# ---- destroy --------------------------------------------------------------------------------


def test_destroy_removes_tagged_resources_only(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    base = f"/subscriptions/{fake.subscription}/resourceGroups/{RG}/providers/Microsoft.Compute"
    foreign = f"{base}/disks/someone-elses-disk"
    fake.put_resource(
        foreign,
        {"location": "westeurope", "properties": {"creationData": {"createOption": "Empty"}}},
    )
    _deploy(clients, small_disk, "1.0.0")
    # A half-done second deploy: its version failed, its uploaded disk is kept.
    fake.fail_operations_of(VERSIONS, "InternalOperationError", "replication failed")
    with pytest.raises(CloudError):
        _deploy(clients, small_disk, "1.0.1")
    fake.failing_operations.clear()
    # Gallery, definition, version 1.0.0 and the kept disk of 1.0.1, users first.
    assert len(find_managed(clients, RG)) == 4
    assert find_managed(clients, RG)[0].type == DISKS

    deleted = destroy(clients, RG)
    assert {r.type for r in deleted} == {DISKS, VERSIONS, IMAGES, GALLERIES}
    assert list(fake.resources) == [foreign.lower()]


def test_destroy_one_deployment_keeps_the_shared_gallery(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    _deploy(clients, small_disk, "1.0.0")
    _deploy(clients, small_disk, "1.0.1")
    deleted = destroy(clients, RG, deployment="aicert_gallery/aicert-os/1.0.1")
    assert [r.name for r in deleted] == ["1.0.1"]
    assert len(fake.of_type(VERSIONS)) == 1
    assert len(fake.of_type(GALLERIES)) == 1


def test_destroy_keeps_a_gallery_holding_foreign_images(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    _deploy(clients, small_disk)
    gallery_id = fake.of_type(GALLERIES)[0]["id"]
    fake.put_resource(
        f"{gallery_id}/images/not-ours",
        {"location": "westeurope", "properties": {"osType": "Linux"}},
    )
    with pytest.raises(CloudConflictError, match=r"kept 1.*aicert_gallery"):
        destroy(clients, RG)
    assert len(fake.of_type(GALLERIES)) == 1
    assert fake.of_type(VERSIONS) == []


def test_destroy_revokes_an_active_upload_first(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    _leave_active_upload(clients, _spec(small_disk))
    assert len(destroy(clients, RG)) == 1
    assert fake.count("POST", "/endGetAccess") == 1
    assert fake.of_type(DISKS) == []


# ---- errors ---------------------------------------------------------------------------------


def test_not_logged_in_fails_fast_offline(
    fake: FakeAzure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real DefaultAzureCredential chain with no credentials anywhere: one clear line.

    Its only network attempt (the managed identity endpoint probe) goes to the fake
    transport, which refuses it, so nothing leaves the machine.
    """
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    started = time.monotonic()
    with pytest.raises(CloudLoginError, match="not logged in to Azure") as info:
        connect(fake.subscription, options=ClientOptions(transport=fake.transport()))
    assert time.monotonic() - started < 5
    assert "az login" in info.value.message
    assert "\n" not in info.value.message
    assert fake.refused, "the managed identity probe should have gone to the fake transport"
    assert all("169.254.169.254" in url for url in fake.refused)


@pytest.mark.parametrize(
    ("status", "code", "message", "error", "match"),
    [
        (
            403,
            "AuthorizationFailed",
            "The client 'x' does not have authorization to perform "
            "action 'Microsoft.Compute/galleries/write'",
            CloudPermissionError,
            "permission denied",
        ),
        (
            409,
            "OperationNotAllowed",
            "Operation could not be completed as it results in "
            "exceeding approved Total Regional Cores quota",
            CloudQuotaError,
            "quota exceeded",
        ),
        (
            400,
            "BadRequest",
            "The security type TrustedLaunch is not supported in this region",
            CloudUnsupportedError,
            "not supported",
        ),
        (409, "Conflict", "Another operation is in progress", CloudConflictError, "conflict"),
    ],
)
def test_service_errors_become_one_line_errors(
    fake: FakeAzure,
    clients: AzureClients,
    small_disk: Path,
    status: int,
    code: str,
    message: str,
    error: type[CloudError],
    match: str,
) -> None:
    fake.inject("PUT", r"/galleries/aicert_gallery\?", status, code, message)
    with pytest.raises(error, match=match) as info:
        _deploy(clients, small_disk)
    assert code in info.value.message
    assert "\n" not in info.value.message


def test_missing_resource_group(fake: FakeAzure, clients: AzureClients, small_disk: Path) -> None:
    spec = DeploymentSpec(
        resource_group="nope", location="westeurope", disk=small_disk, image_version="1.0.0"
    )
    with pytest.raises(CloudNotFoundError, match="az group create"):
        deploy_image(clients, spec)


@pytest.mark.parametrize(
    ("field", "value"),
    [("gallery", "has-dash"), ("image_version", "1.0"), ("image_definition", "-x")],
)
def test_bad_names_are_input_errors(small_disk: Path, field: str, value: str) -> None:
    kwargs = {"resource_group": RG, "location": "l", "disk": small_disk, "image_version": "1.0.0"}
    kwargs[field] = value
    with pytest.raises(InputError):
        DeploymentSpec(**kwargs)  # type: ignore[arg-type]


# ---- command line ---------------------------------------------------------------------------


def test_cli_deploy_and_destroy(fake: FakeAzure, small_disk: Path) -> None:
    obj = cli_context(fake)
    common = ["--subscription", fake.subscription, "--resource-group", RG]
    runner = CliRunner()
    out = runner.invoke(
        build_main,
        [
            "deploy",
            "azure",
            *common,
            "--location",
            "westeurope",
            "--image",
            _image_dir(small_disk),
            "--image-version",
            "2.0.0",
        ],
        obj=obj,
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().endswith("/versions/2.0.0")
    again = runner.invoke(
        build_main,
        [
            "deploy",
            "azure",
            *common,
            "--location",
            "westeurope",
            "--image",
            _image_dir(small_disk),
            "--image-version",
            "2.0.0",
        ],
        obj=obj,
    )
    assert again.exit_code == 0
    assert "already published" in again.stderr
    gone = runner.invoke(build_main, ["destroy", "azure", *common, "--yes"], obj=obj)
    assert gone.exit_code == 0, gone.output
    assert fake.resources == {}


def test_cli_errors_are_one_line_with_the_cloud_exit_code(
    fake: FakeAzure, small_disk: Path
) -> None:
    obj = cli_context(fake)
    out = CliRunner().invoke(
        build_main,
        [
            "deploy",
            "azure",
            "--subscription",
            fake.subscription,
            "--resource-group",
            "missing",
            "--location",
            "westeurope",
            "--image",
            _image_dir(small_disk),
        ],
        obj=obj,
    )
    assert out.exit_code == 6
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("aicert-build: error: Resource group 'missing' could not be found")


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_login_failure_is_one_line_unless_verbose(
    fake: FakeAzure,
    small_disk: Path,
    verbose: bool,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real azure-identity credential with nothing to log in with: it logs a many-line
    # warning naming what it tried, then raises.
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    obj = {**cli_context(fake), "azure_credential": ChainedTokenCredential(EnvironmentCredential())}
    args = ["deploy", "azure", "--subscription", fake.subscription, "--resource-group", RG,
            "--location", "westeurope", "--image", _image_dir(small_disk)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        build_main.main(["-v", *args] if verbose else args, "aicert-build", obj=obj)
    assert exit_info.value.code == 6
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("aicert-build: error: not logged in to Azure")
    azure_warnings = [r for r in caplog.records if r.name.startswith("azure.identity")]
    assert bool(azure_warnings) == verbose


@pytest.mark.parametrize("profile", ["qemu", "gpu"])
def test_cli_refuses_an_image_built_for_another_platform(
    fake: FakeAzure, small_disk: Path, profile: str
) -> None:
    args = ["deploy", "azure", "--subscription", fake.subscription, "--resource-group", RG,
            "--location", "westeurope", "--image", _image_dir(small_disk, profile)]  # fmt: skip
    out = CliRunner().invoke(build_main, args, obj=cli_context(fake))
    assert out.exit_code == 3
    (line,) = out.stderr.strip().splitlines()
    assert f"a '{profile}' image; deploy azure publishes only images built with" in line
    assert fake.resources == {}


@pytest.mark.parametrize(("state", "outcome"), [("Creating", "conflict"), ("Failed", "redone")])
def test_existing_unfinished_version(
    fake: FakeAzure, clients: AzureClients, small_disk: Path, state: str, outcome: str
) -> None:
    _deploy(clients, small_disk)
    (version,) = fake.of_type(VERSIONS)
    version["properties"]["provisioningState"] = state
    if outcome == "conflict":
        with pytest.raises(CloudConflictError, match="still being created"):
            _deploy(clients, small_disk)
        return
    result = _deploy(clients, small_disk)
    assert not result.already_published
    (version,) = fake.of_type(VERSIONS)
    assert version["properties"]["provisioningState"] == "Succeeded"
    assert fake.count("DELETE", "/versions/1.0.0") == 1


def test_rejected_token_is_a_login_error(fake: FakeAzure, small_disk: Path) -> None:
    class WrongToken(FakeCredential):
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            return AccessToken("expired", int(time.time()) + 3600)

    options = ClientOptions(transport=fake.transport(), polling_interval=0)
    clients = AzureClients(fake.subscription, WrongToken(), options)
    with pytest.raises(CloudLoginError, match=r"did not accept the credentials.*HTTP 401"):
        _deploy(clients, small_disk)


def _self_signed(common_name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


def test_secure_boot_db_certificates_reach_the_image_version(
    fake: FakeAzure, clients: AzureClients, small_disk: Path
) -> None:
    der = _self_signed("aicert UKI signing").public_bytes(Encoding.DER)
    spec = dataclasses.replace(_spec(small_disk), secure_boot_certs=(der,))
    deploy_image(clients, spec, retry=NO_WAIT)
    (version,) = fake.of_type(VERSIONS)
    uefi = version["properties"]["securityProfile"]["uefiSettings"]
    assert uefi["signatureTemplateNames"] == ["MicrosoftUefiCertificateAuthorityTemplate"]
    assert uefi["additionalSignatures"]["db"] == [
        {"type": "x509", "value": [base64.b64encode(der).decode()]}
    ]
    assert version["tags"][TAG_SECURE_BOOT_DB] == hashlib.sha256(der).hexdigest()
    # Same version, same disk, other certificates: refused.
    other = _self_signed("someone else").public_bytes(Encoding.DER)
    with pytest.raises(CloudConflictError, match="Secure Boot db"):
        deploy_image(clients, dataclasses.replace(spec, secure_boot_certs=(other,)))
    assert deploy_image(clients, spec).already_published


def test_cli_reads_the_secure_boot_certificate(
    fake: FakeAzure, small_disk: Path, tmp_path: Path
) -> None:
    cert = _self_signed("aicert UKI signing")
    pem = tmp_path / "db.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    obj = cli_context(fake)
    args = ["deploy", "azure", "--subscription", fake.subscription, "--resource-group", RG,
            "--location", "westeurope", "--image", _image_dir(small_disk)]  # fmt: skip
    bad = CliRunner().invoke(build_main, [*args, "--secure-boot-cert", str(bogus)], obj=obj)
    assert bad.exit_code == 3
    assert "not an X.509 certificate" in bad.stderr
    good = CliRunner().invoke(build_main, [*args, "--secure-boot-cert", str(pem)], obj=obj)
    assert good.exit_code == 0, good.output
    (version,) = fake.of_type(VERSIONS)
    db = version["properties"]["securityProfile"]["uefiSettings"]["additionalSignatures"]["db"]
    assert db[0]["value"] == [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]


@pytest.mark.parametrize("profile", ["azure", "azure+gpu"])
def test_azure_images_with_or_without_the_gpu_add_on_may_be_published(
    small_disk: Path, profile: str
) -> None:
    require_profile(
        Path(_image_dir(small_disk, profile)), "azure", "it would not boot as Azure expects"
    )
