"""Environment intake against a real registry (Debian's docker-registry on loopback) and
from image-layout archives: pulls by digest, and every refusal."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.agent.oci.environment import pull_environment, receive_archive
from aicert.agent.oci.errors import OciError
from aicert.agent.oci.media import LAYER_ZSTD
from oci_support import (
    OCI_INDEX,
    Entry,
    Image,
    Registry,
    TokenService,
    file,
    layer_tar,
    layout_archive,
    make_image,
    make_index,
    running_registry,
    sha256,
    symlink,
)

from aicert.oci_reference import ImageReferenceError, parse_reference
from aicert.process import run

BIG = 1 << 30


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def pull(registry: Registry, reference: str, dest: Path, max_bytes: int = BIG):  # type: ignore[no-untyped-def]
    return pull_environment(
        parse_reference(reference), dest, max_bytes=max_bytes, plain_http=frozenset({registry.host})
    )


def base_layers() -> list[bytes]:
    return [
        layer_tar(
            [
                file("usr/bin/train", b"#!/bin/sh\n", 0o755),
                symlink("bin", "usr/bin"),
                file("etc/os-release", b"ID=test\n"),
                file("data/blob", os.urandom(300_000)),
            ]
        ),
        layer_tar([file("etc/.wh.os-release"), file("work/README", b"hello")]),
    ]


def test_pull_by_digest(registry: Registry, tmp_path: Path) -> None:
    image = make_image(
        base_layers(),
        config={
            "Env": ["PATH=/usr/bin"],
            "Entrypoint": ["/e"],
            "Cmd": ["train"],
            "User": "1000",
            "WorkingDir": "/work",
        },
    )
    reference = registry.push("team/trainer", image)
    steps: list[str] = []
    env = pull_environment(
        parse_reference(reference),
        tmp_path / "env",
        max_bytes=BIG,
        plain_http=frozenset({registry.host}),
        step=steps.append,
    )
    assert env.manifest_digest == image.digest
    assert env.config_digest == image.config_digest
    assert (env.env, env.entrypoint, env.cmd, env.user, env.working_dir) == (
        ("PATH=/usr/bin",),
        ("/e",),
        ("train",),
        "1000",
        "/work",
    )
    assert env.source("environment") == (
        f"pkg:oci/trainer@sha256:{image.digest[7:]}?repository_url={registry.host}/team/trainer"
    )
    root = env.rootfs
    assert (root / "usr/bin/train").read_bytes() == b"#!/bin/sh\n"
    assert not (root / "etc/os-release").exists()
    assert (root / "work/README").read_text() == "hello"
    assert sorted(os.listdir(tmp_path / "env")) == ["config.json", "manifest.json", "rootfs"]
    assert sha256((tmp_path / "env/manifest.json").read_bytes()) == image.digest
    assert steps[-1] == "layer 2/2 checked and unpacked"


def test_pull_through_an_index_picks_linux_amd64(registry: Registry, tmp_path: Path) -> None:
    amd64 = make_image([layer_tar([file("arch", b"amd64")])])
    arm64 = make_image([layer_tar([file("arch", b"arm64")])], architecture="arm64")
    for image in (amd64, arm64):
        registry.push("multi", image, tag=image.digest[7:19])
    index = make_index({"linux/arm64": arm64, "linux/amd64": amd64})
    registry.push_manifest("multi", "latest", index, OCI_INDEX)
    env = pull(registry, f"{registry.host}/multi@{sha256(index)}", tmp_path / "env")
    assert env.manifest_digest == amd64.digest
    assert (env.rootfs / "arch").read_bytes() == b"amd64"


def test_tag_without_digest_is_refused_before_any_request() -> None:
    with pytest.raises(ImageReferenceError, match="no digest: pulls are by digest only"):
        parse_reference("127.0.0.1:1/team/trainer:latest")


def test_unknown_digest(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(OciError, match="HTTP 404"):
        pull(registry, f"{registry.host}/team/trainer@sha256:{'0' * 64}", tmp_path / "env")
    assert not (tmp_path / "env").exists()


def test_manifest_whose_digest_differs(registry: Registry, tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a", b"1")])])
    reference = registry.push("tampered-manifest", image)
    stored = registry.stored_blob(image.digest)
    stored.write_bytes(image.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    with pytest.raises(OciError, match=f"not the {image.digest} it was asked for"):
        pull(registry, reference, tmp_path / "env")
    assert not (tmp_path / "env").exists()


def test_blob_whose_bytes_differ(registry: Registry, tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a", os.urandom(100_000))]), layer_tar([file("b")])])
    reference = registry.push("tampered-blob", image)
    stored = registry.stored_blob(image.layer_digests[0])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest can tell
    stored.write_bytes(bytes(data))
    with pytest.raises(OciError, match=r"layer 1/2 .* not the sha256:.* it was asked for"):
        pull(registry, reference, tmp_path / "env")
    assert not (tmp_path / "env").exists()


def zstd_image() -> Image:
    """An image whose one layer is zstd-compressed (by the zstd tool), as BuildKit or
    ``skopeo copy --dest-compress-format zstd`` push it."""
    layer = layer_tar([file("usr/bin/train", b"#!/bin/sh\n", 0o755)])
    image = make_image([layer], compress=False)
    blob = run(["zstd", "-q", "-c"], input=layer).stdout
    manifest = json.loads(image.manifest)
    del image.blobs[manifest["layers"][0]["digest"]]
    manifest["layers"][0] = {"mediaType": LAYER_ZSTD, "digest": sha256(blob), "size": len(blob)}
    image.blobs[sha256(blob)] = blob
    image.manifest = json.dumps(manifest).encode()
    return image


ZSTD_REFUSED = (
    r"^layers\[0\] has media type 'application/vnd\.oci\.image\.layer\.v1\.tar\+zstd': "
    r"zstd layers are not supported; push the image with gzip layers"
)


def test_zstd_layers_are_refused_before_any_blob_is_fetched(
    registry: Registry, tmp_path: Path
) -> None:
    image = zstd_image()
    reference = registry.push("zstd", image)
    # Without its blobs the registry can serve only the manifest: a fetch would fail otherwise.
    for digest in (image.config_digest, *image.layer_digests):
        registry.stored_blob(digest).unlink()
    with pytest.raises(OciError, match=ZSTD_REFUSED) as refused:
        pull(registry, reference, tmp_path / "env")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "env").exists()
    with pytest.raises(OciError, match=ZSTD_REFUSED):
        receive_archive(io.BytesIO(layout_archive(image)), tmp_path / "env", max_bytes=BIG)
    assert not (tmp_path / "env").exists()


def test_config_whose_bytes_differ(registry: Registry, tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a")])])
    reference = registry.push("tampered-config", image)
    stored = registry.stored_blob(image.config_digest)
    stored.write_bytes(stored.read_bytes().replace(b"/work", b"/root"))
    with pytest.raises(OciError, match=r"image config .* not the"):
        pull(registry, reference, tmp_path / "env")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([file("../../etc/cron.d/x", b"* * * * * root sh")], "climbs out of the root"),
        ([file("/etc/passwd", b"root::0:0")], "absolute name"),
        ([Entry("dev/kmsg", kind=tarfile.CHRTYPE)], "device file"),
        ([symlink("escape", "/"), file("escape/.wh.etc")], "symbolic link is never followed"),
    ],
)
def test_hostile_layers_are_refused(
    registry: Registry, tmp_path: Path, entries: list[Entry], message: str
) -> None:
    image = make_image([layer_tar([file("ok")]), layer_tar(entries)])
    reference = registry.push("hostile", image, tag=image.digest[7:19])
    with pytest.raises(OciError, match=message):
        pull(registry, reference, tmp_path / "env")
    assert not (tmp_path / "env").exists()


def test_image_larger_than_the_scratch_allows(registry: Registry, tmp_path: Path) -> None:
    # Compresses well: small blobs, big unpacked tree.
    image = make_image([layer_tar([file(f"zeros{i}", bytes(1 << 20)) for i in range(4)])])
    reference = registry.push("too-big", image)
    with pytest.raises(OciError, match="does not fit the scratch disk") as info:
        pull(registry, reference, tmp_path / "env", max_bytes=2 << 20)
    assert info.value.status == 507
    assert not (tmp_path / "env").exists()
    with pytest.raises(OciError, match=r"layers are .* bytes compressed"):
        pull(registry, reference, tmp_path / "env", max_bytes=1000)


def test_other_architecture_is_refused(registry: Registry, tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a")])], architecture="arm64")
    reference = registry.push("arm", image)
    with pytest.raises(OciError, match="for linux/arm64, not linux/amd64"):
        pull(registry, reference, tmp_path / "env")


# -- archives --------------------------------------------------------------------------------


def test_layout_archive(tmp_path: Path) -> None:
    image = make_image(base_layers())
    env = receive_archive(io.BytesIO(layout_archive(image)), tmp_path / "env", max_bytes=BIG)
    assert (env.manifest_digest, env.config_digest, env.reference) == (
        image.digest,
        image.config_digest,
        None,
    )
    assert env.source("environment") == f"pkg:oci/environment@sha256:{image.digest[7:]}"
    assert (env.rootfs / "work/README").read_text() == "hello"


def test_archive_blob_whose_bytes_differ(tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a", os.urandom(5000))])])
    layer = image.layer_digests[0]
    blob = bytearray(image.blobs[layer])
    blob[100] ^= 1
    image.blobs[layer] = bytes(blob)
    with pytest.raises(OciError, match=f"archive blob {layer} has digest"):
        receive_archive(io.BytesIO(layout_archive(image)), tmp_path / "env", max_bytes=BIG)
    assert not (tmp_path / "env").exists()


def test_archive_refusals(tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a")])])
    link = tarfile.TarInfo("blobs/sha256/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    stray = tarfile.TarInfo("../escape")
    stray.size = 1
    cases = [
        (layout_archive(image, extra=[(link, b"")]), "is not a file"),
        (layout_archive(image, extra=[(stray, b"x")]), "not part of an OCI image layout"),
        (b"\x00" * 1024, "lacks oci-layout"),
        (b"garbage" * 100, "not a well-formed tar stream"),
    ]
    for data, message in cases:
        with pytest.raises(OciError, match=message):
            receive_archive(io.BytesIO(data), tmp_path / "env", max_bytes=BIG)
        assert not (tmp_path / "env").exists()
    missing = make_image([layer_tar([file("a")])])
    del missing.blobs[missing.layer_digests[0]]
    with pytest.raises(OciError, match="archive lacks layer 1/1"):
        receive_archive(io.BytesIO(layout_archive(missing)), tmp_path / "env", max_bytes=BIG)
    with pytest.raises(OciError, match="exceed 100 bytes"):
        receive_archive(io.BytesIO(layout_archive(image)), tmp_path / "env", max_bytes=100)


def test_archive_index_manifest_must_be_in_the_archive(tmp_path: Path) -> None:
    image = make_image([layer_tar([file("a")])])
    data = layout_archive(image)
    other = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "5" * 64,
                    "size": 3,
                }
            ],
        }
    ).encode()
    patched = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=patched, mode="w") as dst,
    ):
        for member in src:
            payload = src.extractfile(member)
            if member.name == "index.json":
                member.size = len(other)
                payload = io.BytesIO(other)
            dst.addfile(member, payload)
    with pytest.raises(OciError, match="archive lacks the image manifest"):
        receive_archive(io.BytesIO(patched.getvalue()), tmp_path / "env", max_bytes=BIG)


def test_anonymous_bearer_token_flow(tmp_path: Path) -> None:
    tokens = TokenService(tmp_path)
    try:
        with running_registry(tmp_path / "registry", tokens) as registry:
            image = make_image([layer_tar([file("a", b"token")])])
            reference = registry.push("team/private-ish", image)
            tokens.requests.clear()
            env = pull(registry, reference, tmp_path / "env")
            assert (env.rootfs / "a").read_bytes() == b"token"
            # One anonymous token request, for pull access to this repository only.
            assert len(tokens.requests) == 1
            path, request = tokens.requests[0]
            assert (path, request["scope"], request["service"]) == (
                "/token",
                "repository:team/private-ish:pull",
                TokenService.SERVICE,
            )
            assert "Authorization" not in request
    finally:
        tokens.close()


def test_token_service_refusal(tmp_path: Path) -> None:
    tokens = TokenService(tmp_path)
    try:
        with running_registry(tmp_path / "registry", tokens) as registry:
            image = make_image([layer_tar([file("a")])])
            reference = registry.push("team/closed", image)
            tokens.refuse = True
            with pytest.raises(OciError, match="token service answered HTTP 403"):
                pull(registry, reference, tmp_path / "env")
    finally:
        tokens.close()


def test_https_registry_is_verified(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry", tls=True) as registry:
        image = make_image([layer_tar([file("a", b"tls")])])
        reference = parse_reference(registry.push("team/tls", image))
        # The system trust store does not know the test CA: refused, nothing kept.
        with pytest.raises(OciError, match="CERTIFICATE_VERIFY_FAILED"):
            pull_environment(reference, tmp_path / "env", max_bytes=BIG)
        assert not (tmp_path / "env").exists()
        env = pull_environment(reference, tmp_path / "env", max_bytes=BIG, context=registry.tls)
        assert (env.rootfs / "a").read_bytes() == b"tls"


def test_archives_written_by_skopeo(registry: Registry, tmp_path: Path) -> None:
    image = make_image(base_layers())
    source = f"docker://{registry.push('interop', image)}"
    layout, legacy = tmp_path / "env.oci.tar", tmp_path / "env.docker.tar"
    run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci-archive:{layout}"])
    with layout.open("rb") as stream:
        env = receive_archive(stream, tmp_path / "env", max_bytes=BIG)
    assert (env.manifest_digest, env.config_digest) == (image.digest, image.config_digest)
    assert (env.rootfs / "work/README").read_text() == "hello"
    # skopeo's docker-archive is Docker's old format: no manifest digest to measure.
    run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"docker-archive:{legacy}"])
    with legacy.open("rb") as stream, pytest.raises(OciError, match="skopeo copy docker-archive"):
        receive_archive(stream, tmp_path / "env2", max_bytes=BIG)


def test_archive_manifest_blobs_are_bounded_before_reading(tmp_path: Path) -> None:
    # index.json names a 9 MiB "manifest" that the archive holds, correctly digested.
    huge = b" " * (9 << 20)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(huge),
                "size": len(huge),
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            (f"blobs/sha256/{sha256(huge)[7:]}", huge),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(OciError, match=r"image manifest .* is larger than"):
        receive_archive(io.BytesIO(out.getvalue()), tmp_path / "env", max_bytes=BIG)
