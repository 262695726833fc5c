"""OCI images made in Python (real tar layers), a local docker-registry, and a pusher.

The registry is Debian's ``docker-registry`` (the CNCF distribution server) on
127.0.0.1 with its storage in a temporary directory; images reach it through the
distribution API's own upload endpoints (``POST /v2/NAME/blobs/uploads/``, ``PUT``
with ``?digest=``, ``PUT /v2/NAME/manifests/REF``), as any client would push them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tar member of a test layer."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    return Entry(name, data, tarfile.REGTYPE, mode=mode)


def directory(name: str) -> Entry:
    return Entry(name, kind=tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.LNKTYPE, linkname=target)


def layer_tar(entries: Sequence[Entry]) -> bytes:
    """An uncompressed layer holding ``entries`` in order (PAX format, fixed times)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            info.linkname = entry.linkname
            if entry.kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            info.size = len(entry.data) if entry.kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return out.getvalue()


@dataclass
class Image:
    """An image's blobs by digest, its manifest and its config."""

    manifest: bytes
    config: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in json.loads(self.manifest)["layers"]]


def make_image(
    layers: Sequence[bytes],
    *,
    compress: bool = True,
    config: dict[str, object] | None = None,
    architecture: str = "amd64",
) -> Image:
    """An OCI image of uncompressed ``layers`` (gzip-compressed when ``compress``)."""
    blobs: dict[str, bytes] = {}
    descriptors = []
    for layer in layers:
        blob = gzip.compress(layer, compresslevel=1, mtime=0) if compress else layer
        blobs[sha256(blob)] = blob
        descriptors.append(
            {
                "mediaType": LAYER_GZIP if compress else LAYER_TAR,
                "digest": sha256(blob),
                "size": len(blob),
            }
        )
    config_doc = {
        "architecture": architecture,
        "os": "linux",
        "config": config
        if config is not None
        else {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/work"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
    }
    config_bytes = json.dumps(config_doc, sort_keys=True).encode()
    blobs[sha256(config_bytes)] = config_bytes
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": descriptors,
    }
    return Image(json.dumps(manifest, sort_keys=True).encode(), config_bytes, blobs)


def make_index(images: dict[str, Image]) -> bytes:
    """An image index of ``images`` keyed by ``os/architecture``."""
    manifests = []
    for platform, image in images.items():
        os_name, arch = platform.split("/")
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": os_name, "architecture": arch},
            }
        )
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, sort_keys=True
    ).encode()


def layout_archive(image: Image, *, extra: Sequence[tuple[tarfile.TarInfo, bytes]] = ()) -> bytes:
    """The OCI image-layout tar of ``image`` (what ``skopeo copy ... oci-archive:`` writes)."""
    out = io.BytesIO()
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
        ],
    }
    members = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", json.dumps(index).encode()),
        *((f"blobs/sha256/{d[7:]}", b) for d, b in image.blobs.items()),
        (f"blobs/sha256/{image.digest[7:]}", image.manifest),
    ]
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info, data in extra:
            archive.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Registry:
    """A running docker-registry on 127.0.0.1 with storage under ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.host = f"127.0.0.1:{port}"

    # -- pushing -----------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        start = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        if start.status != 202:
            raise AssertionError(f"upload start answered {start.status}")
        location = urllib.parse.urlsplit(start.headers["Location"])
        query = f"{location.query}&" if location.query else ""
        done = self._request(
            "PUT",
            f"{location.path}?{query}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if done.status != 201:
            raise AssertionError(f"blob upload answered {done.status}")
        return digest

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        answer = self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", data, {"Content-Type": media_type}
        )
        if answer.status != 201:
            raise AssertionError(f"manifest push answered {answer.status}")

    def push(self, repository: str, image: Image, tag: str = "latest") -> str:
        """Push every blob, then the manifest under ``tag``; the reference by digest."""
        for data in image.blobs.values():
            self.push_blob(repository, data)
        self.push_manifest(repository, tag, image.manifest, image.media_type)
        return f"{self.host}/{repository}@{image.digest}"

    # -- tampering with the stored bytes -----------------------------------------------------

    def stored_blob(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


@contextlib.contextmanager
def running_registry(root: Path) -> Iterator[Registry]:
    """Start docker-registry on a free loopback port; stop it on exit."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: run scripts/install-host-deps.sh")
    port = free_port()
    storage = root / "storage"
    storage.mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v2/")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}"
                )
            time.sleep(0.1)
        yield Registry(storage, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
