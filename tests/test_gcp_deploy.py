"""``deploy gcp``: the real google-cloud-compute and google-cloud-storage clients against
the local fake of Compute Engine and Cloud Storage (tests/gcp_fake.py)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.platforms.gcp.archive import pack_disk
from aicert.builder.platforms.gcp.clients import GcpClients, connect
from aicert.builder.platforms.gcp.deploy import GUEST_OS_FEATURES, GcpPublish, image_name
from aicert.builder.platforms.gcp.errors import (
    CloudPermissionError,
    CloudTransientError,
    RetryPolicy,
)
from aicert.builder.platforms.gcp.platform import GcpPlatform, GcpScope
from aicert.builder.recipe import RECIPE_FORMAT
from aicert.verifier.errors import InputError
from click.testing import CliRunner
from gcp_fake import FakeGcp, serving
from google.auth.credentials import AnonymousCredentials

PROJECT = "aicert-test"
BUCKET = "aicert-images"
NO_WAIT = RetryPolicy(attempts=4, first=0.0, longest=0.0, sleep=lambda _s: None)


@pytest.fixture
def fake() -> Iterator[FakeGcp]:
    with serving() as state:
        yield state


@pytest.fixture
def clients(fake: FakeGcp) -> GcpClients:
    return connect(
        PROJECT,
        endpoint=fake.url,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        retry=NO_WAIT,
        poll_interval=0.01,
    )


def _disk(tmp_path: Path, size: int = 3 << 20, data: bytes = b"aicert") -> Path:
    """A sparse disk: a few bytes at the start and at 1 MiB, holes elsewhere."""
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(size)
        f.write(data)
        f.seek(1 << 20)
        f.write(data)
    return disk


def test_the_archive_holds_disk_raw_sparse_and_is_deterministic(tmp_path: Path) -> None:
    disk = _disk(tmp_path, size=64 << 20)
    first = pack_disk(disk, tmp_path / "a")
    second = pack_disk(disk, tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.stat().st_size < 64 << 10  # holes are not stored
    header = first.path.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"  # gzip
    assert header[3] & 0x08 == 0  # no file name
    assert header[4:8] == bytes(4)  # no time stamp
    with tarfile.open(first.path) as tar:
        (member,) = tar.getmembers()
        assert member.name == "disk.raw"
        assert member.size == 64 << 20
        assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert hashlib.sha256(extracted.read()).hexdigest() == first.disk_sha256
    assert disk.exists()


@pytest.mark.parametrize("size", [0, 1000])
def test_a_disk_that_is_not_whole_sectors_is_refused(tmp_path: Path, size: int) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(size))
    with pytest.raises(InputError, match="512-byte sectors"):
        pack_disk(disk, tmp_path / "w")


def test_publish_uploads_creates_the_image_and_leaves_no_archive(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    said: list[str] = []
    published = GcpPlatform(clients).publish(GcpPublish(BUCKET, _disk(tmp_path)), say=said.append)
    name = published.image_id.rsplit("/", 1)[-1]
    assert published.image_id == f"projects/{PROJECT}/global/images/{name}"
    assert not published.already_published
    (body,) = fake.bodies[f"images/{name}"]
    assert [f["type"] for f in body["guestOsFeatures"]] == list(GUEST_OS_FEATURES)
    assert body["rawDisk"]["source"] == f"https://storage.googleapis.com/{BUCKET}/{name}.tar.gz"
    assert body["labels"] == {"aicert-managed": "true"}
    assert fake.count("GET", r"/global/operations/") >= 1  # the operation was polled
    assert fake.leftovers()["objects"] == []
    assert any(line.startswith("uploading ") for line in said)


def test_publishing_again_is_a_no_op(fake: FakeGcp, clients: GcpClients, tmp_path: Path) -> None:
    platform = GcpPlatform(clients)
    spec = GcpPublish(BUCKET, _disk(tmp_path))
    first = platform.publish(spec, say=lambda _l: None)
    again = platform.publish(spec, say=lambda _l: None)
    assert again.already_published
    assert again.image_id == first.image_id
    assert fake.count("POST", r"/global/images$") == 1
    assert fake.count("POST", r"/upload/") == 1


def test_a_resumable_upload_of_a_larger_archive(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    """An archive above the multipart limit (8 MiB) goes up in resumable chunks."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(9 << 20))  # random: gzip cannot shrink it
    GcpPlatform(clients).publish(GcpPublish(BUCKET, disk), say=lambda _l: None)
    assert fake.count("PUT", r"/upload/storage/v1/b/") >= 1
    assert fake.leftovers()["objects"] == []


