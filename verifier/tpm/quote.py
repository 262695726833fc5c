"""Checks of a TPM2_Quote: the signature over the attestation, and its PCR digest.

A quote is evidence only when it was signed by a key that the TPM will not use to
sign outside data: a restricted signing key (the TPM refuses to sign, with it, any
digest that begins with TPM_GENERATED_VALUE unless it produced the structure
itself) that never leaves the TPM (fixedTPM). Any other key could sign a forged
TPMS_ATTEST, so :func:`verify_quote_signature` refuses it before looking at the
signature.

Hash algorithms: SHA-256, SHA-384 and SHA-512 are accepted. SHA-1 only when the
caller passes ``allow_sha1=True`` (older TPM set-ups, such as the GCP vector in
the tests, sign their quotes with SHA-1; SHA-1 collisions are practical, so it is
not accepted by default).

RSASSA-PSS: swtpm (libtpms, the TCG reference code) uses a salt as long as the
digest (pinned by the swtpm tests with openssl); TPMs built to other revisions
of the specification may use the largest salt that fits. The salt length is
therefore recovered from the signature (PSS.AUTO): the salt adds randomness, not
security, so accepting any length costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import FormatError, PcrDigestError, QuoteSignatureError
from .pcr import SHA1, SHA256, SHA384, SHA512, HashAlgorithm
from .tpm2_structures import (
    ALG_ECC,
    ALG_NULL,
    ALG_RSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    SIGNATURE_NAMES,
    Attest,
    EcdsaSignature,
    PcrSelection,
    Signature,
    TpmPublic,
    parse_attest,
    parse_signature,
)

STRONG_HASHES = (SHA256, SHA384, SHA512)
MIN_AK_RSA_BITS = 2048

_CRYPTO_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def check_attestation_key(ak: TpmPublic) -> None:
    """Raise QuoteSignatureError unless ``ak`` can only sign TPM-generated structures."""
    if not ak.is_restricted_signing_key:
        raise QuoteSignatureError(
            "the attestation key is not a restricted signing key, so it could have signed "
            "a forged quote"
        )
    if not ak.fixed_tpm:
        raise QuoteSignatureError(
            "the attestation key is not fixedTPM: it may exist outside the TPM"
        )
    key = ak.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_AK_RSA_BITS:
        raise QuoteSignatureError(
            f"the attestation key is RSA-{key.key_size}, below the {MIN_AK_RSA_BITS} bits required"
        )


def _check_scheme(sig: Signature, ak: TpmPublic, allow_sha1: bool) -> None:
    allowed = (*STRONG_HASHES, SHA1) if allow_sha1 else STRONG_HASHES
    if sig.hash_alg not in allowed:
        raise QuoteSignatureError(
            f"the quote is signed with {sig.hash_alg.name}, which is not accepted"
            + ("" if allow_sha1 else " (SHA-1 needs an explicit opt-in)")
        )
    name = SIGNATURE_NAMES[sig.sig_alg]
    key_kind = "RSA" if ak.type == ALG_RSA else "ECC"
    if (ak.type == ALG_RSA) != (sig.sig_alg in (ALG_RSASSA, ALG_RSAPSS)):
        raise QuoteSignatureError(f"a {name} signature cannot come from an {key_kind} key")
    key_scheme = ak.scheme
    # A restricted key signs only with its own scheme; anything else is not its output.
    if key_scheme.scheme != ALG_NULL and (
        key_scheme.scheme != sig.sig_alg or key_scheme.hash_alg != sig.hash_alg
    ):
        expected = f"{SIGNATURE_NAMES.get(key_scheme.scheme, hex(key_scheme.scheme))}"
        raise QuoteSignatureError(
            f"the quote is signed with {name}/{sig.hash_alg.name} but the attestation key's "
            f"scheme is {expected}/{key_scheme.hash_alg.name if key_scheme.hash_alg else '?'}"
        )


def _verify(sig: Signature, message: bytes, ak: TpmPublic) -> None:
    key = ak.public_key()
    digest = _CRYPTO_HASHES[sig.hash_alg.name]()
    try:
        if isinstance(sig, EcdsaSignature):
            if not isinstance(key, ec.EllipticCurvePublicKey) or ak.type != ALG_ECC:
                raise QuoteSignatureError("an ECDSA signature needs an ECC attestation key")
            key.verify(encode_dss_signature(sig.r, sig.s), message, ec.ECDSA(digest))
            return
        if not isinstance(key, rsa.RSAPublicKey):
            raise QuoteSignatureError("an RSA signature needs an RSA attestation key")
        if len(sig.signature) != (key.key_size + 7) // 8:
            raise QuoteSignatureError(
                f"RSA signature is {len(sig.signature)} bytes, the key is {key.key_size} bits"
            )
        pad: padding.AsymmetricPadding
        if sig.sig_alg == ALG_RSAPSS:
            pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO)
        else:
            pad = padding.PKCS1v15()
        key.verify(sig.signature, message, pad, digest)
    except InvalidSignature:
        raise QuoteSignatureError(
            "the quote signature does not verify under the attestation key"
        ) from None


def verify_quote_signature(
    attest: bytes, signature: bytes, ak: TpmPublic, *, allow_sha1: bool = False
) -> Attest:
    """Verify ``signature`` (TPMT_SIGNATURE) over the exact ``attest`` bytes, then parse them.

    Returns the parsed quote. Raises FormatError if the signed bytes are malformed,
    QuoteStructureError if they are not a TPM-generated quote, QuoteSignatureError if
    the key is unfit or the signature does not verify.
    """
    check_attestation_key(ak)
    # Parsed first, with the bounds-checked parser, so that a truncated or garbled
    # quote is reported as malformed input (exit 3), not as a bad signature.
    parsed = parse_attest(attest)
    try:
        sig = parse_signature(signature)
    except FormatError as exc:
        raise QuoteSignatureError(f"the quote signature is malformed: {exc.message}") from None
    _check_scheme(sig, ak, allow_sha1)
    _verify(sig, attest, ak)
    return parsed


def pcr_digest(alg: HashAlgorithm, selection: PcrSelection, values: Mapping[int, bytes]) -> bytes:
    """H_alg of the selected PCR values concatenated in selection order (TPM2_Quote).

    ``values`` holds one bank, PCR index → value; the selection must name exactly
    one bank (a quote of several banks would need values per bank).
    """
    if len(selection.banks) != 1:
        raise PcrDigestError(
            f"the quote selects {len(selection.banks)} PCR banks; exactly one is supported"
        )
    bank = selection.banks[0]
    parts = []
    for index in bank.pcrs:
        value = values.get(index)
        if value is None:
            raise PcrDigestError(f"no {bank.alg.name} value given for quoted PCR {index}")
        if len(value) != bank.alg.digest_size:
            raise PcrDigestError(
                f"PCR {index} value is {len(value)} bytes, not a {bank.alg.name} digest"
            )
        parts.append(value)
    return alg.hash(b"".join(parts))


_DIGEST_ALGS_BY_SIZE = {a.digest_size: a for a in (SHA1, SHA256, SHA384, SHA512)}


def verify_pcr_digest(
    attest: Attest, values: Mapping[int, bytes], *, alg: HashAlgorithm | None = None
) -> None:
    """Raise PcrDigestError unless ``values`` are exactly the quoted PCRs and hash to pcrDigest.

    ``alg`` is the hash of the quote's signing scheme, which the TPM also uses for
    pcrDigest; when omitted it follows from the digest's length (unique among
    SHA-1/256/384/512). A value for a PCR the quote does not cover is refused:
    nothing vouches for it.
    """
    if alg is None:
        alg_found = _DIGEST_ALGS_BY_SIZE.get(len(attest.pcr_digest))
        if alg_found is None:
            raise PcrDigestError(
                f"quoted pcrDigest is {len(attest.pcr_digest)} bytes, no supported hash"
            )
        alg = alg_found
    if len(attest.pcr_digest) != alg.digest_size:
        raise PcrDigestError(f"quoted pcrDigest is not a {alg.name} digest")
    selected = set(attest.pcr_selection.banks[0].pcrs) if attest.pcr_selection.banks else set()
    unquoted = sorted(set(values) - selected)
    if unquoted:
        raise PcrDigestError(f"PCR values given for PCRs the quote does not cover: {unquoted}")
    if pcr_digest(alg, attest.pcr_selection, values) != attest.pcr_digest:
        raise PcrDigestError("the PCR values do not hash to the quoted pcrDigest")
