"""Offline checks of NVIDIA GPU attestation evidence recorded in a statement.

For each GPU with evidence: the device certificate chain leads to a trusted NVIDIA
device root (by default the bundled "NVIDIA Device Identity CA"); the report parses and
its signature verifies under the leaf's P-384 key; its request nonce is the one
:func:`aicert.verifier.gpu.record.gpu_nonce` binds to this session; the report's driver and
VBIOS versions are the ones the statement records; and, given RIM files, every golden
measurement matches. The policy can require CC mode and a number of GPUs.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import (
    FormatError,
    GpuCcModeError,
    GpuChainError,
    GpuEvidenceError,
    GpuMeasurementError,
    GpuMissingError,
    GpuNonceError,
    GpuSignatureError,
)
from .nvidia_rim import Rim
from .record import GpuAttestation, GpuRecord, gpu_nonce
from .spdm import (
    OPAQUE_DRIVER_VERSION,
    OPAQUE_VBIOS_VERSION,
    AttestationReport,
    parse_attestation_report,
)

NVIDIA_ROOT_FILE = "nvidia-device-identity-ca.pem"
NVIDIA_RIM_ROOT_FILE = "nvidia-rim-root-ca.pem"


@dataclass(frozen=True)
class GpuPolicy:
    """What the auditor requires of the GPUs (``--require-gpus``, ``--require-gpu-cc``)."""

    roots: tuple[x509.Certificate, ...]
    rims: tuple[Rim, ...] = ()
    rim_roots: tuple[x509.Certificate, ...] = ()
    """Roots of the RIM signers (default: the bundled NVIDIA CoRIM signing root)."""
    require_gpus: int = 0
    require_cc: bool = False


def bundled_nvidia_roots() -> tuple[x509.Certificate, ...]:
    return _bundled(NVIDIA_ROOT_FILE)


def bundled_rim_roots() -> tuple[x509.Certificate, ...]:
    return _bundled(NVIDIA_RIM_ROOT_FILE)


def _bundled(name: str) -> tuple[x509.Certificate, ...]:
    data = resources.files("aicert.verifier").joinpath("data", name).read_bytes()
    return tuple(x509.load_pem_x509_certificates(data))


def vbios_version(report: AttestationReport) -> str:
    """The VBIOS version in nvidia-smi's dotted form: bytes 3.2.1.0.4 of the LE field."""
    raw = report.opaque_bytes(OPAQUE_VBIOS_VERSION)
    if len(raw) != 8:
        return ""
    word = int.from_bytes(raw, "little")
    parts = [(word >> shift) & 0xFF for shift in (24, 16, 8, 0, 32)]
    return ".".join(f"{p:02X}" for p in parts)


def check_gpus(
    gpus: Sequence[GpuRecord],
    policy: GpuPolicy,
    session_nonce: str,
    agent_key_sha256: str,
    at: datetime,
) -> str:
    """Raise a GpuEvidenceError subclass at the first GPU the policy refuses."""
    if len(gpus) < policy.require_gpus:
        raise GpuMissingError(
            f"the certificate records {len(gpus)} GPU(s); the policy requires {policy.require_gpus}"
        )
    expected = gpu_nonce(session_nonce, agent_key_sha256)
    attested = 0
    for gpu in gpus:
        if policy.require_cc and gpu.cc_mode != "on":
            raise GpuCcModeError(
                f"GPU {gpu.uuid} is in CC mode {gpu.cc_mode!r}; the policy requires 'on'"
            )
        if gpu.attestation is None:
            if gpu.cc_mode != "off":
                raise GpuCcModeError(
                    f"GPU {gpu.uuid} claims CC mode {gpu.cc_mode!r} but carries no evidence"
                )
            continue
        check_evidence(gpu, gpu.attestation, expected, policy, at)
        attested += 1
    if not gpus:
        return "no GPU recorded"
    rims = f", measurements match {len(policy.rims)} RIM(s)" if policy.rims else ""
    return f"{len(gpus)} GPU(s), {attested} with NVIDIA attestation verified{rims}"


