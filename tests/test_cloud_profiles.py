"""The bundled cloud platform profiles: GCP's from real evidence, AWS's not captured yet.

GCP's profile is derived from go-attestation's real Windows Shielded VM evidence
(a SHA-1 quote with its firmware log); the checks here recompute its SHA-256
values with hashlib from the raw log records, independently of the derivation.
AWS's profile states the event-log policy and holds no value: its PCRs are never
passed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.profile_capture import capture_from_go_attestation
from aicert.verifier.boot.platform_profile import FIRMWARE_PCRS, check_profile, load_profile
from aicert.verifier.errors import (
    FirmwareLogError,
    FormatError,
    PcrDigestError,
    PlatformProfileError,
    QuoteSignatureError,
)
from click.testing import CliRunner
from tpm_wire_builders import GCP_VECTOR

EV_NO_ACTION = 0x3


def _evidence() -> dict[str, dict[str, object]]:
    doc: dict[str, dict[str, object]] = json.loads(GCP_VECTOR.read_text())
    return doc


def _sha1_records(raw: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(pcr, type, sha1 digest, data) of every TCG_PCClientPCREvent record of a SHA-1 log."""
    records, offset = [], 0
    while offset < len(raw):
        pcr = int.from_bytes(raw[offset : offset + 4], "little")
        kind = int.from_bytes(raw[offset + 4 : offset + 8], "little")
        digest = raw[offset + 8 : offset + 28]
        size = int.from_bytes(raw[offset + 28 : offset + 32], "little")
        records.append((pcr, kind, digest, raw[offset + 32 : offset + 32 + size]))
        offset += 32 + size
    return records


def _sha256_firmware_pcrs() -> dict[int, bytes]:
    """SHA-256 PCRs 0-3 and 7 a firmware measuring the logged data would reach.

    Each record's SHA-1 digest picks what was hashed (the data, or the data without a
    trailing byte, as some firmware hashes db authority events); the same bytes are
    hashed with SHA-256 and extended from zero.
    """
    raw = base64.b64decode(str(_evidence()["Log"]["Raw"]))
    values = dict.fromkeys(FIRMWARE_PCRS, bytes(32))
    for pcr, kind, sha1, data in _sha1_records(raw):
        if pcr not in values or kind == EV_NO_ACTION:
            continue
        measured = next(d for d in (data, data[:-1]) if hashlib.sha1(d).digest() == sha1)  # noqa: S324 - the log's bank
        values[pcr] = hashlib.sha256(values[pcr] + hashlib.sha256(measured).digest()).digest()
    return values


def test_the_gcp_profile_accepts_the_real_shielded_vm_firmware_pcrs() -> None:
    profile = load_profile("gcp")
    assert profile.firmware_log
    assert profile.checked_pcrs == list(FIRMWARE_PCRS)
    matches = check_profile(profile, _sha256_firmware_pcrs())
    assert [(m.pcr, m.variant) for m in matches] == [(p, 1) for p in FIRMWARE_PCRS]
    source = matches[0].provenance.source if matches[0].provenance else ""
    assert "google/go-attestation commit 01dcb111" in source
    assert "an AK this evidence does not certify" in source


@pytest.mark.parametrize("pcr", FIRMWARE_PCRS)
def test_the_gcp_profile_refuses_a_changed_firmware_pcr(pcr: int) -> None:
    changed = _sha256_firmware_pcrs()
    changed[pcr] = hashlib.sha256(changed[pcr] + bytes(32)).digest()
    with pytest.raises(PlatformProfileError, match=rf"PCR {pcr} is {changed[pcr].hex()}"):
        check_profile(load_profile("gcp"), changed)


def test_the_bundled_gcp_profile_is_what_the_evidence_gives(tmp_path: Path) -> None:
    bundled = load_profile("gcp")
    source = bundled.pcrs[0].variants[0].provenance.source.split(": SHA-256 values")[0]
    out = tmp_path / "platform-gcp.json"
    args = ["profile", "from-go-attestation", str(GCP_VECTOR), "--name", "gcp"]
    result = CliRunner().invoke(
        build_main,
        [*args, "--description", bundled.description, "--source", source, "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert load_profile(str(out)) == bundled


def _tampered(part: str, member: str, change: bytes | None = None) -> bytes:
    doc = _evidence()
    if change is None:
        data = bytearray(base64.b64decode(str(doc[part][member])))
        data[-1] ^= 1
        change = bytes(data)
    doc[part][member] = base64.b64encode(change).decode()
    return json.dumps(doc).encode()


def test_evidence_that_does_not_hold_up_gives_no_profile() -> None:
    def derive(data: bytes) -> object:
        return capture_from_go_attestation(data, "e.json", "gcp", "d", "s")

    with pytest.raises(QuoteSignatureError):
        derive(_tampered("Quote", "Signature"))
    # The last record is the db authority event of PCR 7: its data no longer hashes to
    # its digest.
    with pytest.raises(FirmwareLogError, match="does not match the event data"):
        derive(_tampered("Log", "Raw"))
    doc = _evidence()
    entries = doc["Log"]["PCRs"]
    assert isinstance(entries, list)
    zero = next(e for e in entries if e["Index"] == 0)
    zero["Digest"] = base64.b64encode(bytes(20)).decode()
    with pytest.raises(PcrDigestError):
        derive(json.dumps(doc).encode())
    with pytest.raises(FormatError):
        derive(b'{"AK": {}}')


def test_the_aws_profile_states_a_log_and_passes_no_pcr() -> None:
    profile = load_profile("aws")
    assert profile.firmware_log
    assert profile.checked_pcrs == []
    assert profile.uncaptured_pcrs == list(FIRMWARE_PCRS)
    matches = check_profile(profile, dict.fromkeys(range(24), bytes(32)))
    assert all(m.variant is None and m.skipped for m in matches)
    assert matches[0].describe().startswith("PCR 0 SKIPPED: not captured yet (no value seen")
    assert "profile capture CERT --add" in matches[0].describe()
