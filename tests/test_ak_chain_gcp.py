"""Google's EK/AK CA, bundled for GCE Shielded VM AK certificates."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from aicert.verifier.ak_chain import bundled_intermediates, bundled_roots, verify_ak_chain
from aicert.verifier.errors import AkChainError
from aicert.verifier.tpm2_structures import parse_tpmt_public
from aicert.verifier.verify import root_of_trust
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm_wire_builders import tpmt_public

ROOT_SHA256 = "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2"
INTERMEDIATE_SHA256 = "c84de8116dfaf5a908f21e810487791f5437e206d00ad8025050cca6bd2ff627"
AT = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def _by_fingerprint(certs: list[x509.Certificate], fingerprint: str) -> x509.Certificate:
    (cert,) = [c for c in certs if c.fingerprint(hashes.SHA256()).hex() == fingerprint]
    return cert


def _cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def test_google_root_and_intermediate_are_bundled_and_chain() -> None:
    root = _by_fingerprint(bundled_roots(), ROOT_SHA256)
    intermediate = _by_fingerprint(bundled_intermediates(), INTERMEDIATE_SHA256)
    assert _cn(root) == "EK/AK CA Root"
    assert _cn(intermediate) == "EK/AK CA Intermediate"
    root.verify_directly_issued_by(root)
    intermediate.verify_directly_issued_by(root)
    assert root.not_valid_after_utc.year == 2122
    assert root_of_trust(root).hardware


def test_a_leaf_from_a_lookalike_intermediate_does_not_chain_to_google() -> None:
    """A CA that copies the intermediate's name but not its key cannot issue GCE AK
    certificates: the signature check against the bundled intermediate fails."""
    real = _by_fingerprint(bundled_intermediates(), INTERMEDIATE_SHA256)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ak_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gce-vm")]))
        .issuer_name(real.subject)
        .public_key(ak_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - datetime.timedelta(days=1))
        .not_valid_after(AT + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ak = parse_tpmt_public(tpmt_public(ak_key.public_key()))
    with pytest.raises(AkChainError, match="does not chain to a trusted root"):
        verify_ak_chain(leaf.public_bytes(serialization.Encoding.DER), [], bundled_roots(), AT, ak)


def test_bundled_copies_are_the_go_tpm_tools_files() -> None:
    data = Path(__file__).resolve().parents[1] / "verifier" / "data"
    for name, fingerprint in (
        ("gcp-ek-ak-ca-root.pem", ROOT_SHA256),
        ("gcp-ek-ak-ca-intermediate-v3.pem", INTERMEDIATE_SHA256),
    ):
        cert = x509.load_pem_x509_certificate((data / name).read_bytes())
        assert cert.fingerprint(hashes.SHA256()).hex() == fingerprint
