"""OCI image-layout archives (``oci-layout``, ``index.json``, ``blobs/sha256/HEX``) as one
tar stream, read once.

Each blob is written to the blob directory while it is hashed, and must hash to its
own file name; ``index.json`` and ``oci-layout`` are kept in memory (bounded). A
``docker save`` archive of Docker 25 or later is such a layout too; its extra
``manifest.json`` and ``repositories`` are ignored. Older docker archives (layers
named by ID, no manifest) are refused: they carry no manifest digest to identify the
image by. Nothing else may be in the archive: no links, no other files.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aicert.oci_reference import SHA256_DIGEST

from .blobs import Reader, receive_blob
from .errors import OciError
from .media import MAX_MANIFEST_BYTES, Descriptor
from .tarheaders import BoundedTarInfo

LAYOUT_VERSION: Final = "1.0.0"
_IGNORED: Final = frozenset({"manifest.json", "repositories"})
_DIRECTORIES: Final = frozenset({"", "blobs", "blobs/sha256"})


@dataclass(frozen=True)
class ReceivedLayout:
    """What an archive held: its ``index.json`` and the digests of the blobs written."""

    index: bytes
    blobs: frozenset[str]


def _name(member: tarfile.TarInfo) -> str:
    name = member.name.removeprefix("./").rstrip("/")
    return "" if name == "." else name


def receive_layout(stream: Reader, blob_dir: Path, max_bytes: int) -> ReceivedLayout:
    """Read the layout tar ``stream``; blobs go to ``blob_dir/HEX``, at most ``max_bytes``."""
    index: bytes | None = None
    layout: bytes | None = None
    blobs: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo) as archive:  # type: ignore[call-overload]
            for member in archive:
                name = _name(member)
                if member.isdir() and name in _DIRECTORIES:
                    continue
                if not member.isreg():
                    raise OciError(f"the archive member {member.name[:200]!r} is not a file")
                data = archive.extractfile(member)
                assert data is not None  # noqa: S101 - regular members have data
                if name in ("index.json", "oci-layout"):
                    if member.size > MAX_MANIFEST_BYTES:
                        raise OciError(f"the archive's {name} is larger than {MAX_MANIFEST_BYTES}")
                    if name == "index.json":
                        index = data.read()
                    else:
                        layout = data.read()
                    continue
                if name in _IGNORED:
                    continue
                digest = "sha256:" + name.removeprefix("blobs/sha256/")
                if not name.startswith("blobs/sha256/") or not SHA256_DIGEST.fullmatch(digest):
                    raise OciError(
                        f"the archive member {member.name[:200]!r} is not part of an OCI "
                        "image layout (oci-layout, index.json, blobs/sha256/HEX); a docker "
                        "save archive of Docker before 25 is not one: convert it with "
                        "skopeo copy docker-archive:IN oci-archive:OUT"
                    )
                if digest in blobs:
                    raise OciError(f"the archive holds blob {digest} twice")
                total += member.size
                if total > max_bytes:
                    raise OciError(
                        f"the archive's blobs exceed {max_bytes} bytes: they do not fit the "
                        "scratch disk",
                        507,
                    )
                descriptor = Descriptor("", digest, member.size)
                receive_blob(data, blob_dir / digest[7:], descriptor, f"archive blob {digest}")
                blobs.add(digest)
    except tarfile.TarError as exc:
        raise OciError(f"the environment archive is not a well-formed tar stream: {exc}") from None
    if layout is None or index is None:
        raise OciError(
            "the archive is not an OCI image layout: it lacks "
            + ("oci-layout" if layout is None else "index.json")
            + " (make one with skopeo copy ... oci-archive:env.oci.tar)"
        )
    _check_layout(layout)
    return ReceivedLayout(index, frozenset(blobs))


def _check_layout(data: bytes) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("imageLayoutVersion") != LAYOUT_VERSION:
        raise OciError(f"the archive's oci-layout is not imageLayoutVersion {LAYOUT_VERSION}")
