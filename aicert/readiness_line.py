"""The readiness line: how the booted image tells the host it is up, and its evidence.

At boot the agent prints ``AICERT-READY <compact json>`` on the serial console.
The JSON carries the boot evidence the host needs before it talks to the agent:
the SHA-256 bank of PCRs 0-23, the firmware's TCG event log (base64), the boot id
and the agent version. The agent writes the line (:meth:`ReadinessReport.to_line`)
and the host finds it (:func:`parse_ready_line`); neither imports the other, so the
format lives here.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from aicert.verifier.errors import FormatError

READY_PREFIX = "AICERT-READY "
PCR_COUNT = 24
SHA256_SIZE = 32
_PCR_KEYS = frozenset(str(i) for i in range(PCR_COUNT))


@dataclass(frozen=True)
class ReadinessReport:
    """Boot evidence as read inside the VM."""

    pcrs: dict[int, bytes]
    event_log: bytes
    boot_id: str
    agent_version: str

    def to_line(self) -> str:
        body = {
            "agent_version": self.agent_version,
            "boot_id": self.boot_id,
            "event_log": base64.b64encode(self.event_log).decode(),
            "pcrs": {str(i): value.hex() for i, value in sorted(self.pcrs.items())},
        }
        return READY_PREFIX + json.dumps(body, separators=(",", ":"), sort_keys=True)


def parse_ready_line(text: str) -> ReadinessReport:
    """Find the last AICERT-READY line in console output and decode it."""
    lines = [line for line in text.splitlines() if READY_PREFIX in line]
    if not lines:
        raise FormatError("no AICERT-READY line in the console output")
    payload = lines[-1].split(READY_PREFIX, 1)[1].strip()
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise FormatError(f"AICERT-READY line is not valid JSON: {exc.msg}") from exc
    if not isinstance(body, dict):
        raise FormatError("AICERT-READY payload is not a JSON object")
    try:
        pcrs_raw = body["pcrs"]
        log_b64 = body["event_log"]
        boot_id = body["boot_id"]
        version = body["agent_version"]
    except KeyError as exc:
        raise FormatError(f"AICERT-READY payload lacks field {exc.args[0]!r}") from exc
    if not isinstance(pcrs_raw, dict) or not all(
        isinstance(v, str) for v in (log_b64, boot_id, version)
    ):
        raise FormatError("AICERT-READY payload has fields of the wrong type")
    pcrs: dict[int, bytes] = {}
    for key, value in pcrs_raw.items():
        # One spelling per PCR, as to_line writes it: "9", never "09" or "²9".
        if not (isinstance(key, str) and key in _PCR_KEYS):
            raise FormatError(f"AICERT-READY payload names an invalid PCR {key!r}")
        if not isinstance(value, str):
            raise FormatError(f"AICERT-READY PCR {key} is not a hex string")
        pcrs[int(key)] = pcr_value(value, f"PCR {key}")
    if set(pcrs) != set(range(PCR_COUNT)):
        raise FormatError("AICERT-READY payload does not hold all 24 PCRs")
    try:
        event_log = base64.b64decode(log_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError("AICERT-READY event log is not valid base64") from exc
    return ReadinessReport(pcrs=pcrs, event_log=event_log, boot_id=boot_id, agent_version=version)


def pcr_value(text: str, where: str) -> bytes:
    """One SHA-256 PCR value from its hex text; ``where`` names it in the error."""
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise FormatError(f"{where} is not hex: {text[:80]!r}") from exc
    if len(value) != SHA256_SIZE:
        raise FormatError(f"{where} holds {len(value)} bytes, not {SHA256_SIZE}")
    return value
