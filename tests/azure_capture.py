"""The real Azure Trusted Launch capture in tests/data/azure-vtpm-2026-07-27 (see its README)."""

from __future__ import annotations

import struct
from pathlib import Path

from aicert.verifier.tpm.quote import verify_pcr_digest
from aicert.verifier.tpm.tpm2_structures import Attest, parse_attest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CAPTURE = Path(__file__).parent / "data" / "azure-vtpm-2026-07-27"
CAPTURED_ON = "2026-07-27T00:00:00Z"
VM_SIZE = "Standard_D2s_v7"
REGION = "eastus2"

# tpm2-tools' pcrs layout: TPML_PCR_SELECTION as a C struct (count + 16 selections of
# 8 bytes with padding), a u32 count of TPML_DIGEST lists, then each list's u32 count
# and eight TPM2B_DIGEST slots of u16 size + 64 bytes.
_DIGESTS_AT = 4 + 16 * 8 + 4 + 4
_SLOT = 2 + 64


def quoted_pcrs() -> dict[int, bytes]:
    """PCRs 0-7 of the capture, proven by the quote they belong to (signature and pcrDigest)."""
    raw = (CAPTURE / "pcrs.bin").read_bytes()
    pcrs: dict[int, bytes] = {}
    for pcr in range(8):
        at = _DIGESTS_AT + pcr * _SLOT
        (size,) = struct.unpack_from("<H", raw, at)
        assert size == 32
        pcrs[pcr] = raw[at + 2 : at + 2 + size]
    attest = quote()
    verify_pcr_digest(attest, pcrs)
    return pcrs


def quote() -> Attest:
    message = (CAPTURE / "quote.msg").read_bytes()
    key = serialization.load_pem_public_key((CAPTURE / "ak.pub").read_bytes())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify((CAPTURE / "quote.sig").read_bytes(), message, padding.PKCS1v15(), hashes.SHA256())
    attest = parse_attest(message)
    assert attest.extra_data == bytes.fromhex((CAPTURE / "nonce.hex").read_text().strip())
    return attest


def ak_certificate() -> bytes:
    return (CAPTURE / "akcert_0x01C101D0.der").read_bytes()
