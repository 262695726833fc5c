"""Image references, manifests, indexes and configs: fixed vectors and property tests."""

from __future__ import annotations

import contextlib
import json

import pytest
from aicert.agent.oci.blobs import read_blob
from aicert.agent.oci.errors import OciError
from aicert.agent.oci.media import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    parse_config,
    parse_index,
    parse_manifest,
)
from hypothesis import given
from hypothesis import strategies as st
from packageurl import PackageURL

from aicert.oci_reference import ImageReferenceError, parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 5},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D3, "size": 7},
        ],
    }
    doc.update(changes)
    return doc


def test_reference_by_digest() -> None:
    ref = parse_reference(f"127.0.0.1:5000/team/trainer@{D1}")
    assert (ref.registry, ref.repository, ref.digest, ref.tag) == (
        "127.0.0.1:5000",
        "team/trainer",
        D1,
        "",
    )
    assert ref.purl() == (
        "pkg:oci/trainer@sha256:" + "1" * 64 + "?repository_url=127.0.0.1:5000/team/trainer"
    )
    canonical = PackageURL.from_string(ref.purl())
    assert (canonical.type, canonical.name, canonical.version) == ("oci", "trainer", D1)
    assert canonical.qualifiers == {"repository_url": "127.0.0.1:5000/team/trainer"}
    assert canonical.to_string() == ref.purl()
    tagged = parse_reference(f"docker.io/library/debian:trixie@{D1}")
    assert (tagged.tag, tagged.api_host) == ("trixie", "registry-1.docker.io")
    assert str(tagged) == f"docker.io/library/debian:trixie@{D1}"
    assert parse_reference(f"docker.io/debian@{D1}").repository == "library/debian"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registry.example/trainer:latest", "no digest: pulls are by digest only"),
        ("registry.example/trainer", "no digest"),
        (f"trainer@{D1}", "does not name its registry"),
        ("registry.example/trainer@sha256:abc", "64 lowercase hex"),
        ("registry.example/trainer@sha512:" + "1" * 128, "must be sha256:"),
        (f"registry.example/Trainer@{D1}", "not a repository name"),
        (f"https://registry.example/trainer@{D1}", "without a scheme"),
        (f"registry.example/trainer:bad tag@{D1}", "one line"),
        ("", "one line"),
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(ImageReferenceError, match=message):
        parse_reference(text)


def test_manifest_fields() -> None:
    parsed = parse_manifest(json.dumps(manifest()).encode())
    assert parsed.config.digest == D1
    assert [(la.digest, la.compression) for la in parsed.layers] == [(D2, "gzip"), (D3, "")]
    docker = manifest(mediaType=DOCKER_MANIFEST)
    assert parse_manifest(json.dumps(docker).encode()).layers[0].size == 5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schemaVersion": 1}, "schemaVersion 2"),
        ({"schemaVersion": True}, "schemaVersion 2"),
        ({"mediaType": OCI_INDEX}, "media type"),
        ({"config": {"mediaType": OCI_CONFIG, "digest": "md5:x", "size": 1}}, "digest"),
        ({"config": {"mediaType": "text/plain", "digest": D1, "size": 1}}, "not an image config"),
        ({"config": {"mediaType": OCI_CONFIG, "digest": D1, "size": -1}}, "out of range"),
        ({"config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 1.5}}, "integer"),
        ({"config": {"mediaType": OCI_CONFIG, "digest": D1}}, "size is missing"),
        ({"layers": [{"mediaType": "application/x-foo", "digest": D2, "size": 1}]}, "tar layer"),
        (
            {
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                        "digest": D2,
                        "size": 1,
                    }
                ]
            },
            r"^layers\[0\] has media type 'application/vnd\.oci\.image\.layer\.v1\.tar\+zstd': "
            "zstd layers are not supported",
        ),
        (
            {
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": D2,
                        "size": 1,
                        "urls": ["https://example.org/l"],
                    }
                ]
            },
            "foreign layer",
        ),
        ({"layers": "x"}, "array"),
    ],
)
def test_bad_manifests(changes: dict[str, object], message: str) -> None:
    with pytest.raises(OciError, match=message):
        parse_manifest(json.dumps(manifest(**changes)).encode())


def test_manifest_size_and_syntax_bounds() -> None:
    with pytest.raises(OciError, match="more than"):
        parse_manifest(b" " * (4 * 1024 * 1024 + 1))
    for data in (b"\xff", b"[]", b"{", b'{"schemaVersion": NaN}'):
        with pytest.raises(OciError):
            parse_manifest(data)


def test_index_picks_linux_amd64() -> None:
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": D1,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": D2,
            "size": 2,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
    ]
    index = parse_index(json.dumps({"schemaVersion": 2, "manifests": entries}).encode())
    assert index.pick().digest == D2
    with pytest.raises(
        OciError, match=r"no linux/riscv64 image \(it has linux/amd64, linux/arm64\)"
    ):
        index.pick("linux", "riscv64")


def test_config_fields() -> None:
    doc = {
        "os": "linux",
        "architecture": "amd64",
        "config": {
            "Env": ["A=1"],
            "Entrypoint": None,
            "Cmd": ["python3"],
            "User": "1000:1000",
            "WorkingDir": "/w",
        },
        "rootfs": {"type": "layers", "diff_ids": [D1]},
    }
    config = parse_config(json.dumps(doc).encode())
    assert (config.env, config.entrypoint, config.cmd, config.user, config.working_dir) == (
        ("A=1",),
        (),
        ("python3",),
        "1000:1000",
        "/w",
    )
    doc["config"] = {"Env": ["NOEQUALS"]}
    with pytest.raises(OciError, match="NAME=VALUE"):
        parse_config(json.dumps(doc).encode())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_parsers_only_raise_oci_errors(doc: object) -> None:
    data = json.dumps(doc).encode()
    for parse in (parse_manifest, parse_index, parse_config):
        with contextlib.suppress(OciError):
            parse(data)


@given(
    st.dictionaries(
        st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "annotations"]),
        _json,
    ),
    st.binary(max_size=64),
)
def test_mutated_manifests_only_raise_oci_errors(changes: dict[str, object], junk: bytes) -> None:
    data = json.dumps(manifest(**changes)).encode()
    for candidate in (data, data[: len(junk)], junk + data):
        try:
            parsed = parse_manifest(candidate)
        except OciError:
            continue
        assert all(layer.digest.startswith("sha256:") for layer in parsed.layers)
        assert parsed.config.size >= 0


def test_small_blobs_are_bounded_before_reading() -> None:
    class Endless:
        def read(self, size: int = -1, /) -> bytes:
            raise AssertionError("read before the size was checked")

    with pytest.raises(OciError, match="more than the 8388608 allowed"):
        read_blob(Endless(), Descriptor(OCI_MANIFEST, D1, 2**50), "the manifest")