def check_evidence(
    gpu: GpuRecord,
    evidence: GpuAttestation,
    expected_nonce: bytes,
    policy: GpuPolicy,
    at: datetime,
) -> AttestationReport:
    if not evidence.verifier_result:
        raise GpuEvidenceError(f"GPU {gpu.uuid}: {evidence.verifier} refused it inside the VM")
    leaf = verify_device_chain(evidence.certificates, policy.roots, at, f"GPU {gpu.uuid}")
    try:
        report = parse_attestation_report(evidence.report)
    except FormatError as exc:
        raise GpuEvidenceError(f"GPU {gpu.uuid}: {exc.message}") from None
    verify_report_signature(report, leaf, gpu.uuid)
    if not hmac.compare_digest(report.request_nonce, expected_nonce):
        raise GpuNonceError(
            f"GPU {gpu.uuid}: the report answers nonce {report.request_nonce.hex()}, "
            f"not {expected_nonce.hex()} (bound to this session's nonce and agent key)"
        )
    if evidence.nonce != expected_nonce.hex():
        raise GpuNonceError(f"GPU {gpu.uuid}: the statement's evidence nonce is not this session's")
    driver = report.opaque_text(OPAQUE_DRIVER_VERSION)
    # NVML spells the VBIOS version's hex digits in either case.
    if driver != gpu.driver_version or vbios_version(report) != gpu.vbios_version.upper():
        raise GpuEvidenceError(
            f"GPU {gpu.uuid}: the report names driver {driver}, VBIOS {vbios_version(report)}; "
            f"the statement says {gpu.driver_version}, {gpu.vbios_version}"
        )
    if policy.rims:
        for rim in policy.rims:
            check_rim_signer(rim, policy.rim_roots or bundled_rim_roots(), at)
        check_measurements(report, policy.rims, gpu.uuid)
    return report


def check_rim_signer(rim: Rim, roots: Sequence[x509.Certificate], at: datetime) -> None:
    """The RIM's signer chain leads to a trusted RIM root and is valid at ``at``."""
    der = [c.public_bytes(Encoding.DER) for c in rim.signers]
    try:
        verify_device_chain(der, roots, at, f"RIM {rim.name} signer")
    except GpuChainError as exc:
        raise GpuMeasurementError(exc.message) from None


def verify_device_chain(
    der_chain: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    at: datetime,
    who: str,
) -> x509.Certificate:
    """Walk leaf → ... → a trusted root; every issuer a CA, every certificate valid ``at``.

    ``who`` names the chain's owner in messages ("GPU <uuid>", "RIM <name>").
    """
    try:
        chain = [x509.load_der_x509_certificate(c) for c in der_chain]
    except ValueError:
        raise GpuChainError(f"{who}: a certificate of its chain is not DER X.509") from None
    for i, cert in enumerate(chain):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise GpuChainError(
                f"{who}: certificate {i} ({cert.subject.rfc4514_string()}) is not valid at {at}"
            )
        if i and not _is_ca(cert):
            raise GpuChainError(f"{who}: certificate {i} issues but is not a CA")
    for child, parent in itertools.pairwise(chain):
        _issued_by(child, parent, who)
    top = chain[-1]
    for root in roots:
        if top == root:
            return chain[0]
        if top.issuer == root.subject:
            try:
                top.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return chain[0]
    raise GpuChainError(
        f"{who}: the certificate chain ends at {top.issuer.rfc4514_string()!r}, "
        "not at a trusted NVIDIA root"
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, parent: x509.Certificate, who: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise GpuChainError(
            f"{who}: {child.subject.rfc4514_string()!r} is not issued by the next "
            "certificate of the chain"
        ) from None


def verify_report_signature(report: AttestationReport, leaf: x509.Certificate, uuid: str) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise GpuSignatureError(f"GPU {uuid}: the device key is not ECDSA P-384")
    half = len(report.signature) // 2
    r = int.from_bytes(report.signature[:half], "big")
    s = int.from_bytes(report.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise GpuSignatureError(
            f"GPU {uuid}: the attestation report's signature does not verify under its "
            "device certificate"
        ) from None


def check_measurements(report: AttestationReport, rims: Sequence[Rim], uuid: str) -> None:
    """Every active golden measurement of the RIMs (index i = SPDM block i + 1) matches."""
    runtime = {b.index: b.value for b in report.measurements}
    seen: dict[int, str] = {}
    for rim in rims:
        for golden in rim.measurements:
            if golden.index in seen:
                raise GpuMeasurementError(
                    f"RIMs {seen[golden.index]} and {rim.name} both give measurement {golden.index}"
                )
            seen[golden.index] = rim.name
            value = runtime.get(golden.index + 1)
            if value is None or value not in golden.values:
                got = value.hex() if value is not None else "nothing"
                raise GpuMeasurementError(
                    f"GPU {uuid}: measurement {golden.index} is {got}, not a golden value "
                    f"of RIM {rim.name} (version {rim.version})"
                )
