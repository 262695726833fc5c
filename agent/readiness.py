"""The readiness report: one console line that tells the host the VM is up.

At boot the agent prints ``AICERT-READY <compact json>`` on the serial console.
The JSON carries the boot evidence the host needs before it talks to the agent:
the SHA-256 bank of PCRs 0-23 (read from sysfs), the firmware's TCG event log
(base64), the boot id and the agent version. The host finds the line with
:func:`parse_ready_line`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import errno
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.errors import AicertError, FormatError, InputError

from aicert import __version__

READY_PREFIX = "AICERT-READY "
PCR_COUNT = 24
SHA256_SIZE = 32

DEFAULT_PCR_DIR = Path("/sys/class/tpm/tpm0/pcr-sha256")
DEFAULT_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


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


def read_pcrs(pcr_dir: Path = DEFAULT_PCR_DIR) -> dict[int, bytes]:
    """PCRs 0-23 of the SHA-256 bank, from the kernel's sysfs files (hex text)."""
    pcrs: dict[int, bytes] = {}
    for index in range(PCR_COUNT):
        path = pcr_dir / str(index)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read PCR {index} from {path}: {exc.strerror}") from exc
        pcrs[index] = _pcr_value(text, f"{path}")
    return pcrs


def read_report(
    *,
    pcr_dir: Path = DEFAULT_PCR_DIR,
    event_log: Path = DEFAULT_EVENT_LOG,
    boot_id: Path = DEFAULT_BOOT_ID,
) -> ReadinessReport:
    try:
        log_bytes = event_log.read_bytes()
        boot = boot_id.read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read boot evidence {exc.filename}: {exc.strerror}") from exc
    return ReadinessReport(
        pcrs=read_pcrs(pcr_dir), event_log=log_bytes, boot_id=boot, agent_version=__version__
    )


def write_line(line: str, console: Path | None, *, attempts: int = 5) -> None:
    """Write ``line`` to ``console`` (or stdout) in one write call.

    One ``write`` keeps the line whole on a console that the kernel and systemd
    also write to. A getty starting on the same tty hangs up earlier openers
    (EIO): reopen and write the whole line again.
    """
    if console is None:
        print(line, flush=True)
        return
    data = ("\n" + line + "\n").encode()
    for attempt in range(attempts):
        try:
            _write_all(console, data)
            return
        except OSError as exc:
            if exc.errno != errno.EIO or attempt == attempts - 1:
                raise
            time.sleep(0.5)


def _write_all(console: Path, data: bytes) -> None:
    fd = os.open(console, os.O_WRONLY | os.O_NOCTTY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


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
        if not (isinstance(key, str) and key.isdigit() and int(key) < PCR_COUNT):
            raise FormatError(f"AICERT-READY payload names an invalid PCR {key!r}")
        if not isinstance(value, str):
            raise FormatError(f"AICERT-READY PCR {key} is not a hex string")
        pcrs[int(key)] = _pcr_value(value, f"PCR {key}")
    if set(pcrs) != set(range(PCR_COUNT)):
        raise FormatError("AICERT-READY payload does not hold all 24 PCRs")
    try:
        event_log = base64.b64decode(log_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError("AICERT-READY event log is not valid base64") from exc
    return ReadinessReport(pcrs=pcrs, event_log=event_log, boot_id=boot_id, agent_version=version)


def _pcr_value(text: str, where: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise FormatError(f"{where} is not hex: {text[:80]!r}") from exc
    if len(value) != SHA256_SIZE:
        raise FormatError(f"{where} holds {len(value)} bytes, not {SHA256_SIZE}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python3 -m aicert.agent.readiness [--console DEV]``: what the boot unit runs.

    It imports nothing of the agent beyond this module, so the readiness line
    appears even if another part of the agent cannot start.
    """
    parser = argparse.ArgumentParser(prog="aicert-agent-ready", description=__doc__)
    parser.add_argument("--console", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        write_line(read_report().to_line(), args.console)
    except AicertError as exc:
        print(f"aicert-agent ready-report: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"aicert-agent ready-report: cannot write to {args.console}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
