"""Reference bundles signed with sigstore, verified offline with sigstore-python.

A maintainer who signs with sigstore (a short-lived Fulcio certificate for an OIDC
identity, logged in Rekor) publishes a sigstore bundle whose DSSE envelope carries the
same reference statement as a maintainer-key bundle (``verifier/boot/reference_bundle.py``).
``aicert-verify --reference B.sigstore.json --sigstore-trust-root trusted_root.json
--sigstore-identity ID --sigstore-issuer URL`` checks it without any network access:
sigstore-python verifies the certificate chain to the given trust root, the signed
timestamps or transparency-log inclusion proof it carries, and that the certificate
names exactly that identity and OIDC issuer; then the statement gets the same checks
as any reference bundle (validity window, digests). sigstore-python is an optional
dependency (``pip install 'aicert[sigstore]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import FormatError, InputError, ReferenceBundleError
from ..input_file import MAX_PEM_BYTES, MAX_REFERENCE_BYTES, read_input_file
from ..statement.dsse import IN_TOTO_PAYLOAD_TYPE
from .reference_bundle import ReferenceBundle, verify_statement

MAX_TRUST_ROOT_BYTES = 16 * MAX_PEM_BYTES


@dataclass(frozen=True)
class SigstoreSigner:
    """Whom the bundle must be from: the trust root, and the certificate's identity."""

    trust_root: Path
    identity: str
    issuer: str


def load_sigstore_bundle(
    path: Path, signer: SigstoreSigner, now: datetime | None = None
) -> ReferenceBundle:
    try:
        from sigstore.errors import Error as SigstoreError  # noqa: PLC0415 - optional extra
        from sigstore.models import Bundle, TrustedRoot  # noqa: PLC0415
        from sigstore.verify import Verifier, policy  # noqa: PLC0415
    except ImportError:
        raise InputError(
            "verifying a sigstore bundle needs sigstore-python: pip install 'aicert[sigstore]'"
        ) from None
    where = f"reference bundle {path}"
    # Read through the bounded reader first: from_file would read any size or kind of file.
    read_input_file(signer.trust_root, "sigstore trust root", MAX_TRUST_ROOT_BYTES)
    data = read_input_file(path, "reference bundle", MAX_REFERENCE_BYTES)
    try:
        trusted_root = TrustedRoot.from_file(str(signer.trust_root))
    except (SigstoreError, ValueError, OSError) as exc:
        raise FormatError(
            f"sigstore trust root {signer.trust_root} is malformed: {_line(exc)}"
        ) from None
    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise FormatError(f"{where} is not a sigstore bundle: {_line(exc)}") from None
    identity = policy.Identity(identity=signer.identity, issuer=signer.issuer)
    try:
        payload_type, payload = Verifier(trusted_root=trusted_root).verify_dsse(bundle, identity)
    except SigstoreError as exc:
        raise ReferenceBundleError(f"{where} is refused: {_line(exc)}") from None
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"{where}: payloadType is not {IN_TOTO_PAYLOAD_TYPE}")
    who = f"sigstore identity {signer.identity} (issuer {signer.issuer})"
    return verify_statement(payload, str(path), who, now or datetime.now(UTC))


def _line(exc: Exception) -> str:
    """sigstore's and pydantic's messages span lines; the error is one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"
