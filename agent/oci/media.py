"""OCI image manifests, image indexes and image configs, parsed strictly from untrusted bytes.

Pure functions: bytes in, frozen dataclasses out, or an :class:`OciError` naming the
field. Sizes are bounded before parsing; every descriptor must carry a SHA-256 digest
and a size. Docker's schema 2 manifest and manifest list are the same structures
under other media types and are accepted too; schema 1 is not. Unknown fields are
ignored, as the image specification requires of readers.

Layers are plain or gzip-compressed tar. A zstd layer is refused by its media type, as
soon as the manifest is read and before any blob is fetched: the measured image has no
zstd decoder (the standard library has none before Python 3.14), and gzip is what
``aicert-build environment``, Docker and Podman write by default (docs/environments.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aicert import oci_reference

from .errors import OciError

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024  # the distribution spec's recommended limit
MAX_CONFIG_BYTES: Final = 8 * 1024 * 1024
MAX_LAYERS: Final = 1024
MAX_INDEX_ENTRIES: Final = 1024
MAX_BLOB_SIZE: Final = 2**53 - 1
MAX_ENV: Final = 4096
MAX_ARGS: Final = 4096

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES: Final = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES: Final = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES: Final = (OCI_CONFIG, DOCKER_CONFIG)
# Layer media type -> compression ("" for plain tar).
LAYER_TYPES: Final = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
PLATFORM: Final = ("linux", "amd64")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Layer(Descriptor):
    compression: str  # "" or "gzip"


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class IndexEntry(Descriptor):
    os: str
    architecture: str
    variant: str


@dataclass(frozen=True)
class ImageIndex:
    manifests: tuple[IndexEntry, ...]

    def pick(self, os: str = PLATFORM[0], architecture: str = PLATFORM[1]) -> IndexEntry:
        """The one image manifest for ``os``/``architecture`` (linux/amd64 by default)."""
        found = [
            m
            for m in self.manifests
            if m.media_type in MANIFEST_TYPES and (m.os, m.architecture) == (os, architecture)
        ]
        if not found:
            have = sorted({f"{m.os}/{m.architecture}" for m in self.manifests if m.os})
            raise OciError(
                f"the image index has no {os}/{architecture} image"
                + (f" (it has {', '.join(have)})" if have else "")
            )
        if len(found) > 1 and len({m.digest for m in found}) > 1:
            raise OciError(f"the image index lists several {os}/{architecture} images")
        return found[0]


@dataclass(frozen=True)
class ImageConfig:
    """The fields of the image configuration a runtime needs, and the layers' diff IDs."""

    os: str
    architecture: str
    env: tuple[str, ...]
    working_dir: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    diff_ids: tuple[str, ...]


def check_digest(value: str, what: str) -> str:
    """``value`` if it is a sha256 digest; otherwise the intake's own refusal."""
    try:
        return oci_reference.check_digest(value, what)
    except oci_reference.ImageReferenceError as exc:
        raise OciError(exc.message) from None


