"""``aicert-build run``: boot the measured image, run a job in it, collect a verified result.

Each platform declares the options it takes (``RUN_OPTIONS`` in its ``cli`` module);
an option given on the command line that is neither common nor the chosen
platform's is refused, by one rule, before anything boots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from aicert.builder.job_file import MAX_SCRATCH_GIB, load_job_file, with_nonce
from aicert.builder.job_plan import plan_job, render_plan
from aicert.builder.job_runner import check_output_dir
from aicert.builder.platforms.aws import cli as aws_cli
from aicert.builder.platforms.azure import cli as azure_cli
from aicert.builder.platforms.commands import RunOptions, RunPlatform
from aicert.builder.platforms.gcp import cli as gcp_cli
from aicert.builder.platforms.local import cli as local_cli
from aicert.verifier.cli_params import nonce_value
from aicert.verifier.cli_runner import use_color
from aicert.verifier.report import render_json, render_text
from click.core import ParameterSource

PLATFORMS: dict[str, RunPlatform] = {
    "local": RunPlatform(local_cli.RUN_OPTIONS, local_cli.run_job),
    "azure": RunPlatform(azure_cli.RUN_OPTIONS, azure_cli.run_job),
    "gcp": RunPlatform(gcp_cli.RUN_OPTIONS, gcp_cli.run_job),
    "aws": RunPlatform(aws_cli.RUN_OPTIONS, aws_cli.run_job),
}
COMMON_OPTIONS = frozenset(
    {
        "job",
        "platform",
        "image",
        "output",
        "nonce",
        "scratch_gib",
        "as_json",
        "check_only",
        "boot_timeout",
    }
)
"""The ``run`` parameters every platform takes."""


@click.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option(
    "--platform",
    type=click.Choice(list(PLATFORMS)),
    default="local",
    show_default=True,
    help="Where to boot the image: local = QEMU + OVMF + swtpm on this machine; azure = a "
    "Trusted Launch VM from a published gallery image version (see docs/azure.md); "
    "gcp = a Shielded VM from an image published by 'deploy gcp' (see docs/gcp.md); aws = "
    "an EC2 instance with NitroTPM (see docs/aws.md).",
)
@click.option(
    "--image",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image' (disk.raw, uki.efi, recipe.json); "
    "on Azure only its recipe.json is read.",
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
    callback=nonce_value,
    help="Freshness nonce for this job (8-64 bytes, hex); overrides the job file's.",
)
@click.option(
    "--scratch-gib",
    type=click.IntRange(1, MAX_SCRATCH_GIB),
    default=None,
    help="Size of the blank scratch disk the image keeps inputs and outputs on [default: "
    f"{local_cli.DEFAULT_LOCAL_SCRATCH_GIB} (local, a sparse file); azure: the job file's "
    f"[azure] scratch_gib, else {azure_cli.DEFAULT_AZURE_SCRATCH_GIB}; gcp: "
    f"{gcp_cli.DEFAULT_GCP_SCRATCH_GIB}; aws: "
    f"{aws_cli.DEFAULT_AWS_SCRATCH_GIB}].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the verification report (or --check plan) as JSON.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Only check the job file and its local inputs and print what would be sent and "
    "measured; boot nothing.",
)
@click.option(
    "--boot-timeout",
    type=click.FloatRange(0),
    default=900.0,
    show_default=True,
    help="Seconds to wait for the booted image's agent to answer.",
)
@click.option(
    "--subscription",
    envvar="AZURE_SUBSCRIPTION_ID",
    default=None,
    help="Azure: subscription id (default: $AZURE_SUBSCRIPTION_ID).",
)
@click.option("--resource-group", default=None, help="Azure: an existing resource group.")
@click.option("--location", default=None, help="Azure: region of the VM, e.g. westeurope.")
@click.option(
    "--image-version",
    "image_version_id",
    default=None,
    help="Azure: the gallery image version resource id printed by 'deploy azure'.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Clouds: recipe.json of the published image (default: IMAGE/recipe.json).",
)
@click.option(
    "--caller-ip",
    default=None,
    help="Clouds: this machine's public IP address, the only one the VM admits "
    "(e.g. from 'curl -s https://api.ipify.org').",
)
@click.option(
    "--vm-size",
    default=None,
    help="Azure: VM size; it must support Trusted Launch (docs/azure.md lists the series "
    "refused before anything is created) [default: the job file's "
    f"[azure] vm_size, else {azure_cli.DEFAULT_AZURE_VM_SIZE}]; GCP: machine type [n2-standard-4].",
)
@click.option(
    "--platform-profile",
    default=None,
    help="Clouds: platform profile (bundled name or JSON file from 'profile capture') "
    "the firmware PCRs are checked against; default: none, they are not checked.",
)
@click.option(
    "--trust-root",
    "trust_roots",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Clouds: a PEM root accepted besides the bundled vTPM roots. Repeatable.",
)
@click.option("--region", default=None, help="AWS: region (default: $AWS_REGION).")
@click.option(
    "--ami",
    default=None,
    help="AWS: the AMI id printed by 'deploy aws'; default: publish IMAGE/disk.raw for this "
    "run only and deregister it at the end.",
)
@click.option(
    "--instance-type",
    default=None,
    help="AWS: a Nitro instance type with NitroTPM "
    f"[default: {aws_cli.DEFAULT_AWS_INSTANCE_TYPE}].",
)
@click.option("--subnet", default=None, help="AWS: a public subnet (default: the default VPC's).")
@click.option(
    "--gcp-project",
    envvar="GOOGLE_CLOUD_PROJECT",
    default=None,
    help="GCP: project id (default: $GOOGLE_CLOUD_PROJECT).",
)
@click.option("--zone", default=None, help="GCP: zone of the VM, e.g. europe-west4-a.")
@click.option("--gcp-image", default=None, help="GCP: the image path printed by 'deploy gcp'.")
@click.option(
    "--secure-boot/--no-secure-boot",
    default=False,
    show_default=True,
    help="GCP: Secure Boot on the Shielded VM (needs a UKI signed for GCE's default db).",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    job: Path,
    platform: str,
    nonce: str | None,
    as_json: bool,
    check_only: bool,
    **values: Any,
) -> None:
    """Run JOB (a job file, see docs/job-file.md) in the measured image and verify the result.

    The image boots with a TPM provisioned like Azure's vTPM (local), or on a cloud
    VM with the cloud's vTPM (azure, gcp, aws); the agent is attested before anything
    is sent; the weights, evaluation results and certificate land in OUTPUT only after
    they verify. Every process, temporary file and cloud resource is removed at the
    end, also on failure or Ctrl-C. The job file and every local input are checked
    before anything boots; --check stops there.
    """
    parsed = load_job_file(job)
    if nonce is not None:
        parsed = with_nonce(parsed, nonce)
    plan = plan_job(parsed)
    options = RunOptions(**values)
    check_output_dir(options.output)
    if check_only:
        if as_json:
            click.echo(json.dumps(plan.to_json(), indent=2))
        else:
            click.echo(render_plan(plan))
        return
    _refuse_other_platforms_options(ctx, platform)
    outcome, verify_hint = PLATFORMS[platform].run_job(ctx, parsed, options, _say)
    if as_json:
        click.echo(json.dumps(render_json(outcome.report, outcome.certificate), indent=2))
    else:
        click.echo(render_text(outcome.report, outcome.certificate, color=use_color(sys.stdout)))
        click.echo(
            f"\nAuditors verify it with:\n  aicert-verify {outcome.certificate} {verify_hint} "
            f"--nonce {parsed.nonce} --weights {outcome.weights}"
        )


def _refuse_other_platforms_options(ctx: click.Context, platform: str) -> None:
    """Options typed for another platform are an error (an environment default is not)."""
    takes = COMMON_OPTIONS | PLATFORMS[platform].options
    refused = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in takes:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        owners = ", ".join(p for p, run in PLATFORMS.items() if name in run.options)
        refused.append(f"{param.opts[0]} (only for {owners})")
    if refused:
        raise click.UsageError(f"not for --platform {platform}: {'; '.join(refused)}")


def _say(line: str) -> None:
    click.echo(f"‣ {line}", err=True)
