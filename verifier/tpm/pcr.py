"""PCR arithmetic shared by every replay and prediction: hash banks and extend."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import FormatError


@dataclass(frozen=True)
class HashAlgorithm:
    """A TPM hash algorithm (TPM_ALG_ID) as it appears in logs and quotes."""

    tpm_id: int
    name: str
    digest_size: int

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.name, data).digest()

    def zero(self) -> bytes:
        return bytes(self.digest_size)


SHA1 = HashAlgorithm(0x0004, "sha1", 20)
SHA256 = HashAlgorithm(0x000B, "sha256", 32)
SHA384 = HashAlgorithm(0x000C, "sha384", 48)
SHA512 = HashAlgorithm(0x000D, "sha512", 64)

# Every quote covers the SHA-256 bank of PCRs 0-15: firmware, boot and the application PCR.
QUOTED_PCRS = tuple(range(16))

ALGORITHMS_BY_ID: dict[int, HashAlgorithm] = {a.tpm_id: a for a in (SHA1, SHA256, SHA384, SHA512)}
ALGORITHMS_BY_NAME: dict[str, HashAlgorithm] = {a.name: a for a in ALGORITHMS_BY_ID.values()}


def algorithm(tpm_id: int) -> HashAlgorithm:
    try:
        return ALGORITHMS_BY_ID[tpm_id]
    except KeyError:
        raise FormatError(f"unsupported TPM hash algorithm 0x{tpm_id:04x}") from None


def extend(alg: HashAlgorithm, value: bytes, digest: bytes) -> bytes:
    """TPM2_PCR_Extend: new = H(old || digest)."""
    if len(value) != alg.digest_size or len(digest) != alg.digest_size:
        raise FormatError(f"{alg.name} extend needs {alg.digest_size}-byte values")
    return alg.hash(value + digest)


def extend_all(alg: HashAlgorithm, digests: list[bytes], start: bytes | None = None) -> bytes:
    value = alg.zero() if start is None else start
    for digest in digests:
        value = extend(alg, value, digest)
    return value
