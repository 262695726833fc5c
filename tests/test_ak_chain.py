"""AK certificate chains shaped like Azure's vTPM PKI: what passes and what must not."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import azure_capture
import pytest
from aicert.builder.platforms.local.ca import LocalCa
from aicert.verifier.errors import AkChainError, AkMismatchError, FormatError, InputError
from aicert.verifier.tpm.ak_chain import (
    AkChainResult,
    bundled_intermediates,
    bundled_roots,
    verify_ak_chain,
)
from aicert.verifier.tpm.quote import verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import (
    ALG_RSASSA,
    TpmPublic,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from conftest import ProvisionedSwtpm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm_wire_builders import SHARED, tpmt_public

from aicert.process import run

UTC = datetime.UTC
T0 = datetime.datetime(2026, 6, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
AT = T0 + 30 * DAY

AIK = ObjectIdentifier("2.23.133.8.3")
EK = ObjectIdentifier("2.23.133.8.1")
MS_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")
MS_CA_VERSION = ObjectIdentifier("1.3.6.1.4.1.311.21.1")

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Key

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str, *, microsoft: bool = True) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if microsoft:
        attrs = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corporation"),
            *attrs,
        ]
    return x509.Name(attrs)


def _key_usage(**set_bits: bool) -> x509.KeyUsage:
    bits = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ),
        False,
    )
    bits.update(set_bits)
    return x509.KeyUsage(**bits, encipher_only=False, decipher_only=False)


def _issue(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: Issued | None,
    signing_key: Key,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    *,
    not_before: datetime.datetime = T0,
    days: int = 365,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + days * DAY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.cert.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA384())


def make_root(cn: str = "Example Virtual TPM Root Certificate Authority 2023") -> Issued:
    """Extensions as in Azure's root: CA, keyUsage digitalSignature|keyCertSign|cRLSign."""
    key = _rsa(3072)
    cert = _issue(
        _name(cn),
        key.public_key(),
        None,
        key,
        [
            (_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.UnrecognizedExtension(MS_CA_VERSION, b"\x02\x01\x00"), False),
        ],
        not_before=T0 - 365 * DAY,
        days=25 * 365,
    )
    return Issued(cert, key)


def ca_extensions(path_length: int | None = 0) -> list[tuple[x509.ExtensionType, bool]]:
    """Extensions as in Azure's "Global Virtual TPM CA - 03" (see verifier/data)."""
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (_key_usage(key_cert_sign=True), True),
        (x509.ExtendedKeyUsage([EK, AIK]), False),
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://pki.example/root.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            False,
        ),
        (
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://pki.example/root.crt"),
                    )
                ]
            ),
            False,
        ),
    ]


def make_intermediate(
    issuer: Issued,
    cn: str = "Global Virtual TPM CA - 03",
    *,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    not_before: datetime.datetime = T0 - 30 * DAY,
    days: int = 730,
) -> Issued:
    key = _rsa()
    exts = ca_extensions() if extensions is None else extensions
    cert = _issue(
        _name(cn, microsoft=False), key.public_key(), issuer, issuer.key, exts,
        not_before=not_before, days=days,
    )  # fmt: skip
    return Issued(cert, key)


def leaf_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    """What Azure's AK certificates are seen to carry: AIK and document-signing EKUs."""
    return [
        (_key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([AIK, MS_DOCUMENT_SIGNING]), False),
    ]


def make_leaf(
    issuer: Issued,
    ak_key: rsa.RSAPrivateKey,
    *,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    not_before: datetime.datetime = T0,
    days: int = 365,
    self_signed: bool = False,
) -> Issued:
    subject = _name("0a1b2c3d4e5f.TrustedVM.Example.windows.net", microsoft=False)
    exts = leaf_extensions() if extensions is None else extensions
    cert = _issue(
        subject,
        ak_key.public_key(),
        None if self_signed else issuer,
        ak_key if self_signed else issuer.key,
        exts,
        not_before=not_before,
        days=days,
    )
    return Issued(cert, ak_key)


