"""The ``aicert-agent`` command line."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from aicert.agent import readiness, scratch, server
from aicert.agent.tpm import FIRMWARE_EVENT_LOG
from aicert.verifier.cli_runner import AicertGroup, run_cli
from aicert.verifier.errors import InputError

from aicert import __version__


@click.group(
    "aicert-agent", cls=AicertGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
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
    except OSError as exc:
        raise InputError(f"cannot write to {console}: {exc.strerror}") from exc


@main.command("serve")
@click.option(
    "--scratch",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/aicert"),
    show_default=True,
    help="Directory on the scratch disk for inputs, outputs and the job log.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")  # noqa: S104
@click.option("--port", type=int, default=8443, show_default=True, help="HTTPS port.")
@click.option("--tcti", default="device:/dev/tpmrm0", show_default=True, help="TPM TCTI.")
@click.option(
    "--event-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=FIRMWARE_EVENT_LOG,
    show_default=True,
    help="The firmware's TCG event log.",
)
@click.option(
    "--intermediates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Directory of AK-chain intermediate certificates to ship with every quote.",
)
@click.option(
    "--issuer-fetch-timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds to spend fetching the AK certificate's missing issuers from its AIA "
    "links at start (0: do not fetch).",
)
@click.option(
    "--plain-http-registry",
    "plain_http_registries",
    multiple=True,
    metavar="HOST[:PORT]",
    help="An OCI registry to pull environments from over plain HTTP instead of HTTPS "
    "(repeatable; every blob is digest-checked either way).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def serve_command(
    scratch: Path,
    host: str,
    port: int,
    tcti: str,
    event_log: Path,
    intermediates: Path | None,
    issuer_fetch_timeout: float,
    plain_http_registries: tuple[str, ...],
    verbose: bool,
) -> None:
    """Serve the attested HTTPS API for this boot's one training job."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("aicert.agent").setLevel(logging.INFO)
    server.serve(
        scratch=scratch,
        tcti=tcti,
        host=host,
        port=port,
        event_log=event_log,
        intermediates=intermediates,
        issuer_fetch_budget=issuer_fetch_timeout,
        plain_http_registries=frozenset(plain_http_registries),
    )


@main.command("prepare-scratch")
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the platform's disk to appear.",
)
def prepare_scratch_command(wait: float) -> None:
    """Format the one blank disk as ext4 labelled aicert-scratch (before the API starts).

    A disk already labelled aicert-scratch is left as it is. Only a disk on which
    blkid finds nothing at all is formatted; none or several such disks is an error.
    """
    scratch.prepare_scratch(wait=wait, say=click.echo)


def run() -> None:
    """Entry point: one top-level handler maps errors to a line and an exit code."""
    run_cli(main, "aicert-agent")
