"""An environment's whole intake: an image pulled by digest, or an image-layout archive,
checked blob by blob, unpacked into ``DEST/rootfs``.

``DEST`` then holds ``rootfs/``, ``manifest.json`` and ``config.json`` (the verified
bytes); the compressed blobs are deleted once applied. Layers are downloaded a few at
a time and applied in order as each one is complete. On any failure ``DEST`` is
removed. Space: the blobs count against ``max_bytes`` first, the unpacked tree gets
what is left.
"""

from __future__ import annotations

import shutil
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aicert.verifier.progress import format_bytes

from aicert.oci_reference import ImageReference

from .archive import receive_layout
from .blobs import Reader
from .errors import OciError
from .media import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    PLATFORM,
    ImageConfig,
    ImageManifest,
    Layer,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from .registry import RegistryClient
from .unpack import RootfsWriter

PARALLEL_DOWNLOADS: Final = 4
ROOTFS: Final = "rootfs"
_BLOBS: Final = "blobs"

Step = Callable[[str], None]


@dataclass(frozen=True)
class Environment:
    """A training environment ready to run: its root and what identifies it."""

    rootfs: Path
    manifest_digest: str
    config_digest: str
    reference: ImageReference | None
    env: tuple[str, ...]
    working_dir: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str

    def source(self, name: str) -> str:
        """What the certificate records: the image's package URL (``pkg:oci/...``); an
        uploaded archive is named after its input ``name``, without a repository."""
        if self.reference is not None:
            return self.reference.purl()
        return f"pkg:oci/{name.lower()}@{self.manifest_digest}"


def _check_config(config: ImageConfig, manifest: ImageManifest) -> None:
    if (config.os, config.architecture) != PLATFORM:
        raise OciError(
            f"the image is for {config.os}/{config.architecture}, not {'/'.join(PLATFORM)}"
        )
    if len(config.diff_ids) != len(manifest.layers):
        raise OciError(
            f"the image config lists {len(config.diff_ids)} layer diff IDs for "
            f"{len(manifest.layers)} layers"
        )


def _room(manifest: ImageManifest, max_bytes: int) -> int:
    """What the unpacked tree may use once the blobs are on the scratch disk."""
    blobs = sum(layer.size for layer in manifest.layers)
    if blobs >= max_bytes:
        raise OciError(
            f"the image's layers are {blobs} bytes compressed; the scratch disk allows "
            f"{max_bytes}: use a bigger disk or a smaller image",
            507,
        )
    return max_bytes - blobs


def _environment(
    dest: Path,
    manifest_bytes: bytes,
    manifest_digest: str,
    config_bytes: bytes,
    manifest: ImageManifest,
    config: ImageConfig,
    reference: ImageReference | None,
) -> Environment:
    (dest / "manifest.json").write_bytes(manifest_bytes)
    (dest / "config.json").write_bytes(config_bytes)
    return Environment(
        rootfs=dest / ROOTFS,
        manifest_digest=manifest_digest,
        config_digest=manifest.config.digest,
        reference=reference,
        env=config.env,
        working_dir=config.working_dir,
        entrypoint=config.entrypoint,
        cmd=config.cmd,
        user=config.user,
    )


def _cleanup_on_failure(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)


