"""The attestation key (AK) certificate chain: is this AK a key of a genuine (v)TPM?

On Azure Trusted Launch the vTPM's AK certificate (NV index 0x01C101D0) is
``<vm-id>.TrustedVM.Azure.windows.net``, issued by one of several intermediates
("Global Virtual TPM CA - 03", or "Azure Cloud Virtual TPM CA - 11" under
"Azure Cloud Virtual TPM CA 2025") under "Azure Virtual TPM Root Certificate
Authority 2023". The local platform (swtpm) imitates that shape with its own CA.
:func:`verify_ak_chain` checks, failing closed:

1. the chain from the leaf through the given (and bundled) intermediates to one
   of the given roots, with ``cryptography``'s X.509 path validation at time
   ``at`` (signatures, validity periods, names, basic constraints, path length);
2. that the leaf certifies exactly the AK whose public area the quote names.

Extension policy. These are not TLS certificates, so the web PKI defaults
(serverAuth/clientAuth, a subjectAltName) do not apply. What is enforced, from
public observations of Azure's AK certificates and intermediates:

- leaf: if it has basicConstraints, cA must be false; if it has keyUsage,
  digitalSignature must be set (the AK signs quotes); if it has extendedKeyUsage,
  it must include tcg-kp-AIKCertificate (2.23.133.8.3), tcg-kp-EKCertificate
  (2.23.133.8.1, see GCE below) or anyExtendedKeyUsage.
  Azure's leaves carry 2.23.133.8.3 with Microsoft's document-signing OID; the
  older hierarchy's leaves are not documented publicly, so presence is not
  required;
- CAs (intermediates and the root): basicConstraints must be present and
  critical with cA true; if keyUsage is present it must allow keyCertSign.
  extendedKeyUsage on a CA is accepted whatever it holds: Azure's "Global Virtual
  TPM CA - 03" carries tcg-kp-EKCertificate and tcg-kp-AIKCertificate, and EKUs
  are not intersected along the chain (as Windows would), because the trusted
  root serves attestation keys only.

Attestation time. The TPM clock in a quote counts milliseconds since the TPM's
last reset, not wall time, so it cannot date the evidence. The verifier passes
as ``at`` the time the signed statement claims (bound into the quote's
extraData), and this function checks every certificate's validity at that
instant. Trade-off: evidence stays verifiable after an intermediate expires
(Azure's live about two years), at the cost that whoever holds an AK private key
could sign new evidence claiming an old time inside the certificate's validity.
Offline verification checks no revocation either; a verifier that also wants
the chain valid today can call this twice, once with the current time.

Bundled material: the Azure root (a trust anchor only when the caller passes it,
see :func:`bundled_roots`) and the "Global Virtual TPM CA - 03" intermediate,
which Azure's older AK certificates need but do not point to (no AIA extension).
Intermediates are chain-building material, never anchors: one that is not signed
by a given root cannot make a chain verify. CA - 03 is valid to 2027-04-24.

GCE: a Shielded VM's AK certificates (NV 0x01C10002 ECC, 0x01C10000 RSA) chain to
one of Google's two published roots, both named by go-tpm-tools (``server/verify.go``)
as the roots of GCE AK certificates: "tpm_ek_v1_cloud_host_root" (pki.goog/
cloud_integrity/tpm_ek_root_1.crt, to 2118; intermediates "…-2020-10-22…" and
"…-2021-10-12…", to 2120/2121), which issued the real AK certificate in
tests/data/gce-cos-85, and the newer "EK/AK CA Root" (Certificate Authority Service,
to 2122; intermediate "EK/AK CA Intermediate"). All five are bundled unchanged from
go-tpm-tools ``server/ca-certs/`` (commit e71285aaff09bae4244805f009886c72088e4236).
GCE's AK certificates carry tcg-kp-EKCertificate (2.23.133.8.1) as their only EKU, so
the leaf accepts it besides tcg-kp-AIKCertificate. That admits no EK as an AK: the
quote check separately requires a restricted signing key, fixedTPM, with the
certificate's exact public key, and an EK is a restricted decryption key the TPM never
signs with.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..errors import AkChainError, AkMismatchError, InputError
from ..x509_path import ca_policy, load_der, subject_of, validation_reason
from .tpm2_structures import TpmPublic

# The common names of Google's older GCE hierarchy ("tpm_ek_v1_cloud_host-signer-…",
# 79 and 84 characters) exceed X.520's 64; cryptography warns on every parse of them,
# which would put a stray line on the verifier's output. The length is not a check.
warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)

TCG_KP_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")
TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
_LEAF_EKUS = (
    TCG_KP_AIK_CERTIFICATE,
    TCG_KP_EK_CERTIFICATE,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
)

BUNDLED_ROOT_FILES = (
    "azure-virtual-tpm-root-ca-2023.pem",
    "gcp-ek-ak-ca-root.pem",
    "gce-tpm-ek-root-1.pem",
)
BUNDLED_INTERMEDIATE_FILES = (
    "global-virtual-tpm-ca-03.pem",
    "gcp-ek-ak-ca-intermediate-v3.pem",
    "gce-tpm-ek-intermediate-2.pem",
    "gce-tpm-ek-intermediate-3.pem",
)

# Leaf, up to two intermediates (Azure's CA - 11 → CA 2025), root, and one spare.
MAX_CHAIN_DEPTH = 4


@dataclass(frozen=True)
class AkChainResult:
    """A verified AK chain, leaf first, ending at the trusted root."""

    chain: tuple[x509.Certificate, ...]
    verified_at: datetime.datetime

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    @property
    def leaf_subject(self) -> str:
        return self.leaf.subject.rfc4514_string()


def _load_pems(names: Sequence[str]) -> list[x509.Certificate]:
    data = resources.files("aicert.verifier").joinpath("data")
    certs: list[x509.Certificate] = []
    for name in names:
        certs.extend(x509.load_pem_x509_certificates(data.joinpath(name).read_bytes()))
    return certs


def bundled_roots() -> list[x509.Certificate]:
    """The public roots shipped with the verifier: Azure Virtual TPM Root CA 2023 and
    Google's two GCE vTPM roots."""
    return _load_pems(BUNDLED_ROOT_FILES)


