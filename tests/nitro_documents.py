"""Real NitroTPM attestation documents from EC2, for tests (the test Nitro PKI that signs
documents of the same shape is :mod:`nitro_pki`).

The real document is from lockboot/vaportpm (MIT OR Apache-2.0), commit
eb643add961b72c8aa43a7674ff824d9db02646b, ``crates/vaportpm-verify/test-nitro-fixture.json``:
an EC2 instance (type not recorded) in us-east-1 on 2026-02-03, with the TPM2_Quote its agent made
with the ECC P-256 key named in the document's ``public_key``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REAL_FIXTURE = Path(__file__).parent / "data" / "aws" / "nitrotpm-us-east-1-vaportpm.json"
EARLIER_FIXTURE = REAL_FIXTURE.with_name("nitrotpm-us-east-1-2026-02-01-vaportpm.json")


def real_fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REAL_FIXTURE.read_text())
    return data


def real_document(fixture: Path = REAL_FIXTURE) -> bytes:
    data = json.loads(fixture.read_text())
    return bytes.fromhex(data["attestation"]["nitro"]["document"])
