"""The NitroTPM attestation document: what AWS signs about an EC2 instance's NitroTPM.

The Nitro hypervisor answers a request made inside the instance (through a TPM
vendor command) with a COSE_Sign1 whose payload is a CBOR map: the module id, the
time, the NitroTPM's PCRs, the signing certificate with its CA bundle, and three
fields the requester chose (``public_key``, ``user_data``, ``nonce``). The
signing certificate chains to the AWS Nitro Attestation PKI root (bundled:
``aws-nitro-enclaves-root-g1.pem``). :func:`verify_nitro_document` checks,
failing closed: the signature under the leaf's key; the chain from the leaf
through the bundle to a trusted root at the document's own time; and that the
document is a NitroTPM one (SHA-384 PCRs), not a Nitro Enclaves one.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..errors import AkChainError, FormatError
from ..x509_path import ca_policy, load_der, subject_of, validation_reason
from .cbor import CborKey, CborValue, decode
from .cose_sign1 import parse_cose_sign1

NITRO_ROOT_FILE = "aws-nitro-enclaves-root-g1.pem"
MAX_DOCUMENT_BYTES = 64 * 1024
# AWS's limits on the caller's fields, and on the chain: root, regional, zonal, instance.
MAX_CALLER_FIELD = 1024
MAX_CABUNDLE = 8
PCR_COUNT = 24
SHA384_SIZE = 48


@dataclass(frozen=True)
class NitroDocument:
    """The payload of a NitroTPM attestation document, as signed."""

    module_id: str
    timestamp: datetime.datetime
    digest: str
    pcrs: Mapping[int, bytes] = field(hash=False)
    """SHA-384 PCR values of the NitroTPM when the document was made."""
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None


@dataclass(frozen=True)
class VerifiedNitroDocument:
    document: NitroDocument
    chain: tuple[x509.Certificate, ...]
    """Leaf first, ending in the trusted root."""

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]


def bundled_nitro_roots() -> list[x509.Certificate]:
    """The AWS Nitro Attestation PKI root (CN=aws.nitro-enclaves), bundled with its source."""
    data = resources.files("aicert.verifier").joinpath("data", NITRO_ROOT_FILE).read_bytes()
    return x509.load_pem_x509_certificates(data)


def parse_nitro_document(payload: bytes) -> NitroDocument:
    """The payload map, every field checked for type and size."""
    doc = decode(payload, "Nitro attestation document")
    if not isinstance(doc, dict):
        raise FormatError("Nitro attestation document: the payload is not a CBOR map")
    if "pcrs" in doc and "nitrotpm_pcrs" not in doc:
        raise FormatError(
            "Nitro attestation document is a Nitro Enclaves document, not a NitroTPM one"
        )
    digest = _text(doc, "digest")
    if digest != "SHA384":
        raise FormatError(f"Nitro attestation document: digest is {digest!r}, not 'SHA384'")
    timestamp = doc.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp <= 0:
        raise FormatError("Nitro attestation document: timestamp is not a positive integer")
    cabundle = doc.get("cabundle")
    if not isinstance(cabundle, list) or not 0 < len(cabundle) <= MAX_CABUNDLE:
        raise FormatError(
            "Nitro attestation document: cabundle is not a list of 1 to"
            f" {MAX_CABUNDLE} certificates"
        )
    try:
        at = datetime.datetime.fromtimestamp(timestamp / 1000, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        raise FormatError("Nitro attestation document: timestamp is out of range") from None
    return NitroDocument(
        module_id=_text(doc, "module_id"),
        timestamp=at,
        digest=digest,
        pcrs=_pcrs(doc.get("nitrotpm_pcrs")),
        certificate=_bytes(doc, "certificate", MAX_DOCUMENT_BYTES),
        cabundle=tuple(_bundle_entry(c, i) for i, c in enumerate(cabundle)),
        public_key=_optional_bytes(doc, "public_key"),
        user_data=_optional_bytes(doc, "user_data"),
        nonce=_optional_bytes(doc, "nonce"),
    )


def verify_nitro_document(data: bytes, roots: Sequence[x509.Certificate]) -> VerifiedNitroDocument:
    """Check the document's signature and its chain to one of ``roots`` at its own time.

    ``roots`` are the trust anchors (the bundled AWS root, or a test root); the
    document's cabundle is untrusted chain-building material. Raises AkChainError.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"Nitro attestation document is over {MAX_DOCUMENT_BYTES} bytes")
    if not roots:
        raise AkChainError("no trusted root was given for the Nitro attestation document")
    envelope = parse_cose_sign1(data, "Nitro attestation document")
    doc = parse_nitro_document(envelope.payload)
    leaf = load_der(doc.certificate, "the Nitro document's signing certificate")
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not envelope.verify(key):
        raise AkChainError(
            f"the Nitro attestation document's signature does not verify under its signing"
            f" certificate {subject_of(leaf)}"
        )
    bundle = [load_der(der, f"Nitro cabundle entry {n}") for n, der in enumerate(doc.cabundle)]
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(doc.timestamp)
        .max_chain_depth(MAX_CABUNDLE)
        .extension_policies(ca_policy=ca_policy(), ee_policy=_leaf_policy())
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, bundle)
    except VerificationError as exc:
        raise AkChainError(
            f"the Nitro attestation document's certificate {subject_of(leaf)} does not chain"
            f" to a trusted root at {doc.timestamp.isoformat()}: {validation_reason(exc)}"
        ) from None
    return VerifiedNitroDocument(doc, tuple(verified.chain))


# --------------------------------------------------------------------------- fields


def _text(doc: Mapping[CborKey, CborValue], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise FormatError(f"Nitro attestation document: {name} is not a non-empty text string")
    return value


def _bytes(doc: Mapping[CborKey, CborValue], name: str, limit: int) -> bytes:
    value = doc.get(name)
    if not isinstance(value, bytes) or not 0 < len(value) <= limit:
        raise FormatError(
            f"Nitro attestation document: {name} is not a byte string of 1 to {limit} bytes"
        )
    return value


def _optional_bytes(doc: Mapping[CborKey, CborValue], name: str) -> bytes | None:
    if doc.get(name) is None:
        return None
    return _bytes(doc, name, MAX_CALLER_FIELD)


def _bundle_entry(value: CborValue, index: int) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise FormatError(f"Nitro attestation document: cabundle[{index}] is not a byte string")
    return value


def _pcrs(value: CborValue) -> dict[int, bytes]:
    if not isinstance(value, dict) or not value:
        raise FormatError("Nitro attestation document: nitrotpm_pcrs is not a non-empty map")
    pcrs: dict[int, bytes] = {}
    for index, digest in value.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < PCR_COUNT:
            raise FormatError(f"Nitro attestation document: PCR index {index!r} is not 0-23")
        if not isinstance(digest, bytes) or len(digest) != SHA384_SIZE:
            raise FormatError(
                f"Nitro attestation document: PCR {index} is not a {SHA384_SIZE}-byte SHA-384 value"
            )
        pcrs[index] = digest
    return pcrs


# --------------------------------------------------------------------------- chain policy


def _leaf_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        raise ValueError("the document's signing certificate is a CA certificate")


def _leaf_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.digital_signature:
        raise ValueError("the signing certificate's key usage does not allow digitalSignature")


def _leaf_policy() -> ExtensionPolicy:
    # Nitro's leaves are not TLS certificates: no EKU, no subjectAltName.
    return (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_basic_constraints)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_key_usage)
    )
