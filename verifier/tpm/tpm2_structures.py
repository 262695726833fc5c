"""TPM 2.0 wire structures a verifier needs: public areas, attestations, signatures.

Pure parsers over untrusted bytes (TPM 2.0 Library, Part 2 "Structures"), all
big-endian through :class:`~aicert.verifier.wire.Reader`. Every size field is
checked against the limits a real TPM obeys, and a structure followed by extra
bytes is refused, so one blob has exactly one meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import FormatError, QuoteStructureError
from ..wire import Reader
from .pcr import ALGORITHMS_BY_ID, HashAlgorithm, algorithm

# TPM_ALG_ID values (Part 2, table 9) used below.
ALG_RSA = 0x0001
ALG_KEYEDHASH = 0x0008
ALG_NULL = 0x0010
ALG_RSASSA = 0x0014
ALG_RSAES = 0x0015
ALG_RSAPSS = 0x0016
ALG_OAEP = 0x0017
ALG_ECDSA = 0x0018
ALG_ECDH = 0x0019
ALG_ECDAA = 0x001A
ALG_SM2 = 0x001B
ALG_ECSCHNORR = 0x001C
ALG_ECMQV = 0x001D
ALG_KDF1_SP800_56A = 0x0020
ALG_KDF2 = 0x0021
ALG_KDF1_SP800_108 = 0x0022
ALG_ECC = 0x0023
ALG_SYMCIPHER = 0x0025

TPM_GENERATED_VALUE = 0xFF544347
ST_ATTEST_QUOTE = 0x8018

# The other TPMI_ST_ATTEST values, named so a non-quote is refused by name.
OTHER_ATTEST_TYPES: dict[int, str] = {
    0x8014: "TPM_ST_ATTEST_NV",
    0x8015: "TPM_ST_ATTEST_COMMAND_AUDIT",
    0x8016: "TPM_ST_ATTEST_SESSION_AUDIT",
    0x8017: "TPM_ST_ATTEST_CERTIFY",
    0x8019: "TPM_ST_ATTEST_TIME",
    0x801A: "TPM_ST_ATTEST_CREATION",
    0x801C: "TPM_ST_ATTEST_NV_DIGEST",
}

# TPMA_OBJECT bits (Part 2, table 31).
ATTR_FIXED_TPM = 1 << 1
ATTR_FIXED_PARENT = 1 << 4
ATTR_SENSITIVE_DATA_ORIGIN = 1 << 5
ATTR_USER_WITH_AUTH = 1 << 6
ATTR_RESTRICTED = 1 << 16
ATTR_DECRYPT = 1 << 17
ATTR_SIGN = 1 << 18

# Limits of a TPM (Part 2 and the reference implementation's TpmProfile).
MAX_DIGEST_SIZE = 64  # SHA-512
MAX_NAME_SIZE = 2 + MAX_DIGEST_SIZE  # TPMU_NAME: a TPMT_HA
MAX_DATA_SIZE = 2 + MAX_DIGEST_SIZE  # TPM2B_DATA holds up to sizeof(TPMT_HA)
MAX_PCR_SELECTIONS = 16  # HASH_COUNT is far smaller on every real TPM
MAX_SIZE_OF_SELECT = 4  # up to 32 PCRs
PCR_SELECT_SIZE = 3  # what a TPM with 24 PCRs expects
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 8192
MAX_RSA_BYTES = MAX_RSA_BITS // 8
MAX_SYM_KEY_BITS = 512
MAX_ECC_BYTES = 66  # P-521
MAX_PUBLIC_SIZE = 2048

# TPM_ECC_CURVE values this verifier can check, with their coordinate sizes.
ECC_CURVES: dict[int, tuple[str, int, type[ec.EllipticCurve]]] = {
    0x0003: ("NIST P-256", 32, ec.SECP256R1),
    0x0004: ("NIST P-384", 48, ec.SECP384R1),
    0x0005: ("NIST P-521", 66, ec.SECP521R1),
}

# Schemes whose details are one TPMI_ALG_HASH (TPMS_SCHEME_HASH and friends).
_HASH_SCHEMES = {ALG_RSASSA, ALG_RSAPSS, ALG_OAEP, ALG_ECDSA, ALG_ECDH, ALG_SM2, ALG_ECSCHNORR}
_RSA_SCHEMES = {ALG_RSASSA, ALG_RSAPSS, ALG_OAEP, ALG_RSAES, ALG_NULL}
_ECC_SCHEMES = {ALG_ECDSA, ALG_ECDH, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR, ALG_ECMQV, ALG_NULL}
_KDF_SCHEMES = {ALG_KDF1_SP800_56A, ALG_KDF2, ALG_KDF1_SP800_108, ALG_NULL}


def _hash_alg(r: Reader, field: str) -> HashAlgorithm:
    tpm_id = r.u16(field)
    if tpm_id not in ALGORITHMS_BY_ID:
        raise FormatError(f"{r.what}: {field} 0x{tpm_id:04x} is not a supported hash algorithm")
    return algorithm(tpm_id)


# --------------------------------------------------------------------------- PCR selection


@dataclass(frozen=True)
class PcrBank:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indexes selected in it."""

    alg: HashAlgorithm
    pcrs: tuple[int, ...]
    size_of_select: int = PCR_SELECT_SIZE