def test_throttling_is_retried_with_backoff(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    fake.fail("POST", r"/global/images$", 429, times=2)
    fake.fail("GET", r"/global/operations/", 503, times=1)
    published = GcpPlatform(clients).publish(
        GcpPublish(BUCKET, _disk(tmp_path)), say=lambda _l: None
    )
    assert not published.already_published
    assert fake.count("POST", r"/global/images$") == 3


def test_throttling_that_never_ends_is_one_error_and_leaves_nothing(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    fake.fail("POST", r"/global/images$", 503, times=100)
    with pytest.raises(
        CloudTransientError, match=r"kept refusing while creating image .*HTTP 503, 4 attempts"
    ):
        GcpPlatform(clients).publish(GcpPublish(BUCKET, _disk(tmp_path)), say=lambda _l: None)
    assert fake.images == {}
    assert fake.leftovers()["objects"] == []


def test_a_refused_upload_names_the_permission(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    fake.fail("POST", r"/upload/", 403)
    with pytest.raises(CloudPermissionError, match="permission denied while uploading"):
        GcpPlatform(clients).publish(GcpPublish(BUCKET, _disk(tmp_path)), say=lambda _l: None)
    assert fake.images == {}


def test_destroy_deletes_the_images_aicert_made(
    fake: FakeGcp, clients: GcpClients, tmp_path: Path
) -> None:
    platform = GcpPlatform(clients)
    published = platform.publish(GcpPublish(BUCKET, _disk(tmp_path)), say=lambda _l: None)
    fake.images["someone-elses"] = {"name": "someone-elses", "labels": {}}
    deleted = platform.destroy(GcpScope(), say=lambda _l: None)
    assert deleted == (published.image_id.rsplit("/", 1)[-1],)
    assert list(fake.images) == ["someone-elses"]


def test_the_image_name_is_a_gce_name() -> None:
    name = image_name("ab" * 32)
    assert len(name) <= 63
    assert name.startswith("aicert-")


def test_a_bucket_url_is_refused() -> None:
    with pytest.raises(InputError, match="without gs://"):
        GcpPublish("gs://bucket/x", Path("disk.raw"))


# ---- command line ---------------------------------------------------------------------------


def _image_dir(tmp_path: Path, profile: str = "gcp") -> Path:
    image = tmp_path / "image"
    image.mkdir()
    _disk(image)
    recipe = {"format": RECIPE_FORMAT, "inputs": {"profile": profile}}
    (image / "recipe.json").write_text(json.dumps(recipe))
    return image


def _obj(fake: FakeGcp) -> dict[str, object]:
    return {
        "gcp_endpoint": fake.url,
        "gcp_credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
        "gcp_retry": NO_WAIT,
        "gcp_poll_interval": 0.01,
    }


def test_cli_deploy_again_and_delete(fake: FakeGcp, tmp_path: Path) -> None:
    image = _image_dir(tmp_path)
    args = ["deploy", "gcp", "--project", PROJECT, "--bucket", BUCKET, "--image", str(image)]
    runner = CliRunner()
    out = runner.invoke(build_main, args, obj=_obj(fake))
    assert out.exit_code == 0, out.output
    path = out.stdout.strip()
    assert path.startswith(f"projects/{PROJECT}/global/images/aicert-")
    again = runner.invoke(build_main, args, obj=_obj(fake))
    assert again.exit_code == 0
    assert "already published" in again.stderr
    assert again.stdout.strip() == path
    name = path.rsplit("/", 1)[-1]
    destroy = ["destroy", "gcp", "--project", PROJECT]
    kept = runner.invoke(build_main, destroy, obj=_obj(fake), input="n\n")
    assert kept.exit_code == 5
    assert f"  image  {name}" in kept.stderr
    assert name in fake.images
    gone = runner.invoke(build_main, [*destroy, "--deployment", name, "--yes"], obj=_obj(fake))
    assert gone.exit_code == 0, gone.output
    assert "deleted 1 resources" in gone.stderr
    assert fake.images == {}
    nothing = runner.invoke(build_main, [*destroy, "--yes"], obj=_obj(fake))
    assert nothing.exit_code == 0
    assert f"no aicert resources in project {PROJECT}" in nothing.stderr


@pytest.mark.parametrize(
    ("extra", "profile", "code", "message"),
    [
        ([], "gcp", 2, "Missing option '--bucket'"),
        (["--bucket", BUCKET], "azure", 3, "is the recipe of a 'azure' image"),
        (["--bucket", "missing-bucket"], "gcp", 6, "not found while uploading"),
    ],
)
def test_cli_errors_are_one_line_with_their_exit_code(
    fake: FakeGcp, tmp_path: Path, extra: list[str], profile: str, code: int, message: str
) -> None:
    image = _image_dir(tmp_path, profile)
    out = CliRunner().invoke(
        build_main,
        ["deploy", "gcp", "--project", PROJECT, "--image", str(image), *extra],
        obj=_obj(fake),
    )
    assert out.exit_code == code, out.output
    assert message in out.stderr
    assert "Traceback" not in out.output
    assert fake.images == {}
    assert fake.leftovers()["objects"] == []


def test_cli_throttling_is_exit_6(fake: FakeGcp, tmp_path: Path) -> None:
    fake.fail("POST", r"/upload/", 429, times=100)
    out = CliRunner().invoke(
        build_main,
        [
            "deploy",
            "gcp",
            "--project",
            PROJECT,
            "--bucket",
            BUCKET,
            "--image",
            str(_image_dir(tmp_path)),
        ],
        obj=_obj(fake),
    )
    assert out.exit_code == 6
    (line,) = out.stderr.strip().splitlines()[-1:]
    assert "kept refusing while uploading" in line
