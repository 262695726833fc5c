"""``aicert-build run``: boot the measured image, run a job in it, collect a verified result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from aicert.builder.job_file import load_job_file, with_nonce
from aicert.builder.local_run import LocalRun, default_ca_dir, run_local
from aicert.verifier.report import render_json, render_text


@click.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option(
    "--platform",
    type=click.Choice(["local"]),
    default="local",
    show_default=True,
    help="Where to boot the image: local = QEMU + OVMF + swtpm on this machine.",
)
@click.option(
    "--image",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image' (disk.raw, uki.efi, recipe.json).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/job"),
    show_default=True,
    help="New directory for the weights, evaluation results and the certificate.",
)
@click.option(
    "--ca",
    "ca_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Local vTPM CA directory (default: $XDG_DATA_HOME/aicert/local-ca; made if missing).",
)
@click.option(
    "--nonce",
    metavar="HEX",
    default=None,
    help="Freshness nonce for this job (8-64 bytes, hex); overrides the job file's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verification report as JSON.")
def run_command(
    job: Path,
    platform: str,
    image: Path,
    output: Path,
    ca_dir: Path | None,
    nonce: str | None,
    as_json: bool,
) -> None:
    """Run JOB (a job file, see docs/job-file.md) in the measured image and verify the result.

    The image boots with a TPM provisioned like Azure's vTPM; the agent is attested
    before anything is sent; the weights, evaluation results and certificate land in
    OUTPUT only after they verify. Every process and temporary file is removed at the
    end, also on failure or Ctrl-C.
    """
    del platform  # one platform so far; the option fixes the interface
    parsed = load_job_file(job)
    if nonce is not None:
        parsed = with_nonce(parsed, nonce)
    spec = LocalRun(image=image, output=output, ca_dir=ca_dir or default_ca_dir())
    outcome = run_local(spec, parsed, say=lambda line: click.echo(f"‣ {line}", err=True))
    if as_json:
        click.echo(json.dumps(render_json(outcome.report, outcome.certificate), indent=2))
    else:
        click.echo(render_text(outcome.report, outcome.certificate, color=sys.stdout.isatty()))
        click.echo(
            "\nAuditors verify it with:\n  aicert-verify "
            f"{outcome.certificate} --recipe {image / 'recipe.json'} --platform-profile qemu "
            f"--trust-root {outcome.output_dir / 'local-ca-root.pem'} --nonce {parsed.nonce} "
            f"--weights {outcome.weights}"
        )
