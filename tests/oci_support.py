"""OCI images made in Python (real tar layers), a local docker-registry, and a pusher.

The registry is Debian's ``docker-registry`` (the CNCF distribution server) on
127.0.0.1 with its storage in a temporary directory; images reach it through the
distribution API's own upload endpoints (``POST /v2/NAME/blobs/uploads/``, ``PUT``
with ``?digest=``, ``PUT /v2/NAME/manifests/REF``), as any client would push them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import hashlib
import http.client
import http.server
import io
import ipaddress
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A registry token service (the distribution spec's bearer-token flow) on 127.0.0.1:
    ES256 JWTs whose x5c names a self-signed certificate the registry trusts. Anonymous
    requests get pull access; ``push_token`` is for the test's own pusher."""

    SERVICE = "aicert-test-registry"
    ISSUER = "aicert-test-issuer"

    def __init__(self, directory: Path, *, refuse: bool = False) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aicert test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-signer.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.refuse = refuse
        self.requests: list[tuple[str, dict[str, str]]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                service.requests.append((url.path, dict(self.headers.items()) | query))
                if service.refuse:
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                _, name, actions = query.get("scope", "repository::").split(":")
                pulls = [a for a in actions.split(",") if a == "pull"]
                body = json.dumps({"token": service.token(name, pulls)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, repository: str, actions: list[str]) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": "",
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [{"type": "repository", "name": repository, "actions": actions}],
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def loopback_tls(directory: Path) -> tuple[Path, Path, bytes]:
    """A certificate for 127.0.0.1 and its key (PEM files), and the PEM of the CA that
    issued it (trusted by a test's client only)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aicert test registry CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "registry.crt", directory / "registry.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


class Registry:
    """A running docker-registry on 127.0.0.1 with storage under ``root``."""

    def __init__(
        self,
        root: Path,
        port: int,
        tokens: TokenService | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = root
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.tokens = tokens
        self.tls = tls

    def _connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    # -- pushing -----------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        headers = dict(headers or {})
        if self.tokens is not None:
            found = re.match(r"/v2/(.+?)/(?:blobs|manifests)/", path)
            repository = found.group(1) if found else ""
            token = self.tokens.token(repository, ["pull", "push"])
            headers["Authorization"] = f"Bearer {token}"
        conn = self._connection()
        conn.request(method, path, body=body, headers=headers)
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
def running_registry(
    root: Path, tokens: TokenService | None = None, *, tls: bool = False
) -> Iterator[Registry]:
    """Start docker-registry on a free loopback port (behind ``tokens``' bearer-token
    auth when given; over HTTPS with a test CA, ``Registry.tls``, when ``tls``); stop it
    on exit."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: run scripts/install-host-deps.sh")
    port = free_port()
    storage = root / "storage"
    storage.mkdir(parents=True)
    config = root / "config.yml"
    auth = (
        ""
        if tokens is None
        else f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {tokens.SERVICE}\n"
        f"    issuer: {tokens.ISSUER}\n    rootcertbundle: {tokens.bundle}\n"
    )
    client_tls: ssl.SSLContext | None = None
    http_tls = ""
    if tls:
        cert, key, ca = loopback_tls(root)
        client_tls = ssl.create_default_context(cadata=ca.decode())
        http_tls = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + http_tls + auth
    )
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    registry = Registry(storage, port, tokens, client_tls)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = registry._connection(timeout=2)
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    conn.close()
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}"
                )
            time.sleep(0.1)
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
