"""The AK that a NitroTPM attestation document vouches for (docs/aws.md, "Trust on AWS").

AWS certifies no NitroTPM key. What it signs is the document, for this instance,
with the fields the requester chose. The measured agent asks for one with
``user_data`` = its AK's TPM name and ``nonce`` = SHA-256 of its agent key, so a
document whose boot PCRs are this image's shows that this image's agent named
this AK. Used by ``aicert-verify`` and by ``aicert-build run`` before any input
is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from ..boot.boot_reference import BootReference
from ..errors import AkChainError, AkMismatchError
from ..tpm.tpm2_structures import TpmPublic
from .nitro_document import VerifiedNitroDocument, bundled_nitro_roots, verify_nitro_document


def verify_nitro_ak(
    document: bytes,
    ak: TpmPublic,
    agent_key_sha256: str,
    trust_roots: Sequence[x509.Certificate] = (),
) -> VerifiedNitroDocument:
    """The checked document, if it is AWS's (or a given root's) and names ``ak`` and the
    agent key whose SHA-256 is ``agent_key_sha256``. The boot PCRs are left to
    :func:`check_nitro_boot`."""
    verified = verify_nitro_document(document, [*bundled_nitro_roots(), *trust_roots])
    doc = verified.document
    if doc.user_data != ak.name():
        raise AkMismatchError(
            "the Nitro attestation document's user_data does not name the AK that signed "
            "the quote (it must be the AK's TPM name)"
        )
    if doc.nonce is None or doc.nonce.hex() != agent_key_sha256:
        raise AkMismatchError(
            "the Nitro attestation document's nonce is not SHA-256 of this agent's key: "
            "the document was made for another agent"
        )
    return verified


def describe(verified: VerifiedNitroDocument) -> str:
    doc = verified.document
    return f"Nitro document of {doc.module_id} at {doc.timestamp.isoformat()}"


def check_nitro_boot(verified: VerifiedNitroDocument, reference: BootReference) -> None:
    """Raise AkChainError unless the document's SHA-384 boot PCRs are ``reference``'s."""
    if reference.sha384 is None:
        raise AkChainError(
            f"{reference.source} has no SHA-384 boot predictions, so the {describe(verified)}"
            " cannot show that the instance booted this image; rebuild the recipe with this"
            " aicert-build, or give the UKI with --uki"
        )
    mismatch = reference.sha384.mismatch(verified.document.pcrs)
    if mismatch is not None:
        raise AkChainError(
            f"the {describe(verified)} shows another boot than {reference.source}: "
            f"{mismatch} (SHA-384)"
        )


def is_aws_root(root: x509.Certificate) -> bool:
    return any(root == bundled for bundled in bundled_nitro_roots())
