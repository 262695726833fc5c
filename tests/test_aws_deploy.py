"""deploy aws: the real boto3 against a moto server on 127.0.0.1 (tests/aws_fake.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.platforms.aws.clients import AwsClients
from aicert.builder.platforms.aws.deploy import (
    TAG_DEPLOYMENT,
    TAG_DISK_SHA256,
    AwsDeploySpec,
    deploy_image,
    sha256_of,
)
from aicert.builder.platforms.aws.errors import (
    CloudConflictError,
    CloudPermissionError,
    CloudTransientError,
)
from aicert.builder.platforms.aws.platform import AwsPlatform, AwsScope
from aicert.builder.platforms.aws.snapshot import BLOCK
from aicert.builder.recipe import RECIPE_FORMAT
from aicert.verifier.errors import InputError
from aws_fake import REGION, MotoAws, inject, owned
from aws_fixtures import aws_disk
from click.testing import CliRunner

NAME = "aicert-os-test"
UEFI_DATA = base64.b64encode(b"AMZNUEFI" + bytes(range(64))).decode()


def _spec(tmp_path: Path, **kw: object) -> AwsDeploySpec:
    disk = kw.pop("disk", None) or aws_disk(tmp_path / "disk.raw")
    return AwsDeploySpec(disk=disk, image_name=NAME, **kw)  # type: ignore[arg-type]


def _snapshot_bytes(aws: AwsClients, snapshot_id: str, size: int) -> bytes:
    """The snapshot's content as EBS serves it back (unwritten blocks read as zeros)."""
    listed = aws.ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    data = bytearray(-(-size // BLOCK) * BLOCK)
    for block in listed["Blocks"]:
        got = aws.ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
        )
        start = block["BlockIndex"] * BLOCK
        data[start : start + BLOCK] = got["BlockData"].read()
    return bytes(data[:size])


def test_deploy_uploads_the_disk_and_registers_a_uefi_nitrotpm_ami(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    said: list[str] = []
    published = AwsPlatform(aws).publish(spec, say=said.append)

    assert not published.already_published
    assert published.image_id.startswith("ami-")
    assert (
        published.summary
        == f"sent {3 * BLOCK} bytes of a {spec.disk.stat().st_size}-byte disk (3 blocks of 512 KiB)"
    )
    (params,) = moto.registered
    assert params["BootMode"] == "uefi"
    assert params["TpmSupport"] == "v2.0"
    assert params["ImdsSupport"] == "v2.0"
    assert params["Architecture"] == "x86_64"
    assert params["UefiData"] is None
    (mapping,) = params["BlockDeviceMappings"]
    assert mapping["DeviceName"] == params["RootDeviceName"] == "/dev/xvda"
    snapshot_id = mapping["Ebs"]["SnapshotId"]
    (snap,) = aws.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
    assert tags[TAG_DISK_SHA256] == sha256_of(spec.disk)
    assert tags[TAG_DEPLOYMENT] == NAME
    assert snap["VolumeSize"] == 1
    assert _snapshot_bytes(aws, snapshot_id, spec.disk.stat().st_size) == spec.disk.read_bytes()
    (image,) = aws.ec2.describe_images(ImageIds=[published.image_id])["Images"]
    assert (image["BootMode"], image["TpmSupport"]) == ("uefi", "v2.0")


def test_a_second_deploy_of_the_same_disk_does_nothing(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    first = deploy_image(aws, spec, say=lambda _l: None)
    before = owned(aws)
    said: list[str] = []
    again = deploy_image(aws, spec, say=said.append)
    assert again.already_published
    assert again.image_id == first.image_id
    assert len(moto.registered) == 1
    assert owned(aws) == before
    assert any("already published" in line for line in said)


def test_another_disk_under_the_same_name_is_a_conflict_found_before_the_upload(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    deploy_image(aws, _spec(tmp_path), say=lambda _l: None)
    before = owned(aws)
    other = aws_disk(tmp_path / "other.raw", seed=b"other")
    with pytest.raises(CloudConflictError, match=r"another disk.*new --image-name"):
        deploy_image(aws, _spec(tmp_path, disk=other), say=lambda _l: None)
    assert owned(aws) == before


def test_uefi_data_for_secure_boot_is_registered_and_part_of_the_identity(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    deploy_image(aws, _spec(tmp_path, uefi_data=UEFI_DATA), say=lambda _l: None)
    (params,) = moto.registered
    assert params["UefiData"] == UEFI_DATA
    with pytest.raises(CloudConflictError, match="other UEFI Secure Boot data"):
        deploy_image(aws, _spec(tmp_path), say=lambda _l: None)


@pytest.mark.parametrize(
    ("blob", "error"),
    [
        ("bm90IGEgdmFyaWFibGUgc3RvcmU=", "no AMZNUEFI header"),
        ("not base64 at all!", "no AMZNUEFI header"),
        (base64.b64encode(b"AMZNUEFI" + bytes(70000)).decode(), "at most"),
    ],
)
def test_bad_uefi_data_is_refused_before_anything_is_sent(
    moto: MotoAws, aws: AwsClients, tmp_path: Path, blob: str, error: str
) -> None:
    with pytest.raises(InputError, match=error):
        _spec(tmp_path, uefi_data=blob)


def test_throttled_blocks_are_retried_with_backoff(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    throttle = inject(aws, "ebs", "PutSnapshotBlock", 429, "ThrottlingException", times=3)
    result = deploy_image(aws, _spec(tmp_path), say=lambda _l: None)
    assert throttle.hits == 3
    assert result.upload is not None
    assert result.upload.blocks_written == 3


def test_throttling_that_does_not_stop_gives_one_line_and_leaves_no_snapshot(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    before = owned(aws)
    throttle = inject(aws, "ebs", "PutSnapshotBlock", 429, "ThrottlingException", times=None)
    with pytest.raises(CloudTransientError, match=r"kept throttling.*run the command again") as err:
        deploy_image(aws, _spec(tmp_path), say=lambda _l: None)
    assert "\n" not in str(err.value)
    assert throttle.hits >= aws.retry.attempts
    assert owned(aws) == before
    assert moto.registered == []


def test_a_refused_registration_keeps_the_snapshot_for_the_rerun(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    inject(aws, "ec2", "RegisterImage", 403, "UnauthorizedOperation")
    said: list[str] = []
    with pytest.raises(CloudPermissionError, match=r"permission denied.*docs/aws.md"):
        deploy_image(aws, _spec(tmp_path), say=said.append)
    (snapshot,) = owned(aws)["snapshots"]
    said.clear()
    result = deploy_image(aws, _spec(tmp_path), say=said.append)
    assert result.upload is None
    assert f"resuming: snapshot {snapshot} already holds this disk" in said
    assert moto.registered[-1]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot


def test_destroy_deletes_the_ami_and_its_snapshot(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    before = owned(aws)
    published = AwsPlatform(aws).publish(_spec(tmp_path), say=lambda _l: None)
    deleted = AwsPlatform(aws).destroy(AwsScope(NAME), say=lambda _l: None)
    assert published.image_id in deleted
    assert owned(aws) == before


# -- the command line ----------------------------------------------------------------------


def _image_dir(tmp_path: Path, profile: str = "aws") -> Path:
    image = tmp_path / "image"
    image.mkdir()
    aws_disk(image / "disk.raw")
    (image / "recipe.json").write_text(
        json.dumps({"format": RECIPE_FORMAT, "inputs": {"profile": profile}})
    )
    return image


def _deploy(moto: MotoAws, *args: str, **options: object) -> object:
    return CliRunner().invoke(
        build_main,
        ["deploy", "aws", "--region", REGION, *args],
        obj={"aws_options": moto.options(**options)},
    )


def test_the_command_prints_the_ami_id(moto: MotoAws, aws: AwsClients, tmp_path: Path) -> None:
    image = _image_dir(tmp_path)
    result = _deploy(moto, "--image", str(image), "--image-name", NAME)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    ami = result.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert owned(aws)["images"] == {ami}
    again = _deploy(moto, "--image", str(image), "--image-name", NAME)
    assert again.stdout.strip().splitlines()[-1] == ami  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("make", "args", "code", "error"),
    [
        (lambda p: _image_dir(p, "azure"), (), 3, "deploy aws publishes only"),
        (lambda p: p / "missing", (), 3, "recipe.json"),
        (_image_dir, ("--image-name", "x"), 3, "AMI name 'x'"),
        (_image_dir, ("--uefi-data", "/nonexistent/uefi.bin"), 3, "uefi.bin"),
    ],
)
def test_bad_input_gets_one_line_and_exit_3(
    moto: MotoAws,
    aws: AwsClients,
    tmp_path: Path,
    make: object,
    args: tuple[str, ...],
    code: int,
    error: str,
) -> None:
    image = make(tmp_path)  # type: ignore[operator]
    result = _deploy(moto, "--image", str(image), *args)
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    (line,) = result.stderr.strip().splitlines()[-1:]  # type: ignore[attr-defined]
    assert error in line
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert owned(aws)["images"] == set()


def test_missing_credentials_exit_6_with_one_line(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    image = _image_dir(tmp_path)
    result = CliRunner().invoke(
        build_main,
        ["deploy", "aws", "--region", REGION, "--image", str(image)],
        obj={"aws_options": moto.options(attempts=1)},
        env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert result.exit_code == 6, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "no AWS credentials" in line
    assert owned(aws)["images"] == set()


def test_the_command_sends_a_uefi_data_file_as_it_is(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    uefi = tmp_path / "uefi.bin"
    uefi.write_text("\n".join(UEFI_DATA[i : i + 40] for i in range(0, len(UEFI_DATA), 40)) + "\n")
    result = _deploy(moto, "--image", str(_image_dir(tmp_path)), "--uefi-data", str(uefi))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert moto.registered[-1]["UefiData"] == UEFI_DATA


def test_destroy_aws_lists_asks_and_deletes(moto: MotoAws, aws: AwsClients, tmp_path: Path) -> None:
    deploy_image(aws, _spec(tmp_path), say=lambda _l: None)
    obj = {"aws_options": moto.options()}
    args = ["destroy", "aws", "--region", REGION]
    refused = CliRunner().invoke(build_main, args, obj=obj, input="n\n")
    assert refused.exit_code == 5
    assert "  image  ami-" in refused.stderr
    assert owned(aws)["images"]
    done = CliRunner().invoke(build_main, [*args, "--yes"], obj=obj)
    assert done.exit_code == 0, done.output
    assert "deleted 2 resources" in done.stderr
    assert owned(aws)["images"] == owned(aws)["snapshots"] == set()


def test_an_unknown_aws_profile_is_one_line_exit_6(moto: MotoAws, tmp_path: Path) -> None:
    result = _deploy(moto, "--image", str(_image_dir(tmp_path)), "--profile", "no-such-profile")
    assert result.exit_code == 6  # type: ignore[attr-defined]
    (line,) = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert "no-such-profile" in line


def test_a_disk_of_many_blocks_goes_up_through_a_bounded_window(
    moto: MotoAws, aws: AwsClients, tmp_path: Path
) -> None:
    disk = tmp_path / "dense.raw"
    disk.write_bytes(bytes(range(256)) * (13 * BLOCK // 256) + b"tail")
    result = deploy_image(aws, _spec(tmp_path, disk=disk, workers=2), say=lambda _l: None)
    assert result.upload is not None
    assert result.upload.blocks_written == 14
    snapshot_id = moto.registered[-1]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert _snapshot_bytes(aws, snapshot_id, disk.stat().st_size) == disk.read_bytes()
