"""Google's roots of GCE Shielded VM AK certificates, and a real GCE AK certificate."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from aicert.verifier.errors import AkChainError, AkMismatchError
from aicert.verifier.tpm.ak_chain import bundled_intermediates, bundled_roots, verify_ak_chain
from aicert.verifier.tpm.tpm2_structures import parse_tpmt_public
from aicert.verifier.verify import root_of_trust
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm_wire_builders import tpmt_public

from aicert.process import run

ROOT_SHA256 = "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2"
INTERMEDIATE_SHA256 = "c84de8116dfaf5a908f21e810487791f5437e206d00ad8025050cca6bd2ff627"
EK_ROOT_1_SHA256 = "9bd5285f8fb18502a7947e621ffd470266f49fcd3b73e19a190f690ad32a7caf"
EK_INTERMEDIATE_2_SHA256 = "5d8dbcf8c8053dd8ffad711b6219355032b7122c34cac0f90ccb49def69ec504"
EK_INTERMEDIATE_3_SHA256 = "7132b6ea71101f6c51bb58f98c3798c19b65be510eca0344318900510b593178"
REAL = Path(__file__).parent / "data" / "gce-cos-85"
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


def test_the_older_hierarchy_is_bundled_and_chains() -> None:
    root = _by_fingerprint(bundled_roots(), EK_ROOT_1_SHA256)
    root.verify_directly_issued_by(root)
    for fingerprint in (EK_INTERMEDIATE_2_SHA256, EK_INTERMEDIATE_3_SHA256):
        _by_fingerprint(bundled_intermediates(), fingerprint).verify_directly_issued_by(root)
    assert root_of_trust(root).hardware


def test_a_real_gce_ak_certificate_chains_to_googles_root_and_certifies_its_ak() -> None:
    leaf = (REAL / "ak_cert.der").read_bytes()
    ak = parse_tpmt_public((REAL / "ak_pub.tpmt").read_bytes())
    result = verify_ak_chain(leaf, [], bundled_roots(), AT, ak)
    assert result.root == _by_fingerprint(bundled_roots(), EK_ROOT_1_SHA256)
    assert len(result.chain) == 3
    assert ak.is_restricted_signing_key
    # Any other key is refused: the certificate certifies this AK only.
    other = parse_tpmt_public(tpmt_public(ec.generate_private_key(ec.SECP256R1()).public_key()))
    with pytest.raises(AkMismatchError):
        verify_ak_chain(leaf, [], bundled_roots(), AT, other)
    # Without Google's roots it chains to nothing.
    with pytest.raises(AkChainError):
        verify_ak_chain(
            leaf, [], [r for r in bundled_roots() if "Google" not in str(r.subject)], AT, ak
        )


def test_loading_googles_long_names_prints_no_warning() -> None:
    """Their CNs exceed X.520's 64 characters: the verifier must not print
    cryptography's warning about it on every run."""
    script = (
        "from aicert.verifier.tpm.ak_chain import bundled_intermediates, bundled_roots\n"
        "for c in (*bundled_roots(), *bundled_intermediates()): c.subject.rfc4514_string()\n"
    )
    proc = run([sys.executable, "-W", "default", "-c", script])
    assert proc.stderr == b""


def test_bundled_copies_are_the_go_tpm_tools_files() -> None:
    data = Path(__file__).resolve().parents[1] / "verifier" / "data"
    for name, fingerprint in (
        ("gcp-ek-ak-ca-root.pem", ROOT_SHA256),
        ("gcp-ek-ak-ca-intermediate-v3.pem", INTERMEDIATE_SHA256),
        ("gce-tpm-ek-root-1.pem", EK_ROOT_1_SHA256),
        ("gce-tpm-ek-intermediate-2.pem", EK_INTERMEDIATE_2_SHA256),
        ("gce-tpm-ek-intermediate-3.pem", EK_INTERMEDIATE_3_SHA256),
    ):
        cert = x509.load_pem_x509_certificate((data / name).read_bytes())
        assert cert.fingerprint(hashes.SHA256()).hex() == fingerprint