@dataclass(frozen=True)
class PcrSelection:
    """A TPML_PCR_SELECTION, banks in wire order, PCR indexes ascending within a bank."""

    banks: tuple[PcrBank, ...]

    @classmethod
    def of(cls, banks: Mapping[HashAlgorithm, Iterable[int]]) -> PcrSelection:
        """A selection of ``{bank: pcr indexes}`` as a TPM with 24 PCRs expects it."""
        built = []
        for alg, pcrs in banks.items():
            indexes = tuple(sorted(set(pcrs)))
            if any(not 0 <= i < 8 * PCR_SELECT_SIZE for i in indexes):
                raise FormatError(f"PCR selection: {alg.name} indexes must be 0..23")
            built.append(PcrBank(alg, indexes))
        return cls(tuple(built))

    def bank(self, alg: HashAlgorithm) -> PcrBank | None:
        return next((b for b in self.banks if b.alg == alg), None)


def read_pcr_selection(r: Reader) -> PcrSelection:
    count = r.u32("TPML_PCR_SELECTION count")
    if count > MAX_PCR_SELECTIONS:
        raise FormatError(
            f"{r.what}: PCR selection has {count} banks, more than {MAX_PCR_SELECTIONS}"
        )
    banks: list[PcrBank] = []
    for n in range(count):
        alg = _hash_alg(r, f"PCR selection {n} hash")
        if any(b.alg == alg for b in banks):
            raise FormatError(f"{r.what}: PCR selection names the {alg.name} bank twice")
        size = r.u8(f"PCR selection {n} sizeofSelect")
        if size > MAX_SIZE_OF_SELECT:
            raise FormatError(
                f"{r.what}: PCR selection sizeofSelect {size} exceeds {MAX_SIZE_OF_SELECT}"
            )
        bitmap = r.take(size, f"PCR selection {n} bitmap")
        pcrs = tuple(
            8 * byte_index + bit
            for byte_index, byte in enumerate(bitmap)
            for bit in range(8)
            if byte & (1 << bit)
        )
        banks.append(PcrBank(alg, pcrs, size))
    return PcrSelection(tuple(banks))


def parse_pcr_selection(data: bytes) -> PcrSelection:
    r = Reader(data, endian="big", what="TPML_PCR_SELECTION")
    selection = read_pcr_selection(r)
    r.expect_end()
    return selection


