"""An IETF RATS attestation result (EAR) of a verification report, as a signed JWT.

``aicert-verify --ear FILE --ear-key KEY`` turns the report into an EAT Attestation
Result (draft-ietf-rats-ear, JSON claim names of its CDDL with profile
``tag:ietf.org,2026:rats/ear#04``) with one appraisal per submodule:

- ``boot``: which OS image booted (boot PCRs against the recipe or UKI, the image's
  dm-verity root hash named by the statement, the firmware log replay);
- ``platform``: the TPM (AK chain to a root, quote signature, binding of quote and
  statement) and the firmware (platform profile);
- ``training``: the measured job (statement signature, CEL log matched event by event,
  nonce, weights and inputs the auditor holds);
- ``evaluation``: the evaluations the certificate records, and their results files.

Each appraisal carries an AR4SI trustworthiness vector (draft-ietf-rats-ar4si) whose
values follow from the checks' outcomes: 2 (affirming) when the checks behind a claim
passed, 96 (contraindicated) when one failed, 0 (no claim) when they were skipped or
not run, and 32 (warning) for hardware when the AK chain ends in a local test root
rather than a cloud's vTPM root. ``ear_status`` is the worst tier among its claims.

The JWT is signed with ES256 (ECDSA P-256) or EdDSA (Ed25519), whichever the key is.
aicert writes no unsigned EAR: an unsecured JWT (``alg: none``) would let anyone
forge a result, and relying parties that accept it by mistake exist.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from aicert.verifier.errors import InputError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from aicert.verifier.verify import Report, Status

EAR_PROFILE = "tag:ietf.org,2026:rats/ear#04"
MEDIA_TYPE = "application/eat-ear+jwt"

NO_CLAIM = 0
AFFIRMING = 2
WARNING = 32
CONTRAINDICATED = 96

EarKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# submodule -> AR4SI claim -> the checks that establish it.
CLAIMS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "boot": {
        "executables": ("pcr-digest", "boot-pcrs"),
        "file-system": ("boot-pcrs",),
        "configuration": ("firmware-log",),
    },
    "platform": {
        "instance-identity": ("ak-chain",),
        "hardware": ("ak-chain", "quote-signature", "binding"),
        "configuration": ("platform-profile",),
    },
    "training": {
        "executables": ("statement", "envelope-signature", "cel-log"),
        "sourced-data": ("nonce", "weights", "files"),
    },
    "evaluation": {
        "executables": ("evaluations",),
        # No evaluation, no claim about its data, even when the inputs matched.
        "sourced-data": ("evaluations", "files"),
    },
}


def load_ear_key(path: Path) -> EarKey:
    """The verifier's signing key: unencrypted PEM, ECDSA P-256 or Ed25519."""
    data = read_input_file(path, "EAR signing key", MAX_PEM_BYTES)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InputError(f"EAR signing key {path} is not an unencrypted PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return key
    raise InputError(f"EAR signing key {path} is neither ECDSA P-256 nor Ed25519")


def _claim(results: Mapping[str, Status], checks: Iterable[str]) -> int:
    statuses = [results.get(check, Status.NOT_RUN) for check in checks]
    if Status.FAILED in statuses:
        return CONTRAINDICATED
    if all(s is Status.PASSED for s in statuses):
        return AFFIRMING
    return NO_CLAIM


def _tier(vector: Mapping[str, int]) -> str:
    worst = max(vector.values(), default=NO_CLAIM)
    if worst >= CONTRAINDICATED:
        return "contraindicated"
    if worst >= WARNING:
        return "warning"
    if worst >= AFFIRMING:
        return "affirming"
    return "none"


def ear_claims(report: Report, issued_at: datetime, build: str) -> dict[str, object]:
    """The EAR claims-set of ``report``: one appraisal per submodule."""
    results = {r.check: r.status for r in report.results}
    submods: dict[str, object] = {}
    tiers = []
    for name, claims in CLAIMS.items():
        vector = {claim: _claim(results, checks) for claim, checks in claims.items()}
        local = report.root_of_trust is not None and not report.root_of_trust.hardware
        if name == "platform" and local and vector["hardware"] == AFFIRMING:
            vector["hardware"] = WARNING
        tier = _tier(vector)
        tiers.append(tier)
        submods[name] = {"ear_status": tier, "ear_trustworthiness_vector": vector}
    order = ("none", "affirming", "warning", "contraindicated")
    claims_set: dict[str, object] = {
        "eat_profile": EAR_PROFILE,
        "iat": int(issued_at.timestamp()),
        "ear_verifier_id": {"developer": "aicert", "build": build},
        "ear_status": max(tiers, key=order.index),
        "submods": submods,
    }
    return claims_set


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_jwt(claims: Mapping[str, object], key: EarKey) -> str:
    """A compact JWS (RFC 7515) of ``claims``: ES256 or EdDSA after the key."""
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    header = {"alg": alg, "typ": "JWT"}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    ).encode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        # JWS wants r || s, each 32 bytes, not the DER that cryptography returns.
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input.decode("ascii") + "." + _b64url(signature)


def write_ear(report: Report, out: Path, key: EarKey, issued_at: datetime, build: str) -> None:
    token = encode_jwt(ear_claims(report, issued_at, build), key)
    try:
        out.write_text(token + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the EAR to {out}: {exc.strerror}") from None
