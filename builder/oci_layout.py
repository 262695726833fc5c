"""A deterministic OCI image-layout archive of one root file system.

Written here rather than with umoci: the whole format is a tar of three JSON documents
and the blobs they name, and owning the writer is what makes two builds byte-identical
(sorted names, mtimes clamped to SOURCE_DATE_EPOCH, numeric owners only, no pax
timestamps, gzip without a name or time) with nothing to configure in an outside tool.

The layer is streamed: the file tree is read once, and the tar bytes are hashed (the
config's ``diff_id``) and compressed, the compressed bytes hashed again (the blob's
digest) on their way to disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from aicert.verifier.errors import InputError

LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
GZIP_LEVEL: Final = 6


class LayerError(InputError):
    """The root file system holds something a layer cannot carry faithfully."""


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob: its digest (``sha256:...``) and size."""

    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str
    unpacked_bytes: int
    entries: int


@dataclass(frozen=True)
class ImageConfig:
    """The image config fields a runner reads (the OCI image config's ``config``)."""

    env: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str = "/"
    entrypoint: tuple[str, ...] = ()
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class OciImage:
    manifest: Blob
    config: Blob
    layer: Layer


class _HashingWriter(io.RawIOBase):
    """Pass bytes on to ``sink`` and hash them."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sink.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _tarinfo(name: str, info: os.stat_result, epoch: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.uid, entry.gid = info.st_uid, info.st_gid
    entry.uname = entry.gname = ""
    entry.mtime = min(int(info.st_mtime), epoch)
    return entry


def write_layer(root: Path, blob: IO[bytes], epoch: int) -> Layer:
    """Write ``root`` as a gzip-compressed layer tar to ``blob``.

    Names are sorted (depth first, byte order), so the same tree always gives the same
    bytes. Hard links become tar hard links to the first name; device nodes, sockets
    and FIFOs are refused (a layer with them is refused by intake as well).
    """
    compressed = _HashingWriter(blob)
    unpacked = 0
    entries = 0
    seen: dict[tuple[int, int], str] = {}
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
    ) as zipped:
        plain = _HashingWriter(zipped)  # type: ignore[arg-type]
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, name in _walk(root):
                info = path.lstat()
                entry = _tarinfo(name, info, epoch)
                entries += 1
                if stat.S_ISDIR(info.st_mode):
                    entry.type = tarfile.DIRTYPE
                    tar.addfile(entry)
                elif stat.S_ISLNK(info.st_mode):
                    entry.type = tarfile.SYMTYPE
                    entry.linkname = os.readlink(path)
                    tar.addfile(entry)
                elif stat.S_ISREG(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if info.st_nlink > 1 and key in seen:
                        entry.type = tarfile.LNKTYPE
                        entry.linkname = seen[key]
                        tar.addfile(entry)
                        continue
                    seen[key] = name
                    entry.size = info.st_size
                    unpacked += info.st_size
                    with path.open("rb") as source:
                        tar.addfile(entry, source)
                else:
                    raise LayerError(f"{path} is a device, socket or FIFO; a layer cannot hold it")
    return Layer(
        blob=Blob(f"sha256:{compressed.hash.hexdigest()}", compressed.size, LAYER_MEDIA_TYPE),
        diff_id=f"sha256:{plain.hash.hexdigest()}",
        unpacked_bytes=unpacked,
        entries=entries,
    )


def _walk(root: Path) -> list[tuple[Path, str]]:
    """Every path below ``root`` with its layer name, sorted depth first by bytes."""
    found: list[tuple[Path, str]] = []

    def visit(directory: Path, prefix: str) -> None:
        names = sorted(os.listdir(directory), key=os.fsencode)
        for name in names:
            path = directory / name
            member = prefix + name
            found.append((path, member))
            if path.is_dir() and not path.is_symlink():
                visit(path, member + "/")

    visit(root, "")
    return found


def image_config(config: ImageConfig, layer: Layer, epoch: int) -> bytes:
    """The OCI image config document (canonical JSON)."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    body: dict[str, object] = {"Env": list(config.env), "Cmd": list(config.cmd)}
    if config.working_dir:
        body["WorkingDir"] = config.working_dir
    if config.entrypoint:
        body["Entrypoint"] = list(config.entrypoint)
    if config.labels:
        body["Labels"] = dict(config.labels)
    return _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": body,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": created, "created_by": "aicert-build environment"}],
        }
    )


def _manifest(config: Blob, layer: Layer) -> bytes:
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": [layer.blob.descriptor()],
        }
    )


def _blob_of(data: bytes, media_type: str) -> Blob:
    return Blob(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), media_type)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, epoch: int) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode, entry.mtime = len(data), 0o644, epoch
    tar.addfile(entry, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, epoch: int) -> None:
    entry = tarfile.TarInfo(name)
    entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, 0o755, epoch
    tar.addfile(entry)


def write_layout_archive(
    output: IO[bytes], layer: Layer, layer_file: Path, config: ImageConfig, epoch: int
) -> OciImage:
    """Write the OCI image-layout tar (oci-layout, index.json, blobs/sha256/...)."""
    config_bytes = image_config(config, layer, epoch)
    config_blob = _blob_of(config_bytes, CONFIG_MEDIA_TYPE)
    manifest_bytes = _manifest(config_blob, layer)
    manifest_blob = _blob_of(manifest_bytes, MANIFEST_MEDIA_TYPE)
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest_blob.descriptor()],
        }
    )
    blobs: list[tuple[str, bytes | Path]] = [
        (config_blob.digest, config_bytes),
        (manifest_blob.digest, manifest_bytes),
        (layer.blob.digest, layer_file),
    ]
    with tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "blobs", epoch)
        _add_dir(tar, "blobs/sha256", epoch)
        for digest, content in sorted(blobs, key=lambda item: item[0]):
            name = "blobs/sha256/" + digest.removeprefix("sha256:")
            if isinstance(content, bytes):
                _add_bytes(tar, name, content, epoch)
                continue
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode, entry.mtime = content.stat().st_size, 0o644, epoch
            with content.open("rb") as source:
                tar.addfile(entry, source)
        _add_bytes(tar, "index.json", index, epoch)
        _add_bytes(tar, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}), epoch)
    return OciImage(manifest=manifest_blob, config=config_blob, layer=layer)


def env_defaults(extra: Sequence[str]) -> tuple[str, ...]:
    """The Env of a Debian environment: Debian's PATH and a UTF-8 locale, then ``extra``."""
    return (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
        *extra,
    )