def ak_public(key: rsa.RSAPrivateKey) -> TpmPublic:
    return parse_tpmt_public(tpmt_public(key.public_key(), scheme=ALG_RSASSA))


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    ak_key: rsa.RSAPrivateKey
    leaf: Issued

    @property
    def ak(self) -> TpmPublic:
        return ak_public(self.ak_key)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_root()
    intermediate = make_intermediate(root)
    ak_key = _rsa()
    return Pki(root, intermediate, ak_key, make_leaf(intermediate, ak_key))


def verify(pki: Pki, leaf: Issued, intermediates: Sequence[Issued], **kw: object) -> AkChainResult:
    roots = kw.pop("roots", [pki.root.cert])
    at = kw.pop("at", AT)
    ak = kw.pop("ak", pki.ak)
    return verify_ak_chain(
        leaf.der,
        [i.der for i in intermediates],
        roots,
        at,
        ak,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- valid chains


def test_azure_shaped_chain_verifies(pki: Pki) -> None:
    result = verify(pki, pki.leaf, [pki.intermediate])
    assert result.chain == (pki.leaf.cert, pki.intermediate.cert, pki.root.cert)
    assert result.root == pki.root.cert
    assert result.leaf_subject == "CN=0a1b2c3d4e5f.TrustedVM.Example.windows.net"
    assert result.verified_at == AT


def test_two_intermediates_and_noise_verify(pki: Pki) -> None:
    # The newer Azure shape: leaf -> "CA - 11" -> "CA 2025" -> root.
    upper = make_intermediate(pki.root, "Azure Cloud Virtual TPM CA 2025",
                              extensions=ca_extensions(path_length=None))  # fmt: skip
    lower = make_intermediate(upper, "Azure Cloud Virtual TPM CA - 11")
    leaf = make_leaf(lower, pki.ak_key)
    unrelated = make_intermediate(make_root("Unrelated Root"), "Unrelated CA")
    result = verify(pki, leaf, [unrelated, upper, lower])
    assert result.chain == (leaf.cert, lower.cert, upper.cert, pki.root.cert)


def test_time_zone_of_the_attestation_time_does_not_matter(pki: Pki) -> None:
    tz = datetime.timezone(datetime.timedelta(hours=-7))
    assert verify(pki, pki.leaf, [pki.intermediate], at=AT.astimezone(tz)).verified_at == AT


def test_leaf_without_optional_extensions_verifies(pki: Pki) -> None:
    leaf = make_leaf(pki.intermediate, pki.ak_key, extensions=[])
    verify(pki, leaf, [pki.intermediate])


# --------------------------------------------------------------------------- refused chains


def test_self_signed_leaf_is_refused(pki: Pki) -> None:
    leaf = make_leaf(pki.intermediate, pki.ak_key, self_signed=True)
    with pytest.raises(AkChainError, match="does not chain"):
        verify(pki, leaf, [pki.intermediate])


def test_other_root_is_refused(pki: Pki) -> None:
    with pytest.raises(AkChainError, match="does not chain"):
        verify(pki, pki.leaf, [pki.intermediate], roots=[make_root().cert])
    with pytest.raises(AkChainError, match="does not chain"):
        verify(pki, pki.leaf, [pki.intermediate], roots=bundled_roots())


def test_same_named_impostor_root_is_refused(pki: Pki) -> None:
    impostor = make_root()  # same subject as pki.root, other key
    with pytest.raises(AkChainError):
        verify(pki, pki.leaf, [pki.intermediate], roots=[impostor.cert])


def test_missing_intermediate_is_refused(pki: Pki) -> None:
    with pytest.raises(AkChainError):
        verify(pki, pki.leaf, [])


@pytest.mark.parametrize(
    "at",
    [
        T0 - DAY,  # leaf not yet valid
        T0 + 366 * DAY,  # leaf expired
    ],
    ids=["not-yet-valid", "expired"],
)
def test_leaf_outside_its_validity_is_refused(pki: Pki, at: datetime.datetime) -> None:
    with pytest.raises(AkChainError, match="does not chain"):
        verify(pki, pki.leaf, [pki.intermediate], at=at)


def test_expired_intermediate_is_refused(pki: Pki) -> None:
    old = make_intermediate(pki.root, not_before=T0 - 370 * DAY, days=380)
    leaf = make_leaf(old, pki.ak_key)
    verify(pki, leaf, [old], at=T0 + 5 * DAY)
    with pytest.raises(AkChainError, match="not valid at validation time"):
        verify(pki, leaf, [old], at=AT)


def test_non_ca_intermediate_is_refused(pki: Pki) -> None:
    not_ca = ca_extensions()
    not_ca[0] = (x509.BasicConstraints(ca=False, path_length=None), True)
    for extensions in (not_ca, ca_extensions()[1:]):  # cA false; no basicConstraints at all
        intermediate = make_intermediate(pki.root, extensions=extensions)
        with pytest.raises(AkChainError, match="basicConstraints"):
            verify(pki, make_leaf(intermediate, pki.ak_key), [intermediate])


def test_intermediate_without_key_cert_sign_is_refused(pki: Pki) -> None:
    extensions = ca_extensions()
    extensions[1] = (_key_usage(digital_signature=True), True)
    intermediate = make_intermediate(pki.root, extensions=extensions)
    with pytest.raises(AkChainError, match="keyCertSign"):
        verify(pki, make_leaf(intermediate, pki.ak_key), [intermediate])


def test_path_length_is_enforced(pki: Pki) -> None:
    # "CA - 03" has pathLen 0: a CA it issued cannot issue AK certificates.
    sub_ca = make_intermediate(pki.intermediate, "Rogue sub-CA")
    leaf = make_leaf(sub_ca, pki.ak_key)
    with pytest.raises(AkChainError, match="path length"):
        verify(pki, leaf, [pki.intermediate, sub_ca])


@pytest.mark.parametrize(
    ("extensions", "reason"),
    [
        (
            [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
            "tcg-kp-AIKCertificate",
        ),
        ([(_key_usage(key_encipherment=True), True)], "digitalSignature"),
        ([(x509.BasicConstraints(ca=True, path_length=None), True)], "CA certificate"),
        (
            [(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)],
            "unaccounted-for critical",
        ),
    ],
    ids=["eku-without-aik", "no-digital-signature", "leaf-is-ca", "unknown-critical"],
)
def test_leaf_extension_policy(
    pki: Pki, extensions: list[tuple[x509.ExtensionType, bool]], reason: str
) -> None:
    leaf = make_leaf(pki.intermediate, pki.ak_key, extensions=extensions)
    with pytest.raises(AkChainError, match=reason):
        verify(pki, leaf, [pki.intermediate])


def test_leaf_for_another_key_is_a_mismatch(pki: Pki) -> None:
    with pytest.raises(AkMismatchError, match="different key"):
        verify(pki, pki.leaf, [pki.intermediate], ak=ak_public(_rsa()))
    ecc = parse_tpmt_public(tpmt_public(ec.generate_private_key(ec.SECP256R1()).public_key()))
    with pytest.raises(AkMismatchError):
        verify(pki, pki.leaf, [pki.intermediate], ak=ecc)


def test_bad_inputs(pki: Pki) -> None:
    with pytest.raises(InputError, match="time zone"):
        verify(pki, pki.leaf, [pki.intermediate], at=AT.replace(tzinfo=None))
    with pytest.raises(AkChainError, match="no trusted root"):
        verify(pki, pki.leaf, [pki.intermediate], roots=[])
    with pytest.raises(FormatError, match="AK certificate"):
        verify_ak_chain(b"\x30\x03\x02\x01\x00", [], [pki.root.cert], AT, pki.ak)
    with pytest.raises(FormatError, match="intermediate 0"):
        verify_ak_chain(pki.leaf.der, [b"junk"], [pki.root.cert], AT, pki.ak)


# --------------------------------------------------------------------------- bundled material


def test_bundled_root_is_the_published_azure_root() -> None:
    root = bundled_roots()[0]
    published = x509.load_pem_x509_certificate(
        (SHARED / "trust" / "azure-virtual-tpm-root-ca-2023.pem").read_bytes()
    )
    assert root == published
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Azure Virtual TPM Root Certificate Authority 2023"
    )
    assert root.fingerprint(hashes.SHA256()).hex() == (
        "e6c596b17f8ffefba5c300f714cfb1260c6028704ecf7becc4ab5018efb00e95"
    )


def test_bundled_intermediate_is_signed_by_the_azure_root() -> None:
    root = bundled_roots()[0]
    ca03 = bundled_intermediates()[0]
    ca03.verify_directly_issued_by(root)
    assert ca03.fingerprint(hashes.SHA256()).hex() == (
        "fd7c92dabce4dcec9feaa30f8b087ada0598413189182152b881f5564064a29c"
    )
    # The test CAs above copy its extension set; keep them honest.
    real = {e.oid for e in ca03.extensions}
    copied = {e.oid for e in make_intermediate(make_root()).cert.extensions}
    assert real == copied
    basic = ca03.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    assert basic.path_length == 0


# --------------------------------------------------------------------------- local platform


def test_local_ca_chain_verifies(local_ca: LocalCa) -> None:
    # The CA the local platform uses to imitate Azure's PKI passes the same policy.
    ak_key = _rsa()
    leaf = local_ca.issue_ak_certificate(ak_key.public_key(), "vm-1")
    intermediate = local_ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
    now = datetime.datetime.now(UTC)
    roots = [local_ca.root_certificate]
    result = verify_ak_chain(leaf, [intermediate], roots, now, ak_public(ak_key))
    assert result.leaf_subject == "CN=vm-1.TrustedVM.aicert.local"
    with pytest.raises(AkChainError):
        verify_ak_chain(leaf, [intermediate], bundled_roots(), now, ak_public(ak_key))


@pytest.mark.swtpm
def test_quote_by_the_provisioned_ak_and_its_chain(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    """Azure's path on swtpm: quote with the AK at 0x81000003, certificate from NV."""
    env = {"TPM2TOOLS_TCTI": provisioned_swtpm.tcti}
    extra = hashlib.sha256(b"statement").hexdigest()
    run(
        [
            "tpm2_quote", "-c", "0x81000003", "-l", "sha256:0,1,15", "-q", extra,
            "-m", "quote.msg", "-s", "quote.sig",
        ],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    run(["tpm2_nvread", "-C", "o", "-o", "ak.der", "0x01C101D0"], cwd=tmp_path, env=env)
    ak = parse_tpm2b_public(provisioned_swtpm.provisioned.ak_public)
    attest = verify_quote_signature(
        (tmp_path / "quote.msg").read_bytes(), (tmp_path / "quote.sig").read_bytes(), ak
    )
    assert attest.extra_data.hex() == extra
    ca = provisioned_swtpm.ca
    result = verify_ak_chain(
        (tmp_path / "ak.der").read_bytes(),
        [ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)],
        [ca.root_certificate],
        datetime.datetime.now(UTC),
        ak,
    )
    assert result.root == ca.root_certificate


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_leaf_raises_only_project_errors(pki: Pki, edits: list[tuple[int, int]]) -> None:
    der = bytearray(pki.leaf.der)
    for position, value in edits:
        der[position % len(der)] = value
    try:
        verify_ak_chain(bytes(der), [pki.intermediate.der], [pki.root.cert], AT, pki.ak)
    except (FormatError, AkChainError, AkMismatchError):
        return
    assert bytes(der) == pki.leaf.der


# --------------------------------------------------------------------------- real Azure leaf


def test_real_ca03_leaf_without_aia_chains_offline_through_the_bundled_intermediate() -> None:
    """A genuine Azure AK certificate of the older hierarchy, as a host presents it alone."""
    leaf_der = azure_capture.ak_certificate()
    leaf = x509.load_der_x509_certificate(leaf_der)
    assert leaf.issuer.rfc4514_string() == "CN=Global Virtual TPM CA - 03"
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    other_key = ak_public(_rsa())
    at = datetime.datetime(2026, 8, 1, tzinfo=UTC)
    # The key check runs only once the chain verified: a mismatch proves the chain passed.
    with pytest.raises(AkMismatchError, match=r"TrustedVM\.Azure\.windows\.net"):
        verify_ak_chain(leaf_der, [], bundled_roots(), at, other_key)
    # Outside the leaf's validity, or under another root, the same leaf does not chain.
    with pytest.raises(AkChainError, match="does not chain"):
        verify_ak_chain(leaf_der, [], bundled_roots(), at.replace(year=2027, month=5), other_key)
    with pytest.raises(AkChainError, match="does not chain"):
        verify_ak_chain(leaf_der, [], [make_root().cert], at, other_key)
