"""A local certificate authority shaped like Azure's virtual TPM PKI.

On Azure the vTPM's attestation key (AK) is certified by a three-level chain::

    Azure Virtual TPM Root Certificate Authority 2023      (self-signed, RSA 4096, SHA-384)
      Azure Cloud Virtual TPM CA - 11  (or Global Virtual TPM CA - 03, ...)
        <vm-id>.TrustedVM.Azure.windows.net               (the AK certificate, in NV 0x01C101D0)

The local platform (QEMU + swtpm) gets the same shape from this CA, so the agent and
the verifier run one code path on both; the verifier trusts it only when pointed at
:attr:`LocalCa.root_path` (``--trust-root``). Profile choices, from public
observations of Azure AK certificates:

- the AK certificate's extended key usage holds 2.23.133.8.3 (tcg-kp-AIKCertificate)
  and 1.3.6.1.4.1.311.10.3.12 (Microsoft document signing); newer Azure AK
  certificates carry an Authority Information Access extension, older ones none;
- Azure's issuing CAs carry extended key usage 2.23.133.8.1 (tcg-kp-EKCertificate);
  a verifier must therefore not intersect EKUs along the chain (Windows-style),
  and this CA reproduces that trap on purpose;
- the root has key usage digitalSignature, keyCertSign, cRLSign and no path length.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.errors import InputError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID, ObjectIdentifier

ROOT_COMMON_NAME = "aicert Local Virtual TPM Root Certificate Authority"
INTERMEDIATE_COMMON_NAME = "aicert Local Virtual TPM CA - 01"
ORGANIZATION = "aicert"
AK_SUBJECT_SUFFIX = ".TrustedVM.aicert.local"
# Like the AIA links of Azure's newer AK certificates, which the agent follows in the VM
# (aicert.agent.aia); verification stays offline. The local platform answers it
# (qemu.VmSpec.issuer_certificate) at an address in QEMU's user network, 10.0.2.0/24,
# outside the range its DHCP server hands out.
LOCAL_PKI_ADDRESS = "10.0.2.100"
INTERMEDIATE_URL = f"http://{LOCAL_PKI_ADDRESS}/certs/aicert-local-virtual-tpm-ca-01.crt"

TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
TCG_KP_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")
MS_KP_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")

ROOT_VALIDITY = datetime.timedelta(days=25 * 365)
INTERMEDIATE_VALIDITY = datetime.timedelta(days=15 * 365)
AK_VALIDITY = datetime.timedelta(days=365)
# Back-date certificates a little so a guest clock slightly behind the host still accepts them.
CLOCK_SKEW = datetime.timedelta(hours=1)

_VM_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

_FILES = {
    "root_key": "root-ca.key.pem",
    "root_cert": "root-ca.pem",
    "intermediate_key": "intermediate-ca.key.pem",
    "intermediate_cert": "intermediate-ca.pem",
}


@dataclass(frozen=True)
class LocalCa:
    """The root and issuing CA of the local vTPM PKI, persisted as PEM in ``directory``."""

    directory: Path
    root_certificate: x509.Certificate
    intermediate_certificate: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey

    @property
    def root_path(self) -> Path:
        """The root certificate (PEM): what ``aicert-verify --trust-root`` is given."""
        return self.directory / _FILES["root_cert"]

    @property
    def intermediate_path(self) -> Path:
        return self.directory / _FILES["intermediate_cert"]

    @classmethod
    def load_or_create(cls, directory: Path) -> LocalCa:
        """Load the CA from ``directory``, or create it there if the directory holds none."""
        directory = Path(directory)
        paths = {name: directory / file for name, file in _FILES.items()}
        present = [name for name, path in paths.items() if path.exists()]
        if not present:
            return cls._create(directory)
        if len(present) != len(paths):
            missing = ", ".join(str(paths[n]) for n in paths if n not in present)
            raise InputError(f"local CA in {directory} is incomplete: missing {missing}")
        return cls._load(directory)

    def chain_pem(self) -> bytes:
        """Intermediate then root, PEM: the chain above an AK certificate."""
        return b"".join(
            cert.public_bytes(serialization.Encoding.PEM)
            for cert in (self.intermediate_certificate, self.root_certificate)
        )

    def issue_ak_certificate(
        self,
        ak_public_key: CertificatePublicKeyTypes,
        vm_id: str,
        *,
        now: datetime.datetime | None = None,
    ) -> bytes:
        """An Azure-shaped AK certificate (DER) for ``ak_public_key``, subject
        ``<vm_id>.TrustedVM.aicert.local``."""
        if not _VM_ID.fullmatch(vm_id):
            raise InputError(
                f"VM id {vm_id!r} is not a DNS label (letters, digits, '-', at most 63 characters)"
            )
        # Azure's AK is RSA; GCE's is ECC P-256 (preferred) or RSA.
        if not isinstance(ak_public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise InputError("the attestation key must be an RSA or ECC key")
        issued = _now() if now is None else now
        issuer = self.intermediate_certificate
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, vm_id + AK_SUBJECT_SUFFIX)])
            )
            .issuer_name(issuer.subject)
            .public_key(ak_public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued - CLOCK_SKEW)
            .not_valid_after(issued + AK_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE, MS_KP_DOCUMENT_SIGNING]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ak_public_key), critical=False)
            .add_extension(_authority_key_id(issuer), critical=False)
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(INTERMEDIATE_URL),
                        )
                    ]
                ),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.DER)

    # -- creation and loading ---------------------------------------------------------------

    @classmethod
    def _create(cls, directory: Path) -> LocalCa:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        now = _now()
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        root_name = _ca_name(ROOT_COMMON_NAME)
        root = (
            _ca_builder(root_name, root_name, root_key.public_key(), now, ROOT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .sign(root_key, hashes.SHA384())
        )
        intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        intermediate = (
            _ca_builder(
                _ca_name(INTERMEDIATE_COMMON_NAME),
                root_name,
                intermediate_key.public_key(),
                now,
                INTERMEDIATE_VALIDITY,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([TCG_KP_EK_CERTIFICATE]), critical=False)
            .add_extension(_authority_key_id(root), critical=False)
            .sign(root_key, hashes.SHA384())
        )
        _write_private_key(directory / _FILES["root_key"], root_key)
        _write_private_key(directory / _FILES["intermediate_key"], intermediate_key)
        (directory / _FILES["root_cert"]).write_bytes(root.public_bytes(serialization.Encoding.PEM))
        (directory / _FILES["intermediate_cert"]).write_bytes(
            intermediate.public_bytes(serialization.Encoding.PEM)
        )
        return cls(directory, root, intermediate, intermediate_key)

    @classmethod
    def _load(cls, directory: Path) -> LocalCa:
        root = _read_certificate(directory / _FILES["root_cert"])
        intermediate = _read_certificate(directory / _FILES["intermediate_cert"])
        key_path = directory / _FILES["intermediate_key"]
        try:
            key = serialization.load_pem_private_key(
                read_input_file(key_path, "local CA key", MAX_PEM_BYTES), password=None
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"cannot read the local CA key {key_path}: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != (
            intermediate.public_key()
        ):
            raise InputError(
                f"{key_path} is not the key of {directory / _FILES['intermediate_cert']}"
            )
        try:
            intermediate.verify_directly_issued_by(root)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"the local intermediate CA in {directory} is not issued by its root"
            ) from exc
        return cls(directory, root, intermediate, key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)


def _read_certificate(path: Path) -> x509.Certificate:
    data = read_input_file(path, "local CA certificate", MAX_PEM_BYTES)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InputError(f"cannot read the local CA certificate {path}: {exc}") from exc
