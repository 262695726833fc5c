"""For the firmware event log tests: the real logs, a log builder, the tpm2_eventlog oracle."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aicert.process import run

# shared/ sits beside the repository, on a workstation and in CI alike.
TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
GO_ATTESTATION = TESTDATA / "go-attestation"
OVMF_LOG = TESTDATA / "ovmf-qemu" / "binary_bios_measurements"
GCP_JSON = GO_ATTESTATION / "windows_gcp_shielded_vm.json"
SHORT_LOG = GO_ATTESTATION / "short_no_action_eventlog"

REAL_LOG_FILES = {
    "coreos": GO_ATTESTATION / "coreos_36_shielded_vm_no_secure_boot_eventlog",
    "crypto_agile": GO_ATTESTATION / "crypto_agile_eventlog",
    "ebs_missing": GO_ATTESTATION / "ebs_event_missing_eventlog",
    "option_rom": GO_ATTESTATION / "option_rom_eventlog",
    "sb_cert": GO_ATTESTATION / "sb_cert_eventlog",
    "ubuntu": GO_ATTESTATION / "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    "ovmf": OVMF_LOG,
}
"""Every complete log in the test data, by a short name (the GCP log lives in a JSON file)."""

# tpm2_eventlog 5.4 crashes (SIGSEGV) on option_rom_eventlog's trailing PCR -1 event.
ORACLE_LOGS = [*sorted(set(REAL_LOG_FILES) - {"option_rom"}), "gcp"]


def gcp_attestation() -> dict[str, object]:
    data: dict[str, object] = json.loads(GCP_JSON.read_text())
    return data


def gcp_log_bytes() -> bytes:
    log = gcp_attestation()["Log"]
    assert isinstance(log, dict)
    return base64.b64decode(log["Raw"])


def real_log(name: str) -> bytes:
    if name == "gcp":
        return gcp_log_bytes()
    return REAL_LOG_FILES[name].read_bytes()


def all_real_logs() -> dict[str, bytes]:
    return {name: real_log(name) for name in [*REAL_LOG_FILES, "gcp"]}


# ---------------------------------------------------------------- building logs

SHA1_ID, SHA256_ID, SHA384_ID = 0x0004, 0x000B, 0x000C
HASH_NAMES = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")


def spec_id03(algs: tuple[int, ...] = (SHA1_ID, SHA256_ID), *, uintn: int = 2) -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, uintn, len(algs))
    for alg in algs:
        body += struct.pack("<HH", alg, hashlib.new(HASH_NAMES[alg]).digest_size)
    return body + b"\x00"


def sha1_record(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    return struct.pack("<II", pcr, event_type) + digest + struct.pack("<I", len(data)) + data


def agile_record(pcr: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests))
    for alg, digest in digests:
        out += struct.pack("<H", alg) + digest
    return out + struct.pack("<I", len(data)) + data


@dataclass
class LogBuilder:
    """Builds a crypto-agile log whose digests are H(data) unless given."""

    algs: tuple[int, ...] = (SHA1_ID, SHA256_ID)
    records: list[bytes] = field(default_factory=list)

    def add(
        self,
        pcr: int,
        event_type: int,
        data: bytes,
        *,
        measured: bytes | None = None,
        digests: list[tuple[int, bytes]] | None = None,
    ) -> LogBuilder:
        hashed = data if measured is None else measured
        if digests is None:
            digests = [(alg, hashlib.new(HASH_NAMES[alg], hashed).digest()) for alg in self.algs]
        self.records.append(agile_record(pcr, event_type, digests, data))
        return self

    def no_action(self, pcr: int, data: bytes) -> LogBuilder:
        zero = [(alg, bytes(hashlib.new(HASH_NAMES[alg]).digest_size)) for alg in self.algs]
        return self.add(pcr, 3, data, digests=zero)

    def build(self) -> bytes:
        header = sha1_record(0, 3, bytes(20), spec_id03(self.algs))
        return header + b"".join(self.records)


def variable_data(name: str, value: bytes, guid: uuid.UUID = EFI_GLOBAL_VARIABLE) -> bytes:
    return (
        guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value
    )


# ---------------------------------------------------------------- tpm2_eventlog oracle


@dataclass
class OracleEvent:
    pcr: int
    event_type: str
    digests: dict[str, bytes]


@dataclass
class OracleLog:
    events: list[OracleEvent]
    pcrs: dict[str, dict[int, bytes]]


def tpm2_eventlog(path: Path) -> OracleLog:
    """Run tpm2_eventlog (tpm2-tools) on ``path`` and read the fields compared with ours."""
    if shutil.which("tpm2_eventlog") is None:
        pytest.skip("tpm2_eventlog (tpm2-tools) is not installed")
    text = run(["tpm2_eventlog", path]).stdout.decode()
    events: list[OracleEvent] = []
    pending_alg: str | None = None
    body, _, pcr_section = text.partition("\npcrs:\n")
    for line in body.splitlines():
        key, _, value = line.strip().lstrip("- ").partition(": ")
        if key == "PCRIndex":
            events.append(OracleEvent(int(value), "", {}))
        elif key == "EventType":
            events[-1].event_type = value
        elif key == "AlgorithmId":
            pending_alg = value
        elif key == "Digest" and pending_alg is not None:
            events[-1].digests[pending_alg] = bytes.fromhex(value.strip('"'))
            pending_alg = None
    pcrs: dict[str, dict[int, bytes]] = {}
    bank = ""
    for line in pcr_section.splitlines():
        if m := re.fullmatch(r"\s+(\w+):\s*", line):
            bank = m.group(1)
        elif m := re.fullmatch(r"\s+(\d+)\s*:\s*0x([0-9a-fA-F]+)\s*", line):
            pcrs.setdefault(bank, {})[int(m.group(1))] = bytes.fromhex(m.group(2))
    return OracleLog(events, pcrs)