def bundled_intermediates() -> list[x509.Certificate]:
    """Intermediates that AK certificates need but may not point to (Azure, GCE)."""
    return _load_pems(BUNDLED_INTERMEDIATE_FILES)


# --------------------------------------------------------------------------- policy


def _leaf_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        raise ValueError("the AK certificate is a CA certificate")


def _leaf_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.digital_signature:
        raise ValueError("the AK certificate's key usage does not allow digitalSignature")


def _leaf_eku(_policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is None:
        return
    if not any(oid in eku for oid in _LEAF_EKUS):
        raise ValueError(
            "the AK certificate's extended key usage lacks tcg-kp-AIKCertificate (and"
            " tcg-kp-EKCertificate, which GCE's AK certificates carry)"
        )


def _leaf_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _leaf_eku)
    )


# --------------------------------------------------------------------------- verification


def _same_key(leaf: x509.Certificate, ak: TpmPublic) -> bool:
    try:
        cert_key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    ak_key = ak.public_key()
    if isinstance(cert_key, rsa.RSAPublicKey) and isinstance(ak_key, rsa.RSAPublicKey):
        return cert_key.public_numbers() == ak_key.public_numbers()
    if isinstance(cert_key, ec.EllipticCurvePublicKey) and isinstance(
        ak_key, ec.EllipticCurvePublicKey
    ):
        return (
            cert_key.curve.name == ak_key.curve.name
            and cert_key.public_numbers() == ak_key.public_numbers()
        )
    return False


def verify_ak_chain(
    leaf_der: bytes,
    intermediates: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    at: datetime.datetime,
    ak: TpmPublic,
) -> AkChainResult:
    """Verify that ``leaf_der`` chains to one of ``roots`` at ``at`` and certifies ``ak``.

    ``intermediates`` (DER) are untrusted chain-building material, used together
    with :func:`bundled_intermediates`. Raises AkChainError or AkMismatchError.
    """
    if at.tzinfo is None:
        raise InputError("the attestation time must carry a time zone")
    if not roots:
        raise AkChainError("no trusted root certificate was given for the AK chain")
    at_utc = at.astimezone(datetime.UTC)
    leaf = load_der(leaf_der, "the AK certificate")
    candidates = [
        load_der(der, f"AK chain intermediate {n}") for n, der in enumerate(intermediates)
    ]
    candidates.extend(bundled_intermediates())
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at_utc)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca_policy(), ee_policy=_leaf_policy())
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, candidates)
    except VerificationError as exc:
        reason = validation_reason(exc)
        raise AkChainError(
            f"AK certificate {subject_of(leaf)} does not chain to a trusted root "
            f"at {at_utc.isoformat()}: {reason}"
        ) from None
    if not _same_key(leaf, ak):
        raise AkMismatchError(
            f"AK certificate {subject_of(leaf)} certifies a different key than the "
            "attestation key that signed the quote"
        )
    return AkChainResult(tuple(verified.chain), at_utc)
