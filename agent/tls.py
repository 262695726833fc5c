"""The agent's TLS identity: a self-signed certificate for the attested agent key.

Nobody has to trust this certificate's issuer. A client trusts the *key*, because the
attestation proves (PCR 15's first CEL record, ``agent-start``) that the agent of this
measured boot holds it; the client then pins the key's SubjectPublicKeyInfo on every
connection ("attested TLS"). The certificate only carries the key into the handshake.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

COMMON_NAME = "aicert-agent"
VALIDITY = datetime.timedelta(days=30)
# Clients do not check the validity period, but TLS libraries may: tolerate a guest clock
# that lags the client's.
CLOCK_SKEW = datetime.timedelta(hours=1)


def self_signed_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed server certificate for ``key`` (CN and DNS name ``aicert-agent``)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(COMMON_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def server_context(key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``key`` with its self-signed certificate.

    ``ssl`` loads keys only from files: they are written to a private temporary directory
    and removed as soon as the context holds them.
    """
    cert = self_signed_certificate(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="aicert-tls-") as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        with open(cert_path, "wb") as out:
            out.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context.load_cert_chain(cert_path, key_path)
    return context