def pull_environment(
    reference: ImageReference,
    dest: Path,
    *,
    max_bytes: int,
    plain_http: frozenset[str] = frozenset(),
    context: ssl.SSLContext | None = None,
    step: Step | None = None,
) -> Environment:
    """Pull ``reference`` from its registry into the new directory ``dest``."""
    say = step or (lambda _line: None)
    dest.mkdir(mode=0o755)
    try:
        client = RegistryClient(reference, plain_http=plain_http, context=context)
        pulled = client.manifest()
        manifest = parse_manifest(pulled.data)
        config_bytes = client.read_small_blob(
            manifest.config, f"image config {manifest.config.digest}"
        )
        config = parse_config(config_bytes)
        _check_config(config, manifest)
        room = _room(manifest, max_bytes)
        blob_dir = dest / _BLOBS
        blob_dir.mkdir()
        rootfs = RootfsWriter(dest / ROOTFS, room)
        total = len(manifest.layers)
        size = format_bytes(sum(la.size for la in manifest.layers))
        say(f"pulling {reference}: {total} layer{'' if total == 1 else 's'}, {size}")
        stop = threading.Event()
        with ThreadPoolExecutor(PARALLEL_DOWNLOADS, thread_name_prefix="oci-pull") as pool:
            downloads: dict[str, Future[None]] = {}
            for i, layer in enumerate(manifest.layers):
                if layer.digest not in downloads:
                    downloads[layer.digest] = pool.submit(
                        client.download_blob,
                        layer,
                        blob_dir / layer.digest[7:],
                        f"layer {i + 1}/{total} ({layer.digest})",
                        stop,
                    )
            try:
                for i, layer in enumerate(manifest.layers):
                    downloads[layer.digest].result()
                    what = f"layer {i + 1}/{total} ({layer.digest})"
                    _apply(rootfs, blob_dir / layer.digest[7:], layer, config.diff_ids[i], what)
                    say(f"layer {i + 1}/{total} checked and unpacked")
            except BaseException:
                stop.set()  # downloads under way end at their next chunk
                for download in downloads.values():
                    download.cancel()
                raise
        shutil.rmtree(blob_dir)
        return _environment(
            dest, pulled.data, pulled.digest, config_bytes, manifest, config, reference
        )
    except BaseException:
        _cleanup_on_failure(dest)
        raise


def _apply(rootfs: RootfsWriter, blob: Path, layer: Layer, diff_id: str, what: str) -> None:
    with blob.open("rb") as stream:
        rootfs.apply_layer(stream, layer.compression, diff_id, what)


def receive_archive(
    stream: Reader, dest: Path, *, max_bytes: int, step: Step | None = None
) -> Environment:
    """Read an OCI image-layout tar ``stream`` into the new directory ``dest``."""
    say = step or (lambda _line: None)
    dest.mkdir(mode=0o755)
    try:
        blob_dir = dest / _BLOBS
        blob_dir.mkdir()
        received = receive_layout(stream, blob_dir, max_bytes)

        def blob(digest: str, what: str) -> bytes:
            """A manifest, index or config blob of the archive (already digest-checked)."""
            if digest not in received.blobs:
                raise OciError(f"the archive lacks {what} {digest}")
            path = blob_dir / digest[7:]
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise OciError(f"the archive's {what} {digest} is larger than {MAX_CONFIG_BYTES}")
            return path.read_bytes()

        entry = _pick_manifest(received.index, blob)
        manifest_bytes = blob(entry, "the image manifest")
        manifest = parse_manifest(manifest_bytes)
        config_bytes = blob(manifest.config.digest, "the image config")
        config = parse_config(config_bytes)
        _check_config(config, manifest)
        used = sum((blob_dir / d[7:]).stat().st_size for d in received.blobs)
        rootfs = RootfsWriter(dest / ROOTFS, max(max_bytes - used, 0))
        total = len(manifest.layers)
        for i, layer in enumerate(manifest.layers):
            what = f"layer {i + 1}/{total} ({layer.digest})"
            if layer.digest not in received.blobs:
                raise OciError(f"the archive lacks {what}")
            if (blob_dir / layer.digest[7:]).stat().st_size != layer.size:
                raise OciError(f"{what} does not have the size its descriptor says")
            _apply(rootfs, blob_dir / layer.digest[7:], layer, config.diff_ids[i], what)
            say(f"layer {i + 1}/{total} checked and unpacked")
        shutil.rmtree(blob_dir)
        return _environment(dest, manifest_bytes, entry, config_bytes, manifest, config, None)
    except BaseException:
        _cleanup_on_failure(dest)
        raise


def _pick_manifest(index_bytes: bytes, blob: Callable[[str, str], bytes]) -> str:
    """The digest of the archive's linux/amd64 image manifest (through one nested index)."""
    index = parse_index(index_bytes)
    if len(index.manifests) == 1 and index.manifests[0].media_type in MANIFEST_TYPES:
        return index.manifests[0].digest
    nested = [m for m in index.manifests if m.media_type in INDEX_TYPES]
    if len(index.manifests) == 1 and nested:
        inner = blob(nested[0].digest, "the image index")
        if media_type_of(inner) not in INDEX_TYPES:
            raise OciError(f"{nested[0].digest} is not an image index")
        return parse_index(inner).pick().digest
    return index.pick().digest
