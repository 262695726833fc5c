"""What every certificate chain the verifier walks shares: strict DER loading, the
extension policy for issuing certificates, and readable path-validation errors.

Used for AK chains (``tpm/ak_chain.py``) and NitroTPM documents (``aws/nitro_document.py``);
each keeps its own leaf policy.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy

from .errors import FormatError

# cryptography appends the repr of the certificate it was processing; the subject is already named.
_ENCOUNTERED = re.compile(r"\s*\(encountered processing <Certificate\(.*\)>\)\s*$", re.DOTALL)


def _ca_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints
) -> None:
    if not bc.ca:
        raise ValueError("an issuing certificate is not a CA (basicConstraints cA is false)")


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("an issuing certificate's key usage does not allow keyCertSign")


def ca_policy() -> ExtensionPolicy:
    """Issuing certificates: basicConstraints present, critical, cA true; keyUsage, if
    present, allows keyCertSign; anything else (EKUs included) is accepted."""
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.CRITICAL, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    )


def load_der(der: bytes, what: str) -> x509.Certificate:
    """``der`` as a certificate, or a FormatError naming ``what``."""
    # cryptography parses names and extensions lazily: touch them here so a malformed
    # certificate is a FormatError now, not a stray exception later.
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject, cert.issuer, cert.extensions)
    except (
        ValueError,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise FormatError(f"{what} is not a valid DER X.509 certificate: {exc}") from None
    return cert


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def validation_reason(exc: Exception) -> str:
    """cryptography's path-validation message, without the certificate repr it appends."""
    return _ENCOUNTERED.sub("", str(exc))
