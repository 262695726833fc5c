"""Image references by digest: ``REGISTRY[:PORT]/NAME[:TAG]@sha256:HEX``.

The registry must be named (no implicit Docker Hub), the digest is required (a tag
alone names bytes that can change), and the name follows the distribution spec's
repository grammar. ``docker.io`` is reached at ``registry-1.docker.io``.

Shared by the builder (the job file names an image) and the agent (it pulls one), so it
lives beside them, not in either.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from aicert.verifier.errors import FormatError


class ImageReferenceError(FormatError):
    """An image reference that does not name one image by digest."""


MAX_REFERENCE: Final = 1024
# The distribution spec's repository name: path components of lowercase alphanumerics
# joined by '.', '_', '__' or runs of '-', separated by '/'.
_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
SHA256_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_API_HOSTS: Final = {"docker.io": "registry-1.docker.io"}
_PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


@dataclass(frozen=True)
class ImageReference:
    """A pull by digest; ``tag`` is informative only (the digest decides)."""

    registry: str
    repository: str
    digest: str
    tag: str = ""

    @property
    def api_host(self) -> str:
        """The host (and port) that serves the registry's ``/v2/`` API."""
        return _API_HOSTS.get(self.registry, self.registry)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.registry}/{self.repository}{tag}@{self.digest}"

    def purl(self, *, plain_http: bool = False) -> str:
        """The package URL of the image (purl type ``oci``): the last name component, the
        digest as version, and the full repository as ``repository_url``, in the canonical
        form (``:`` and ``/`` unescaped, as packageurl-python writes it). A pull over plain
        HTTP says so: its ``repository_url`` starts with ``http://``."""
        name = self.repository.rsplit("/", 1)[-1]
        scheme = "http://" if plain_http else ""
        return (
            f"pkg:oci/{name}@{self.digest}?repository_url={scheme}{self.registry}/{self.repository}"
        )


def check_plain_http_registry(registry: str) -> str:
    """``registry`` if a job may pull from it over plain HTTP: an IP address (no name to
    resolve) that is loopback, link-local or private (RFC 1918, IPv6 unique local), so
    never a registry across the internet. Every byte is still checked against its digest;
    what plain HTTP gives up is confidentiality on that local link."""
    if registry.startswith("["):
        host = registry[1:].partition("]")[0]
    else:
        host = registry.partition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not (
        address.is_loopback
        or address.is_link_local
        or any(address.version == n.version and address in n for n in _PRIVATE_NETWORKS)
    ):
        raise ImageReferenceError(
            f"registry {registry!r}: plain HTTP is allowed only for a loopback, link-local "
            "or private IP address (a local test registry); use HTTPS for any other"
        )
    return registry


def check_digest(value: str, what: str) -> str:
    """``value`` if it is ``sha256:`` and 64 lowercase hex digits; other algorithms are
    refused (the measurement is SHA-256)."""
    if not SHA256_DIGEST.fullmatch(value):
        raise ImageReferenceError(
            f"{what} must be sha256: and 64 lowercase hex digits, not {value[:80]!r}"
        )
    return value


def parse_reference(text: str) -> ImageReference:
    """Parse ``text``; an :class:`ImageReferenceError` saying what is wrong and what to write."""
    if not text or len(text) > MAX_REFERENCE or not text.isprintable() or " " in text:
        raise ImageReferenceError("an image reference is REGISTRY/NAME@sha256:DIGEST on one line")
    if "://" in text:
        raise ImageReferenceError(
            f"image {text!r}: write the reference without a scheme (REGISTRY/NAME@sha256:DIGEST)"
        )
    name, at, digest = text.partition("@")
    if not at:
        raise ImageReferenceError(
            f"image {text!r} has no digest: pulls are by digest only; "
            "write REGISTRY/NAME@sha256:DIGEST (skopeo inspect shows the digest of a tag)"
        )
    check_digest(digest, f"the digest of image {name!r}")
    registry, slash, path = name.partition("/")
    if not slash or not ("." in registry or ":" in registry or registry == "localhost"):
        raise ImageReferenceError(
            f"image {text!r} does not name its registry: write e.g. "
            f"docker.io/{name if slash else 'library/' + name}@{digest}"
        )
    if not _HOST.fullmatch(registry):
        raise ImageReferenceError(f"image {text!r}: {registry!r} is not a registry host[:port]")
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not TAG.fullmatch(tag):
            raise ImageReferenceError(f"image {text!r}: {tag!r} is not a valid tag")
    if not REPOSITORY.fullmatch(path) or len(path) > 255:
        raise ImageReferenceError(
            f"image {text!r}: {path!r} is not a repository name "
            "(lowercase letters, digits and separators . _ - /)"
        )
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"  # Docker Hub's official images live under library/
    return ImageReference(registry, path, digest, tag)