def _load(data: bytes, limit: int, what: str) -> Mapping[str, Any]:
    if len(data) > limit:
        raise OciError(f"the {what} is {len(data)} bytes, more than the {limit} allowed")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OciError(f"the {what} is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise OciError(f"the {what} is not a JSON object")
    return doc


def _no_constant(name: str) -> object:
    raise ValueError(name)


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str, default: object = None) -> Any:
    """``obj[key]`` of type ``kind``; absent or null gives ``default`` (None: required)."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise OciError(f"{where}: {key} is missing")
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise OciError(f"{where}: {key} must be {_KINDS.get(kind, kind.__name__)}")
    return value


_KINDS: Final[dict[type, str]] = {str: "a string", int: "an integer", dict: "an object"}


def _strings(obj: Mapping[str, Any], key: str, where: str, limit: int) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and "\x00" not in v for v in value)
    ):
        raise OciError(f"{where}: {key} must be an array of at most {limit} strings")
    return tuple(value)


def _descriptor(raw: object, where: str) -> tuple[str, str, int]:
    if not isinstance(raw, dict):
        raise OciError(f"{where} must be a descriptor object")
    media_type = _get(raw, "mediaType", str, where)
    digest = check_digest(_get(raw, "digest", str, where), f"{where} digest")
    size = _get(raw, "size", int, where)
    if not 0 <= size <= MAX_BLOB_SIZE:
        raise OciError(f"{where}: size {size} is out of range")
    if raw.get("urls"):
        raise OciError(f"{where} is a foreign layer (urls): only registry blobs are pulled")
    return media_type, digest, size


def _schema(doc: Mapping[str, Any], media_types: tuple[str, ...], what: str) -> None:
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise OciError(f"the {what} must have schemaVersion 2")
    media_type = doc.get("mediaType")
    if media_type is not None and media_type not in media_types:
        raise OciError(f"the {what} has media type {str(media_type)[:100]!r}")


def parse_manifest(data: bytes) -> ImageManifest:
    doc = _load(data, MAX_MANIFEST_BYTES, "image manifest")
    _schema(doc, MANIFEST_TYPES, "image manifest")
    config_type, config_digest, config_size = _descriptor(doc.get("config"), "config")
    if config_type not in CONFIG_TYPES:
        raise OciError(f"config has media type {config_type[:100]!r}, not an image config")
    if config_size > MAX_CONFIG_BYTES:
        raise OciError(f"the image config is {config_size} bytes, more than {MAX_CONFIG_BYTES}")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list) or len(raw_layers) > MAX_LAYERS:
        raise OciError(f"layers must be an array of at most {MAX_LAYERS} descriptors")
    layers = []
    for i, raw in enumerate(raw_layers):
        media_type, digest, size = _descriptor(raw, f"layers[{i}]")
        if media_type == LAYER_ZSTD:
            raise OciError(
                f"layers[{i}] has media type {LAYER_ZSTD!r}: zstd layers are not supported; "
                "push the image with gzip layers (skopeo copy --dest-compress-format gzip)"
            )
        if media_type not in LAYER_TYPES:
            raise OciError(f"layers[{i}] has media type {media_type[:100]!r}, not a tar layer")
        layers.append(Layer(media_type, digest, size, LAYER_TYPES[media_type]))
    return ImageManifest(Descriptor(config_type, config_digest, config_size), tuple(layers))


def parse_index(data: bytes) -> ImageIndex:
    doc = _load(data, MAX_MANIFEST_BYTES, "image index")
    _schema(doc, INDEX_TYPES, "image index")
    raw_entries = doc.get("manifests")
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_INDEX_ENTRIES:
        raise OciError(f"manifests must be an array of at most {MAX_INDEX_ENTRIES} descriptors")
    entries = []
    for i, raw in enumerate(raw_entries):
        where = f"manifests[{i}]"
        media_type, digest, size = _descriptor(raw, where)
        platform = raw.get("platform", {})
        if not isinstance(platform, dict):
            raise OciError(f"{where}: platform must be an object")
        entries.append(
            IndexEntry(
                media_type,
                digest,
                size,
                _get(platform, "os", str, where, ""),
                _get(platform, "architecture", str, where, ""),
                _get(platform, "variant", str, where, ""),
            )
        )
    return ImageIndex(tuple(entries))


def media_type_of(data: bytes) -> str:
    """The media type a manifest or index declares, or one its fields imply."""
    doc = _load(data, MAX_MANIFEST_BYTES, "manifest")
    media_type = doc.get("mediaType")
    if isinstance(media_type, str):
        return media_type
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    raise OciError("the manifest is neither an image manifest nor an image index")


def parse_config(data: bytes) -> ImageConfig:
    doc = _load(data, MAX_CONFIG_BYTES, "image config")
    where = "image config"
    config = _get(doc, "config", dict, where, {})
    rootfs = _get(doc, "rootfs", dict, where)
    if rootfs.get("type") != "layers":
        raise OciError(f"{where}: rootfs.type must be 'layers'")
    diff_ids = _strings(rootfs, "diff_ids", f"{where} rootfs", MAX_LAYERS)
    for i, diff_id in enumerate(diff_ids):
        check_digest(diff_id, f"{where} rootfs.diff_ids[{i}]")
    env = _strings(config, "Env", f"{where} config", MAX_ENV)
    if any("=" not in e for e in env):
        raise OciError(f"{where} config: every Env entry must be NAME=VALUE")
    return ImageConfig(
        os=_get(doc, "os", str, where),
        architecture=_get(doc, "architecture", str, where),
        env=env,
        working_dir=_get(config, "WorkingDir", str, f"{where} config", ""),
        entrypoint=_strings(config, "Entrypoint", f"{where} config", MAX_ARGS),
        cmd=_strings(config, "Cmd", f"{where} config", MAX_ARGS),
        user=_get(config, "User", str, f"{where} config", ""),
        diff_ids=diff_ids,
    )
