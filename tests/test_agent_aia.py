"""AIA chain completion: the agent follows "CA Issuers" links over real HTTP.

The chain is shaped like Azure's newer vTPM hierarchy: AK certificate -> "CA - 11" ->
"CA 2025" -> root, each naming its issuer's URL. A local HTTP server plays the CDN.
"""

from __future__ import annotations

import datetime
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aicert.agent.aia import (
    FetchError,
    http_get,
    issuer_urls,
    parse_certificates,
    walk_chain,
)
from aicert.agent.server import load_intermediates
from aicert.builder.platforms.local import pki_responder
from aicert.verifier.errors import FormatError, InputError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Cdn:
    """An HTTP server answering paths from ``files``; ``requests`` lists what was asked."""

    base: str
    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def cdn() -> Iterator[Cdn]:
    state = Cdn("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            status, body = state.files.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _cert(
    name: str, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None, urls: tuple[str, ...] = ()
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
    )
    if urls:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.example/"),
                    ),
                    *(
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(url),
                        )
                        for url in urls
                    ),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class AzureShapedChain:
    root: x509.Certificate
    ca_2025: x509.Certificate
    ca_11: x509.Certificate
    leaf: x509.Certificate


def _azure_shaped(cdn: Cdn, *, ca_11_url: str = "/ca-11.crt") -> AzureShapedChain:
    root, root_key = _cert("Root 2023", None)
    ca_2025, key_2025 = _cert("CA 2025", ("Root 2023", root_key), (f"{cdn.base}/root.crt",))
    ca_11, key_11 = _cert("CA - 11", ("CA 2025", key_2025), (f"{cdn.base}/ca-2025.crt",))
    leaf, _ = _cert("vm.TrustedVM", ("CA - 11", key_11), ("ldap://x/ca", f"{cdn.base}{ca_11_url}"))
    cdn.files.update(
        {
            "/root.crt": (200, _der(root)),
            "/ca-2025.crt": (200, ca_2025.public_bytes(serialization.Encoding.PEM)),
            "/ca-11.crt": (200, _der(ca_11)),
        }
    )
    return AzureShapedChain(root, ca_2025, ca_11, leaf)


def test_the_walk_follows_every_link_up_to_the_root(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn)
    walk = walk_chain(_der(chain.leaf), ())
    assert walk.fetched == (_der(chain.ca_11), _der(chain.ca_2025), _der(chain.root))
    assert walk.problems == ()
    assert cdn.requests == ["/ca-11.crt", "/ca-2025.crt", "/root.crt"]


def test_known_certificates_are_not_fetched(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn)
    walk = walk_chain(_der(chain.leaf), [_der(chain.ca_11)])
    assert walk.fetched == (_der(chain.ca_2025), _der(chain.root))
    assert cdn.requests == ["/ca-2025.crt", "/root.crt"]


def test_a_certificate_without_links_ends_the_walk_quietly(cdn: Cdn) -> None:
    _root, root_key = _cert("Global Root", None)
    ca_03, key_03 = _cert("Global Virtual TPM CA - 03", ("Global Root", root_key))
    leaf, _ = _cert("vm.TrustedVM", ("Global Virtual TPM CA - 03", key_03))
    assert walk_chain(_der(leaf), ()) == walk_chain(_der(leaf), [_der(ca_03)])
    assert walk_chain(_der(leaf), ()).problems == ()
    assert cdn.requests == []


def test_a_pkcs7_response_is_understood(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn)
    bundle = pkcs7.serialize_certificates([chain.ca_11], serialization.Encoding.DER)
    cdn.files["/ca-11.crt"] = (200, bundle)
    assert walk_chain(_der(chain.leaf), ()).fetched[0] == _der(chain.ca_11)


def test_a_missing_issuer_is_reported_and_not_retried(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn, ca_11_url="/gone.crt")
    walk = walk_chain(_der(chain.leaf), (), budget=5)
    assert walk.fetched == ()
    (problem,) = walk.problems
    assert problem.startswith("CN=CA - 11: ")
    assert problem.endswith("/gone.crt: HTTP 404")
    assert cdn.requests == ["/gone.crt"]


def test_the_wrong_certificate_is_not_taken(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn)
    cdn.files["/ca-11.crt"] = (200, _der(chain.ca_2025))
    walk = walk_chain(_der(chain.leaf), ())
    assert walk.fetched == ()
    assert walk.problems == (
        f"CN=CA - 11: {cdn.base}/ca-11.crt served no certificate of that name",
    )


def test_an_unreachable_server_is_retried_within_the_budget() -> None:
    leaf, _ = _cert(
        "leaf", ("CA", ec.generate_private_key(ec.SECP256R1())), ("http://127.0.0.1:9/ca",)
    )
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        time.sleep(seconds)

    walk = walk_chain(_der(leaf), (), budget=2.5, sleep=nap)
    assert walk.fetched == ()
    assert len(walk.problems) == 1
    assert "127.0.0.1:9/ca" in walk.problems[0]
    assert 1 <= len(naps) <= 2  # retried, then given up once the budget was spent


def test_a_malformed_ak_certificate_is_reported_not_raised() -> None:
    walk = walk_chain(b"\x30\x03\x02\x01\x00", ())
    assert walk.fetched == ()
    (problem,) = walk.problems
    assert problem.startswith("the AK certificate or a known one is not DER X.509")


def test_an_oversized_response_is_refused(cdn: Cdn) -> None:
    cdn.files["/big"] = (200, b"x" * (64 * 1024 + 1))
    with pytest.raises(FetchError, match="more than 65536 bytes") as refused:
        http_get(f"{cdn.base}/big")
    assert not refused.value.retry


def test_issuer_urls_keep_only_http_ca_issuers(cdn: Cdn) -> None:
    chain = _azure_shaped(cdn)
    assert issuer_urls(chain.leaf) == (f"{cdn.base}/ca-11.crt",)
    assert issuer_urls(chain.root) == ()


@given(st.binary(max_size=300))
def test_parsing_any_response_fails_only_with_format_error(body: bytes) -> None:
    try:
        certificates = parse_certificates(body)
    except FormatError:
        return
    assert all(isinstance(c, x509.Certificate) for c in certificates)


def test_the_local_pki_responder_answers_after_reading_the_request(tmp_path: Path) -> None:
    certificate = _der(_cert("CA", None)[0])
    path = tmp_path / "ca.der"
    path.write_bytes(certificate)
    answer = subprocess.run(
        [sys.executable, "-m", pki_responder.__name__, str(path)],
        input=b"GET /certs/ca.crt HTTP/1.1\r\nHost: 10.0.2.100\r\n\r\n",
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert f"Content-Length: {len(certificate)}".encode() in head
    assert body == certificate


def test_intermediates_from_a_directory_share_the_parser(tmp_path: Path) -> None:
    first, second, third = (_cert(f"CA {i}", None)[0] for i in range(3))
    (tmp_path / "a.pem").write_bytes(first.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "b.der").write_bytes(_der(second))
    (tmp_path / "c.crt").write_bytes(
        pkcs7.serialize_certificates([third], serialization.Encoding.DER)
    )
    (tmp_path / "notes.txt").write_text("not a certificate, and not read")
    assert load_intermediates(tmp_path) == (_der(first), _der(second), _der(third))
    (tmp_path / "d.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(InputError, match=r"d\.pem is not an X\.509 certificate"):
        load_intermediates(tmp_path)
