"""The application event log in TCG Canonical Event Log JSON form (CEL-JSON).

Each record is ``{"recnum", "pcr", "digests": [{"hashAlg", "digest"}],
"content_type", "content"}``. aicert's records carry ``content_type`` "aicert"
and a JSON object as content; the digest extended into the PCR is the SHA-256 of
the content's RFC 8785 canonical form, so anyone can recompute it from the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CelLogError, FormatError
from ..json_fields import exact_members, lower_hex
from ..statement.canonical_json import JsonValue, canonicalize
from ..tpm.pcr import SHA256, extend_all

CONTENT_TYPE = "aicert"
APPLICATION_PCR = 15
MAX_RECORDS = 100_000


@dataclass(frozen=True)
class CelRecord:
    recnum: int
    pcr: int
    sha256: bytes
    content_type: str
    content: Mapping[str, JsonValue]

    def to_json(self) -> dict[str, Any]:
        return {
            "recnum": self.recnum,
            "pcr": self.pcr,
            "digests": [{"hashAlg": "sha256", "digest": self.sha256.hex()}],
            "content_type": self.content_type,
            "content": self.content,
        }


def content_digest(content: Mapping[str, JsonValue]) -> bytes:
    return hashlib.sha256(canonicalize(content)).digest()


def make_record(recnum: int, content: Mapping[str, JsonValue]) -> CelRecord:
    """A new aicert record for PCR 15 whose digest is computed from its content."""
    return CelRecord(recnum, APPLICATION_PCR, content_digest(content), CONTENT_TYPE, content)


def parse_cel(obj: object) -> tuple[CelRecord, ...]:
    """Parse a CEL-JSON array (untrusted) into records, checking shape only."""
    if not isinstance(obj, list):
        raise FormatError("CEL log must be a JSON array of records")
    if len(obj) > MAX_RECORDS:
        raise FormatError(f"CEL log has {len(obj)} records, more than {MAX_RECORDS}")
    return tuple(_parse_record(i, raw) for i, raw in enumerate(obj))


_RECORD_MEMBERS = ("recnum", "pcr", "digests", "content_type", "content")


def _parse_record(i: int, raw: object) -> CelRecord:
    """One record in its only accepted form: the five members, one SHA-256 digest entry."""
    where = f"CEL record {i}"
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be an object")
    exact_members(raw, _RECORD_MEMBERS, where)
    recnum, pcr = raw["recnum"], raw["pcr"]
    if type(recnum) is not int or type(pcr) is not int:
        raise FormatError(f"{where} needs integer recnum and pcr")
    digests = raw["digests"]
    # The agent logs the SHA-256 digest only; a second entry (even of another bank)
    # would be a second, unreplayed claim about the same event.
    if not isinstance(digests, list) or len(digests) != 1:
        raise FormatError(f"{where} must have exactly one digest entry (sha256)")
    entry = digests[0]
    if not isinstance(entry, Mapping):
        raise FormatError(f"{where} has a malformed digest entry")
    exact_members(entry, ("hashAlg", "digest"), f"{where} digest entry")
    if entry["hashAlg"] != "sha256":
        raise FormatError(f"{where} digest must be hashAlg 'sha256'")
    sha256 = lower_hex(entry["digest"], 32, f"{where} sha256 digest")
    content_type, content = raw["content_type"], raw["content"]
    if not isinstance(content_type, str) or not isinstance(content, Mapping):
        raise FormatError(f"{where} needs a content_type string and an object content")
    return CelRecord(recnum, pcr, sha256, content_type, content)


def check_records(records: Sequence[CelRecord]) -> None:
    """Numbering, PCR, content type, and every digest recomputed from its content."""
    for i, record in enumerate(records):
        if record.recnum != i:
            raise CelLogError(
                f"CEL record {i} has recnum {record.recnum}: records are missing or reordered"
            )
        if record.pcr != APPLICATION_PCR:
            raise CelLogError(f"CEL record {i} extends PCR {record.pcr}, not {APPLICATION_PCR}")
        if record.content_type != CONTENT_TYPE:
            raise CelLogError(
                f"CEL record {i} has content_type {record.content_type!r}, not {CONTENT_TYPE!r}"
            )
        if content_digest(record.content) != record.sha256:
            raise CelLogError(f"CEL record {i} digest does not match its content")


def replay_cel(records: Sequence[CelRecord]) -> bytes:
    """The SHA-256 PCR 15 value the records produce, starting from zero."""
    return extend_all(SHA256, [r.sha256 for r in records])


def verify_cel(records: Sequence[CelRecord], quoted_pcr15: bytes) -> None:
    check_records(records)
    replayed = replay_cel(records)
    if replayed != quoted_pcr15:
        raise CelLogError(
            f"CEL log replays PCR 15 to {replayed.hex()}, but the quote holds {quoted_pcr15.hex()}"
        )
