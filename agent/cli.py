"""The ``aicert-agent`` command line."""

from __future__ import annotations

from pathlib import Path

import click
from aicert.agent import readiness
from aicert.verifier.errors import AicertError

from aicert import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aicert-agent")
def main() -> None:
    """The aicert agent: runs inside the measured image, measures one training job into the TPM."""


@main.command("ready-report")
@click.option(
    "--console",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the line to this console device (e.g. /dev/ttyS0).",
)
def ready_report(console: Path | None) -> None:
    """Print the AICERT-READY line: PCRs 0-23, firmware event log, boot id."""
    try:
        readiness.write_line(readiness.read_report().to_line(), console)
    except AicertError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write to {console}: {exc.strerror}") from exc
