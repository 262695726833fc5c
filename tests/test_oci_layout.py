"""The OCI image-layout writer: deterministic bytes, consistent digests, what skopeo reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from aicert.builder.oci_layout import (
    ImageConfig,
    LayerError,
    write_layer,
    write_layout_archive,
)

from aicert.process import run

EPOCH = 1735689600
CONFIG = ImageConfig(env=("PATH=/usr/bin:/bin", "LANG=C.UTF-8"), cmd=("python3",))


def _tree(root: Path, *, reverse: bool = False, mtime: int = EPOCH + 10_000) -> Path:
    names = ["usr/bin/python3", "usr/lib/a.py", "etc/os-release", "etc/é-utf8", "z"]
    for name in reversed(names) if reverse else names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
    (root / "usr/bin/python3").chmod(0o755)
    (root / "usr/bin/python").symlink_to("python3")
    os.link(root / "usr/lib/a.py", root / "usr/lib/b.py")
    os.chown(root / "etc/os-release", 0, 42)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    (root / "etc/os-release").touch()  # now: later than the epoch, clamped
    return root


def _layer(root: Path, tmp: Path, name: str) -> tuple[bytes, object]:
    blob = tmp / name
    with blob.open("wb") as out:
        layer = write_layer(root, out, EPOCH)
    return blob.read_bytes(), layer


def test_the_same_tree_gives_the_same_layer(tmp_path: Path) -> None:
    first, layer_a = _layer(_tree(tmp_path / "a"), tmp_path, "a.tgz")
    second, layer_b = _layer(_tree(tmp_path / "b", reverse=True), tmp_path, "b.tgz")
    assert first == second
    assert layer_a == layer_b
    assert layer_a.blob.digest == "sha256:" + hashlib.sha256(first).hexdigest()  # type: ignore[attr-defined]
    plain = gzip.decompress(first)
    assert layer_a.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()  # type: ignore[attr-defined]


def test_layer_headers(tmp_path: Path) -> None:
    data, _ = _layer(_tree(tmp_path / "a"), tmp_path, "a.tgz")
    assert data[4:8] == b"\0\0\0\0"  # gzip MTIME field: no build time
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "etc", "etc/os-release", "etc/é-utf8", "tmp", "usr", "usr/bin", "usr/bin/python",
        "usr/bin/python3", "usr/lib", "usr/lib/a.py", "usr/lib/b.py", "z",
    ]  # fmt: skip
    by_name = {m.name: m for m in members}
    assert all(m.mtime <= EPOCH and m.uname == m.gname == "" for m in members)
    assert by_name["etc/os-release"].mtime == EPOCH
    assert by_name["etc/os-release"].gid == 42
    assert by_name["usr/bin/python"].issym()
    assert by_name["usr/bin/python"].linkname == "python3"
    assert by_name["usr/lib/b.py"].islnk()
    assert by_name["usr/lib/b.py"].linkname == "usr/lib/a.py"
    assert by_name["usr/bin/python3"].mode == 0o755
    assert by_name["tmp"].mode == 0o1777


def test_device_nodes_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o20666, os.makedev(1, 3))
    with (tmp_path / "x").open("wb") as out, pytest.raises(LayerError, match="device"):
        write_layer(root, out, EPOCH)


def _archive(tmp_path: Path, name: str, tree: Path) -> tuple[Path, object]:
    layer_file = tmp_path / f"{name}.layer"
    with layer_file.open("wb") as out:
        layer = write_layer(tree, out, EPOCH)
    archive = tmp_path / f"{name}.oci.tar"
    with archive.open("wb") as out:
        image = write_layout_archive(out, layer, layer_file, CONFIG, EPOCH)
    return archive, image


def test_layout_archive_is_consistent_and_deterministic(tmp_path: Path) -> None:
    first, image = _archive(tmp_path, "a", _tree(tmp_path / "a"))
    second, _ = _archive(tmp_path, "b", _tree(tmp_path / "b", reverse=True))
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        assert all(m.mtime == EPOCH and m.uid == m.gid == 0 for m in tar.getmembers())
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-2:] == ["index.json", "oci-layout"]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, content in files.items():
        if name.startswith("blobs/"):
            assert name == "blobs/sha256/" + hashlib.sha256(content).hexdigest()
    index = json.loads(files["index.json"])
    manifest_digest = index["manifests"][0]["digest"]
    assert manifest_digest == image.manifest.digest  # type: ignore[attr-defined]
    manifest = json.loads(files["blobs/sha256/" + manifest_digest[7:]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"] == {"Env": list(CONFIG.env), "Cmd": ["python3"], "WorkingDir": "/"}
    assert config["created"] == "2025-01-01T00:00:00Z"
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"][7:]]
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo (an outside reader) absent")
def test_skopeo_reads_the_archive(tmp_path: Path) -> None:
    archive, image = _archive(tmp_path, "a", _tree(tmp_path / "a"))
    raw = run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"]).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.manifest.digest  # type: ignore[attr-defined]
    inspected = json.loads(run(["skopeo", "inspect", f"oci-archive:{archive}"]).stdout)
    assert inspected["Digest"] == image.manifest.digest  # type: ignore[attr-defined]
    assert inspected["Env"] == list(CONFIG.env)
    # skopeo checks every blob against its digest while copying.
    run(["skopeo", "copy", f"oci-archive:{archive}", f"dir:{tmp_path / 'copy'}"])
