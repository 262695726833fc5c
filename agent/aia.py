"""Complete the AK certificate's chain from "CA Issuers" links (AIA), inside the VM.

Azure runs more than one vTPM CA generation. AK certificates issued by "Global Virtual
TPM CA - 03" carry no AIA extension (the verifier bundles that CA); those issued by
"Azure Cloud Virtual TPM CA - 11" name a URL for their issuer, whose certificate names
one for "Azure Cloud Virtual TPM CA 2025", which the Azure root signed. At start the
agent follows these links until it reaches a certificate it already has or a
self-issued one, so that every quote carries the chain and verifiers need no network.

What is fetched is chain-building material only: the verifier trusts nothing but its
roots, so a wrong or hostile download can make verification fail, never pass. A fetch
that fails is reported, not fatal: the owner may still hand in the intermediates
when claiming the session.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aicert.verifier.errors import FormatError, InputError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

MAX_CHAIN: Final = 6
MAX_RESPONSE_BYTES: Final = 64 * 1024
FETCH_TIMEOUT: Final = 10.0


class FetchError(InputError):
    """An issuer URL could not be fetched; ``retry`` when the network may come up later."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class ChainWalk:
    """The certificates fetched (DER, leaf-most first) and what could not be fetched."""

    fetched: tuple[bytes, ...]
    problems: tuple[str, ...]


def issuer_urls(certificate: x509.Certificate) -> tuple[str, ...]:
    """The http(s) "CA Issuers" URLs of ``certificate``'s AIA extension, in order."""
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith(("http://", "https://"))
    )


def parse_certificates(body: bytes) -> tuple[x509.Certificate, ...]:
    """The certificates in an AIA response or a file: DER or PEM certificates, or DER
    PKCS#7 (as some CAs serve their AIA links)."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return tuple(x509.load_pem_x509_certificates(body))
        try:
            return (x509.load_der_x509_certificate(body),)
        except ValueError:
            return tuple(pkcs7.load_der_pkcs7_certificates(body))
    except ValueError as exc:
        raise FormatError(f"not a certificate, PEM or PKCS#7 response ({exc})") from None


def http_get(url: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The body at ``url`` (at most 64 KiB); FetchError says whether retrying may help."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, see issuer_urls
            body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code}", retry=exc.code >= 500) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: {reason}", retry=True) from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise FetchError(f"{url}: more than {MAX_RESPONSE_BYTES} bytes", retry=False)
    return body


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def walk_chain(
    leaf: bytes,
    known: Sequence[bytes],
    *,
    fetch: Callable[[str], bytes] = http_get,
    budget: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ChainWalk:
    """Fetch the issuers of ``leaf`` that ``known`` lacks, following AIA links.

    Network failures are retried for ``budget`` seconds in all (the VM's network may
    still be coming up); a link that fails or serves no certificate of the issuer's
    name is reported in ``problems`` and ends the walk, as does a certificate without
    links.
    """
    deadline = time.monotonic() + budget
    try:
        current = x509.load_der_x509_certificate(leaf)
        pool = [x509.load_der_x509_certificate(d) for d in known]
    except ValueError as exc:
        # The verifier refuses such a chain anyway; nothing here can follow it.
        return ChainWalk((), (f"the AK certificate or a known one is not DER X.509: {exc}",))
    fetched: list[bytes] = []
    problems: list[str] = []
    for _ in range(MAX_CHAIN):
        if current.issuer == current.subject:
            break
        issuer = next((c for c in pool if c.subject == current.issuer), None)
        if issuer is None:
            issuer, failures = _fetch_issuer(current, fetch, deadline, sleep)
            if issuer is None:
                problems += failures
                break
            pool.append(issuer)
            fetched.append(_der(issuer))
        current = issuer
    return ChainWalk(tuple(fetched), tuple(problems))


def _fetch_issuer(
    certificate: x509.Certificate,
    fetch: Callable[[str], bytes],
    deadline: float,
    sleep: Callable[[float], None],
) -> tuple[x509.Certificate | None, list[str]]:
    urls = issuer_urls(certificate)
    wanted = certificate.issuer.rfc4514_string()
    if not urls:
        # Nothing to follow: a root (the verifier's own anchor) or an intermediate the
        # verifier bundles, as Azure's "Global Virtual TPM CA - 03".
        return None, []
    failures: list[str] = []
    pending = list(urls)
    while pending:
        retry_later = []
        for url in pending:
            try:
                found = parse_certificates(fetch(url))
            except FetchError as exc:
                failures.append(f"{wanted}: {exc.message}")
                if exc.retry:
                    retry_later.append(url)
                continue
            except FormatError as exc:
                failures.append(f"{wanted}: {url}: {exc.message}")
                continue
            match = next((c for c in found if c.subject == certificate.issuer), None)
            if match is not None:
                return match, []
            failures.append(f"{wanted}: {url} served no certificate of that name")
        if not retry_later or time.monotonic() + 1.0 > deadline:
            break
        sleep(1.0)
        pending = retry_later
    return None, failures[-len(urls) :]