def encode_pcr_selection(selection: PcrSelection) -> bytes:
    """The TPML_PCR_SELECTION bytes of ``selection`` (inverse of :func:`parse_pcr_selection`)."""
    out = bytearray(len(selection.banks).to_bytes(4, "big"))
    for bank in selection.banks:
        bitmap = bytearray(bank.size_of_select)
        for index in bank.pcrs:
            if not 0 <= index < 8 * bank.size_of_select:
                raise FormatError(
                    f"PCR {index} does not fit a {bank.size_of_select}-byte selection bitmap"
                )
            bitmap[index // 8] |= 1 << (index % 8)
        out += bank.alg.tpm_id.to_bytes(2, "big") + bytes([bank.size_of_select]) + bitmap
    return bytes(out)


# --------------------------------------------------------------------------- public area


@dataclass(frozen=True)
class SymmetricDef:
    """TPMT_SYM_DEF_OBJECT; ``algorithm`` is ALG_NULL for signing keys."""

    algorithm: int
    key_bits: int = 0
    mode: int = ALG_NULL


@dataclass(frozen=True)
class Scheme:
    """A key's TPMT_RSA_SCHEME or TPMT_ECC_SCHEME; ``hash_alg`` None for NULL or RSAES."""

    scheme: int
    hash_alg: HashAlgorithm | None = None
    count: int = 0  # ECDAA only


@dataclass(frozen=True)
class RsaParameters:
    symmetric: SymmetricDef
    scheme: Scheme
    key_bits: int
    exponent: int  # as on the wire: 0 means 65537


@dataclass(frozen=True)
class EccParameters:
    symmetric: SymmetricDef
    scheme: Scheme
    curve_id: int
    kdf: Scheme


@dataclass(frozen=True)
class TpmPublic:
    """A TPMT_PUBLIC of an RSA or ECC key, with the exact bytes it was read from."""

    type: int
    name_alg: HashAlgorithm
    object_attributes: int
    auth_policy: bytes
    parameters: RsaParameters | EccParameters
    unique: bytes  # RSA: the modulus; ECC: x || y, each padded to the curve size
    raw: bytes  # the TPMT_PUBLIC bytes, hashed into the name

    @property
    def fixed_tpm(self) -> bool:
        return bool(self.object_attributes & ATTR_FIXED_TPM)

    @property
    def fixed_parent(self) -> bool:
        return bool(self.object_attributes & ATTR_FIXED_PARENT)

    @property
    def sensitive_data_origin(self) -> bool:
        return bool(self.object_attributes & ATTR_SENSITIVE_DATA_ORIGIN)

    @property
    def is_restricted_signing_key(self) -> bool:
        """Restricted and sign, not decrypt: the TPM signs only data it generated itself."""
        attrs = self.object_attributes
        return bool(attrs & ATTR_RESTRICTED and attrs & ATTR_SIGN and not attrs & ATTR_DECRYPT)

    @property
    def scheme(self) -> Scheme:
        return self.parameters.scheme

    def name(self) -> bytes:
        """TPM2B_NAME contents: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC)."""
        return self.name_alg.tpm_id.to_bytes(2, "big") + self.name_alg.hash(self.raw)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        params = self.parameters
        try:
            if isinstance(params, RsaParameters):
                exponent = params.exponent or 65537
                return rsa.RSAPublicNumbers(
                    exponent, int.from_bytes(self.unique, "big")
                ).public_key()
            _, size, curve = ECC_CURVES[params.curve_id]
            x = int.from_bytes(self.unique[:size], "big")
            y = int.from_bytes(self.unique[size:], "big")
            return ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
        except ValueError as exc:
            raise FormatError(f"TPMT_PUBLIC: the key is not a valid public key: {exc}") from None


def _read_symmetric(r: Reader) -> SymmetricDef:
    alg = r.u16("symmetric algorithm")
    if alg == ALG_NULL:
        return SymmetricDef(alg)
    key_bits = r.u16("symmetric keyBits")
    if key_bits == 0 or key_bits > MAX_SYM_KEY_BITS:
        raise FormatError(f"{r.what}: symmetric key size {key_bits} bits is out of range")
    return SymmetricDef(alg, key_bits, r.u16("symmetric mode"))


def _read_scheme(r: Reader, allowed: set[int], field: str) -> Scheme:
    scheme = r.u16(field)
    if scheme not in allowed:
        raise FormatError(f"{r.what}: {field} 0x{scheme:04x} is not allowed here")
    if scheme in (ALG_NULL, ALG_RSAES):
        return Scheme(scheme)
    hash_alg = _hash_alg(r, f"{field} hash")
    if scheme == ALG_ECDAA:
        return Scheme(scheme, hash_alg, r.u16(f"{field} count"))
    if scheme in _HASH_SCHEMES or scheme in _KDF_SCHEMES:
        return Scheme(scheme, hash_alg)
    raise FormatError(f"{r.what}: {field} 0x{scheme:04x} is not supported")


def _read_public(
    r: Reader,
) -> tuple[int, HashAlgorithm, int, bytes, RsaParameters | EccParameters, bytes]:
    key_type = r.u16("type")
    if key_type in (ALG_KEYEDHASH, ALG_SYMCIPHER):
        raise FormatError(f"{r.what}: a symmetric object (type 0x{key_type:04x}) is not a key pair")
    if key_type not in (ALG_RSA, ALG_ECC):
        raise FormatError(f"{r.what}: unknown object type 0x{key_type:04x}")
    name_alg = _hash_alg(r, "nameAlg")
    attributes = r.u32("objectAttributes")
    auth_policy = r.sized(2, "authPolicy", limit=MAX_DIGEST_SIZE)
    params: RsaParameters | EccParameters
    if key_type == ALG_RSA:
        symmetric = _read_symmetric(r)
        scheme = _read_scheme(r, _RSA_SCHEMES, "RSA scheme")
        key_bits = r.u16("keyBits")
        if not MIN_RSA_BITS <= key_bits <= MAX_RSA_BITS or key_bits % 8:
            raise FormatError(f"{r.what}: RSA key size {key_bits} bits is out of range")
        exponent = r.u32("exponent")
        if exponent != 0 and (exponent < 3 or exponent % 2 == 0):
            raise FormatError(f"{r.what}: RSA exponent {exponent} is not valid")
        params = RsaParameters(symmetric, scheme, key_bits, exponent)
        modulus = r.sized(2, "RSA modulus", limit=MAX_RSA_BYTES)
        if len(modulus) != key_bits // 8 or modulus[0] & 0x80 == 0:
            raise FormatError(
                f"{r.what}: RSA modulus is {len(modulus)} bytes long or not full size "
                f"for a {key_bits}-bit key"
            )
        unique = modulus
    else:
        symmetric = _read_symmetric(r)
        scheme = _read_scheme(r, _ECC_SCHEMES, "ECC scheme")
        curve_id = r.u16("curveID")
        if curve_id not in ECC_CURVES:
            raise FormatError(f"{r.what}: ECC curve 0x{curve_id:04x} is not supported")
        kdf = _read_scheme(r, _KDF_SCHEMES, "KDF scheme")
        params = EccParameters(symmetric, scheme, curve_id, kdf)
        size = ECC_CURVES[curve_id][1]
        x = r.sized(2, "ECC point x", limit=MAX_ECC_BYTES)
        y = r.sized(2, "ECC point y", limit=MAX_ECC_BYTES)
        if len(x) > size or len(y) > size:
            raise FormatError(f"{r.what}: ECC point coordinates are longer than the curve size")
        unique = x.rjust(size, b"\0") + y.rjust(size, b"\0")
    return key_type, name_alg, attributes, auth_policy, params, unique


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """A bare TPMT_PUBLIC (no size prefix)."""
    if len(data) > MAX_PUBLIC_SIZE:
        raise FormatError(f"TPMT_PUBLIC: {len(data)} bytes is larger than any TPM public area")
    r = Reader(data, endian="big", what="TPMT_PUBLIC")
    key_type, name_alg, attributes, policy, params, unique = _read_public(r)
    r.expect_end()
    return TpmPublic(key_type, name_alg, attributes, policy, params, unique, bytes(data))


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC: a 2-byte size then exactly that many bytes of TPMT_PUBLIC."""
    r = Reader(data, endian="big", what="TPM2B_PUBLIC")
    inner = r.sized(2, "publicArea", limit=MAX_PUBLIC_SIZE)
    r.expect_end()
    return parse_tpmt_public(inner)


# --------------------------------------------------------------------------- attestation


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE, with the bytes that were signed."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: PcrSelection
    pcr_digest: bytes
    raw: bytes

    magic: ClassVar[int] = TPM_GENERATED_VALUE
    type: ClassVar[int] = ST_ATTEST_QUOTE


def parse_attest(data: bytes) -> Attest:
    """A TPMS_ATTEST that must be a TPM-generated quote.

    A wrong magic or another attestation type raises QuoteStructureError: those
    bytes were not produced by TPM2_Quote, whatever else they are.
    """
    r = Reader(data, endian="big", what="TPMS_ATTEST")
    magic = r.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise QuoteStructureError(
            f"attestation magic is 0x{magic:08x}, not TPM_GENERATED_VALUE 0xff544347: "
            "the TPM did not generate it"
        )
    attest_type = r.u16("type")
    if attest_type != ST_ATTEST_QUOTE and attest_type not in OTHER_ATTEST_TYPES:
        raise FormatError(f"TPMS_ATTEST: unknown attestation type 0x{attest_type:04x}")
    qualified_signer = r.sized(2, "qualifiedSigner", limit=MAX_NAME_SIZE)
    extra_data = r.sized(2, "extraData", limit=MAX_DATA_SIZE)
    clock = r.u64("clock")
    reset_count = r.u32("resetCount")
    restart_count = r.u32("restartCount")
    safe = r.u8("safe")
    if safe > 1:
        raise FormatError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
    firmware_version = r.u64("firmwareVersion")
    if attest_type != ST_ATTEST_QUOTE:
        raise QuoteStructureError(
            f"attestation is a {OTHER_ATTEST_TYPES[attest_type]} structure, "
            "not a quote (TPM_ST_ATTEST_QUOTE)"
        )
    selection = read_pcr_selection(r)
    pcr_digest = r.sized(2, "pcrDigest", limit=MAX_DIGEST_SIZE)
    r.expect_end()
    return Attest(
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=ClockInfo(clock, reset_count, restart_count, bool(safe)),
        firmware_version=firmware_version,
        pcr_selection=selection,
        pcr_digest=pcr_digest,
        raw=bytes(data),
    )


# --------------------------------------------------------------------------- signature


@dataclass(frozen=True)
class RsaSignature:
    """TPMT_SIGNATURE with sigAlg RSASSA or RSAPSS."""

    sig_alg: int
    hash_alg: HashAlgorithm
    signature: bytes


@dataclass(frozen=True)
class EcdsaSignature:
    """TPMT_SIGNATURE with sigAlg ECDSA: the integers r and s."""

    hash_alg: HashAlgorithm
    r: int
    s: int

    sig_alg: ClassVar[int] = ALG_ECDSA


Signature = RsaSignature | EcdsaSignature

SIGNATURE_NAMES = {ALG_RSASSA: "RSASSA", ALG_RSAPSS: "RSAPSS", ALG_ECDSA: "ECDSA"}


def parse_signature(data: bytes) -> Signature:
    """A TPMT_SIGNATURE of scheme RSASSA, RSAPSS or ECDSA."""
    r = Reader(data, endian="big", what="TPMT_SIGNATURE")
    sig_alg = r.u16("sigAlg")
    if sig_alg not in SIGNATURE_NAMES:
        raise FormatError(f"TPMT_SIGNATURE: signature scheme 0x{sig_alg:04x} is not supported")
    hash_alg = _hash_alg(r, "hash")
    sig: Signature
    if sig_alg == ALG_ECDSA:
        sig_r = r.sized(2, "signatureR", limit=MAX_ECC_BYTES)
        sig_s = r.sized(2, "signatureS", limit=MAX_ECC_BYTES)
        sig = EcdsaSignature(hash_alg, int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))
    else:
        value = r.sized(2, "sig", limit=MAX_RSA_BYTES)
        if len(value) * 8 < MIN_RSA_BITS:
            raise FormatError(f"TPMT_SIGNATURE: RSA signature of {len(value)} bytes is too short")
        sig = RsaSignature(sig_alg, hash_alg, value)
    r.expect_end()
    return sig
