"""The XML signature of an NVIDIA RIM: an enveloped XMLDSig, ECDSA P-384 over SHA-384.

Exactly the form NVIDIA signs is accepted: one ``ds:Signature`` child of the document
element, whose ``SignedInfo`` uses Canonical XML 1.1, ``ecdsa-sha384`` and one
``Reference URI=""`` with the enveloped-signature and C14N 1.1 transforms and a SHA-384
digest; ``KeyInfo`` carries the signer's certificate chain, leaf first. The chain is
checked against the RIM roots at attestation time by :mod:`.nvidia_evidence`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import FormatError, GpuMeasurementError
from .xml_c14n import Element, canonicalize, parse_document

DSIG = "http://www.w3.org/2000/09/xmldsig#"
C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
MAX_SIGNER_CERTS = 8


def verify_rim_signature(data: bytes, name: str) -> tuple[x509.Certificate, ...]:
    """Check the RIM's digest and signature; return the signer's chain (untrusted yet)."""
    root = parse_document(data, f"RIM {name}")
    scope = root.declarations()
    signatures = [e for e in root.elements() if _is(e, "Signature", scope)]
    if len(signatures) != 1:
        raise GpuMeasurementError(f"RIM {name}: it must carry exactly one XML signature")
    sig = signatures[0]
    sig_scope = {**scope, **sig.declarations()}
    signed_info = _one(sig, "SignedInfo", sig_scope, name)
    si_scope = {**sig_scope, **signed_info.declarations()}
    _algorithm(_one(signed_info, "CanonicalizationMethod", si_scope, name), C14N11, name)
    _algorithm(_one(signed_info, "SignatureMethod", si_scope, name), ECDSA_SHA384, name)
    reference = _one(signed_info, "Reference", si_scope, name)
    if dict(reference.attributes).get("URI") != "":
        raise GpuMeasurementError(f"RIM {name}: the signature must cover the whole document")
    ref_scope = {**si_scope, **reference.declarations()}
    transforms = _one(reference, "Transforms", ref_scope, name)
    algorithms = [dict(t.attributes).get("Algorithm") for t in transforms.elements()]
    if algorithms != [ENVELOPED, C14N11]:
        raise GpuMeasurementError(f"RIM {name}: unexpected signature transforms {algorithms}")
    _algorithm(_one(reference, "DigestMethod", ref_scope, name), SHA384, name)
    digest = _b64(_one(reference, "DigestValue", ref_scope, name), name)
    if not hmac.compare_digest(hashlib.sha384(canonicalize(root, skip=sig)).digest(), digest):
        raise GpuMeasurementError(f"RIM {name}: its content does not match its signed digest")
    chain = _chain(_one(sig, "KeyInfo", sig_scope, name), sig_scope, name)
    key = chain[0].public_key()
    value = _b64(_one(sig, "SignatureValue", sig_scope, name), name)
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(value) != 96:
        raise GpuMeasurementError(f"RIM {name}: the signer key is not ECDSA P-384")
    r, s = int.from_bytes(value[:48], "big"), int.from_bytes(value[48:], "big")
    try:
        key.verify(
            encode_dss_signature(r, s),
            canonicalize(signed_info, sig_scope),
            ec.ECDSA(hashes.SHA384()),
        )
    except InvalidSignature:
        raise GpuMeasurementError(f"RIM {name}: the XML signature does not verify") from None
    return chain


def _chain(key_info: Element, scope: dict[str, str], name: str) -> tuple[x509.Certificate, ...]:
    data = _one(key_info, "X509Data", {**scope, **key_info.declarations()}, name)
    inner = {**scope, **key_info.declarations(), **data.declarations()}
    certs = [e for e in data.elements() if _is(e, "X509Certificate", inner)]
    if not 1 <= len(certs) <= MAX_SIGNER_CERTS:
        raise GpuMeasurementError(
            f"RIM {name}: KeyInfo must hold 1-{MAX_SIGNER_CERTS} certificates"
        )
    try:
        return tuple(x509.load_der_x509_certificate(_b64(c, name)) for c in certs)
    except ValueError:
        raise FormatError(f"RIM {name}: a signer certificate is not DER X.509") from None


def _is(element: Element, local: str, scope: dict[str, str]) -> bool:
    prefix, colon, name = element.name.rpartition(":")
    scope = {**scope, **element.declarations()}
    return name == local and scope.get(prefix if colon else "") == DSIG


def _one(parent: Element, local: str, scope: dict[str, str], name: str) -> Element:
    found = [e for e in parent.elements() if _is(e, local, scope)]
    if len(found) != 1:
        raise GpuMeasurementError(f"RIM {name}: the signature must hold one {local}")
    return found[0]


def _algorithm(element: Element, expected: str, name: str) -> None:
    got = dict(element.attributes).get("Algorithm")
    if got != expected:
        raise GpuMeasurementError(f"RIM {name}: algorithm {got!r} is not {expected}")


def _b64(element: Element, name: str) -> bytes:
    text = "".join(c for c in element.children if isinstance(c, str))
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        raise FormatError(f"RIM {name}: a signature field is not base64") from None
