"""The readiness report as the agent reads it inside the VM and writes it to the console.

At boot the agent prints the AICERT-READY line (:mod:`aicert.readiness_line`, the
format the host parses) with the SHA-256 bank of PCRs 0-23 read from sysfs, the
firmware's TCG event log, the boot id and the agent version.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from aicert.verifier.errors import AicertError, InputError
from aicert.verifier.input_file import MAX_FIRMWARE_LOG_BYTES, read_input_file

from aicert import __version__
from aicert.readiness_line import PCR_COUNT, ReadinessReport, pcr_value

DEFAULT_PCR_DIR = Path("/sys/class/tpm/tpm0/pcr-sha256")
DEFAULT_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def read_pcrs(pcr_dir: Path = DEFAULT_PCR_DIR) -> dict[int, bytes]:
    """PCRs 0-23 of the SHA-256 bank, from the kernel's sysfs files (hex text)."""
    pcrs: dict[int, bytes] = {}
    for index in range(PCR_COUNT):
        path = pcr_dir / str(index)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read PCR {index} from {path}: {exc.strerror}") from exc
        pcrs[index] = pcr_value(text, f"{path}")
    return pcrs


def read_report(
    *,
    pcr_dir: Path = DEFAULT_PCR_DIR,
    event_log: Path = DEFAULT_EVENT_LOG,
    boot_id: Path = DEFAULT_BOOT_ID,
) -> ReadinessReport:
    log_bytes = read_input_file(event_log, "the firmware event log", MAX_FIRMWARE_LOG_BYTES)
    try:
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
