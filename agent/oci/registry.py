"""A client of the OCI distribution API that pulls by digest only.

``GET /v2/NAME/manifests/DIGEST`` and ``GET /v2/NAME/blobs/DIGEST``, over HTTPS with
the system's trust store (plain HTTP only for registries named in ``plain_http``;
every byte is digest-checked either way, so plain HTTP costs privacy, not integrity).
A registry that answers 401 with a ``Bearer`` challenge gets the anonymous token
flow (``GET realm?service=...&scope=repository:NAME:pull``); a login is never sent.
Redirects (blob storage) are followed, to https only from https, and the token is not
sent along. Manifests are read into memory (bounded) and checked against the digest
asked for; blobs stream to the scratch disk through :func:`.blobs.receive_blob`.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import IO, Any, Final

from aicert.oci_reference import ImageReference

from .blobs import check_end, read_blob, receive_blob
from .errors import OciError
from .media import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    media_type_of,
    parse_index,
)

TIMEOUT: Final = 120.0
MAX_TOKEN_BYTES: Final = 64 * 1024
ACCEPT_MANIFESTS: Final = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
_CHALLENGE_PARAM: Final = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class PulledManifest:
    """The image manifest for linux/amd64 (through an index, if the digest named one)."""

    data: bytes
    digest: str
    index_digest: str | None


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            raise OciError(f"the registry redirects {req.full_url} to {newurl}: refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RegistryClient:
    """Anonymous pulls from one registry, for one repository at a time."""

    def __init__(
        self,
        reference: ImageReference,
        *,
        plain_http: frozenset[str] = frozenset(),
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.reference = reference
        scheme = "http" if reference.registry in plain_http else "https"
        self.base = f"{scheme}://{reference.api_host}/v2/{reference.repository}"
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context or ssl.create_default_context()),
            _NoDowngrade(),
        )
        self._token: str | None = None

    # -- requests ----------------------------------------------------------------------------

    def _open(self, url: str, accept: str, what: str) -> HTTPResponse:
        for attempt in range(2):
            # The URL is built from the base (http or https) and a checked digest.
            request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
            if self._token is not None:
                # Unredirected: blob storage elsewhere never sees the registry's token.
                request.add_unredirected_header("Authorization", f"Bearer {self._token}")
            try:
                response: HTTPResponse = self._opener.open(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "")
                exc.close()
                # A first 401 asks for a token, or a fresh one (they expire mid-pull).
                if exc.code == 401 and attempt == 0:
                    self._token = self._fetch_token(challenge)
                    continue
                raise self._refused(exc.code, what) from None
            except OciError:
                raise
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise OciError(f"cannot reach the registry for {what}: {reason}", 502) from None
            return response
        raise OciError(f"the registry refused the pull token for {what}", 502)

    def _refused(self, code: int, what: str) -> OciError:
        if code == 404:
            return OciError(
                f"the registry has no {what} (HTTP 404): check the image reference {self.reference}"
            )
        if code in (401, 403):
            return OciError(
                f"the registry refuses an anonymous pull of {what} (HTTP {code}): "
                "only public images can be pulled; upload the image as an archive instead"
            )
        return OciError(f"the registry answered HTTP {code} for {what}", 502)

    def _fetch_token(self, challenge: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise OciError(
                f"the registry {self.reference.registry} asks for a login ({scheme or 'no'} "
                "challenge): only anonymous pulls are supported"
            )
        params = dict(_CHALLENGE_PARAM.findall(rest))
        realm = params.get("realm", "")
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise OciError(f"the registry's token realm {realm[:200]!r} is not an http(s) URL")
        if self.base.startswith("https:") and not realm.startswith("https:"):
            raise OciError(f"the registry's token realm {realm[:200]!r} is not https")
        scope = params.get("scope") or f"repository:{self.reference.repository}:pull"
        query = {"scope": scope} | ({"service": params["service"]} if "service" in params else {})
        url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(query)}"
        try:
            with self._opener.open(url, timeout=TIMEOUT) as response:
                body = response.read(MAX_TOKEN_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise OciError(f"the registry's token service answered HTTP {exc.code}", 502) from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise OciError(f"cannot reach the registry's token service: {reason}", 502) from None
        try:
            doc = json.loads(body) if len(body) <= MAX_TOKEN_BYTES else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token.isascii() or not token.isprintable():
            raise OciError("the registry's token service did not answer with a token", 502)
        return token

    # -- manifests ---------------------------------------------------------------------------

    def _manifest_bytes(self, descriptor: Descriptor, what: str) -> bytes:
        url = f"{self.base}/manifests/{descriptor.digest}"
        with self._open(url, ACCEPT_MANIFESTS, what) as response:
            data = read_blob(response, descriptor, what)
            check_end(response, descriptor, what)
        return data

    def manifest(self) -> PulledManifest:
        """The image manifest the reference's digest names, or the linux/amd64 one of the
        image index it names; each checked against its digest."""
        digest = self.reference.digest
        first = self._unsized_manifest(digest)
        media_type = media_type_of(first)
        if media_type in MANIFEST_TYPES:
            return PulledManifest(first, digest, None)
        if media_type not in INDEX_TYPES:
            raise OciError(f"{digest} is a {media_type[:100]!r}, not an image or an index")
        entry = parse_index(first).pick()
        data = self._manifest_bytes(entry, f"the linux/amd64 manifest {entry.digest}")
        if media_type_of(data) not in MANIFEST_TYPES:
            raise OciError(f"the index entry {entry.digest} is not an image manifest")
        return PulledManifest(data, entry.digest, digest)

    def _unsized_manifest(self, digest: str) -> bytes:
        """The manifest a reference names, whose size is known only from the answer."""
        what = f"manifest {digest}"
        with self._open(f"{self.base}/manifests/{digest}", ACCEPT_MANIFESTS, what) as response:
            data = response.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise OciError(f"{what} is larger than {MAX_MANIFEST_BYTES} bytes")
        return read_blob(_Bytes(data), Descriptor("", digest, len(data)), what)

    # -- blobs -------------------------------------------------------------------------------

    def read_small_blob(self, descriptor: Descriptor, what: str) -> bytes:
        with self._open(f"{self.base}/blobs/{descriptor.digest}", "*/*", what) as response:
            data = read_blob(response, descriptor, what)
            check_end(response, descriptor, what)
        return data

    def download_blob(
        self, descriptor: Descriptor, dest: Path, what: str, stop: threading.Event | None = None
    ) -> None:
        with self._open(f"{self.base}/blobs/{descriptor.digest}", "*/*", what) as response:
            receive_blob(response, dest, descriptor, what, stop)
            check_end(response, descriptor, what)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, size: int = -1, /) -> bytes:
        size = len(self._view) if size < 0 else size
        part, self._view = self._view[:size], self._view[size:]
        return bytes(part)
