"""``aicert-build run``: boot the measured image, run a job in it, collect a verified result."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from aicert.builder.job_file import MAX_SCRATCH_GIB, JobFile, load_job_file, with_nonce
from aicert.builder.job_plan import plan_job, render_plan
from aicert.builder.job_runner import JobOutcome, check_output_dir, run_on
from aicert.builder.platforms.azure.sizes import VmSizeError, check_vm_size
from aicert.builder.platforms.local.platform import LocalPlatform
from aicert.builder.platforms.local.run import (
    DEFAULT_SCRATCH_BYTES,
    LOCAL_CA_ROOT_NAME,
    LocalRun,
    default_ca_dir,
)
from aicert.verifier.cli import load_root
from aicert.verifier.cli_params import nonce_value
from aicert.verifier.cli_runner import use_color
from aicert.verifier.report import render_json, render_text

# Kept in step with DEFAULT_VM_SIZE and DEFAULT_SCRATCH_GIB of aicert.builder.platforms.azure
# (run, vm), whose modules import the Azure SDK.
DEFAULT_AZURE_VM_SIZE = "Standard_D4s_v5"
DEFAULT_AZURE_SCRATCH_GIB = 128
DEFAULT_LOCAL_SCRATCH_GIB = DEFAULT_SCRATCH_BYTES >> 30
# Kept in step with aicert.builder.platforms.aws.run, whose module imports boto3.
DEFAULT_AWS_INSTANCE_TYPE = "m6i.xlarge"
DEFAULT_AWS_SCRATCH_GIB = 128


@click.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option(
    "--platform",
    type=click.Choice(["local", "azure", "gcp", "aws"]),
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
    f"{DEFAULT_LOCAL_SCRATCH_GIB} (local, a sparse file); azure: the job file's [azure] "
    f"scratch_gib, else {DEFAULT_AZURE_SCRATCH_GIB}].",
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
    help="Azure: recipe.json of the published image (default: IMAGE/recipe.json).",
)
@click.option(
    "--caller-ip",
    default=None,
    help="Azure: this machine's public IP address, the only one the VM admits "
    "(e.g. from 'curl -s https://api.ipify.org').",
)
@click.option(
    "--vm-size",
    default=None,
    help="Azure: VM size; it must support Trusted Launch (docs/azure.md lists the series "
    "refused before anything is created) [default: the job file's "
    f"[azure] vm_size, else {DEFAULT_AZURE_VM_SIZE}]; GCP: machine type [n2-standard-4].",
)
@click.option(
    "--platform-profile",
    default=None,
    help="Azure: platform profile (bundled name or JSON file from 'profile capture').",
)
@click.option(
    "--trust-root",
    "trust_roots",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Azure: a PEM root accepted besides the bundled Azure vTPM root. Repeatable.",
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
    help=f"AWS: a Nitro instance type with NitroTPM [default: {DEFAULT_AWS_INSTANCE_TYPE}].",
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
    image: Path,
    output: Path,
    ca_dir: Path | None,
    nonce: str | None,
    scratch_gib: int | None,
    as_json: bool,
    check_only: bool,
    boot_timeout: float,
    subscription: str | None,
    resource_group: str | None,
    location: str | None,
    image_version_id: str | None,
    recipe: Path | None,
    caller_ip: str | None,
    vm_size: str | None,
    platform_profile: str | None,
    trust_roots: tuple[Path, ...],
    region: str | None,
    ami: str | None,
    instance_type: str | None,
    subnet: str | None,
    gcp_project: str | None,
    zone: str | None,
    gcp_image: str | None,
    secure_boot: bool,
) -> None:
    """Run JOB (a job file, see docs/job-file.md) in the measured image and verify the result.

    The image boots with a TPM provisioned like Azure's vTPM (local) or on a Trusted
    Launch VM with Azure's vTPM (azure); the agent is attested before anything is
    sent; the weights, evaluation results and certificate land in OUTPUT only after
    they verify. Every process, temporary file and cloud resource is removed at the
    end, also on failure or Ctrl-C. The job file and every local input are checked
    before anything boots; --check stops there.
    """
    parsed = load_job_file(job)
    if nonce is not None:
        parsed = with_nonce(parsed, nonce)
    plan = plan_job(parsed)
    check_output_dir(output)
    if check_only:
        if as_json:
            click.echo(json.dumps(plan.to_json(), indent=2))
        else:
            click.echo(render_plan(plan))
        return
    azure_only = {
        "--resource-group": resource_group,
        "--location": location,
        "--image-version": image_version_id,
        "--recipe": recipe,
        "--caller-ip": caller_ip,
        "--vm-size": vm_size,
        "--platform-profile": platform_profile,
        "--trust-root": trust_roots or None,
    }
    aws_only = {
        "--region": region,
        "--ami": ami,
        "--instance-type": instance_type,
        "--subnet": subnet,
    }
    if platform == "local":
        given = [name for name, value in azure_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for --platform azure")
        given = [name for name, value in aws_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for --platform aws")
        spec = LocalRun(
            image=image,
            output=output,
            ca_dir=ca_dir or default_ca_dir(),
            scratch_bytes=(scratch_gib or DEFAULT_LOCAL_SCRATCH_GIB) << 30,
            boot_timeout=boot_timeout,
        )
        outcome = run_on(LocalPlatform(), spec, parsed, output, say=_say)
        verify_hint = (
            f"--recipe {image / 'recipe.json'} --platform-profile qemu "
            f"--trust-root {outcome.output_dir / LOCAL_CA_ROOT_NAME}"
        )
    elif platform == "aws":
        region = region or os.environ.get("AWS_REGION")
        not_aws = {**azure_only, "--ca": ca_dir}
        for shared in ("--recipe", "--caller-ip", "--platform-profile", "--trust-root"):
            del not_aws[shared]
        not_aws.update({"--zone": zone, "--gcp-image": gcp_image})
        given = [name for name, value in not_aws.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: not for --platform aws")
        missing = [
            n
            for n, v in (("--region (or $AWS_REGION)", region), ("--caller-ip", caller_ip))
            if not v
        ]
        if missing:
            raise click.UsageError(f"--platform aws needs {', '.join(missing)}")
        recipe = recipe or image / "recipe.json"
        outcome = _run_on_aws(
            ctx,
            parsed,
            region=str(region),
            ami=ami,
            image=image,
            output=output,
            recipe=recipe,
            caller_ip=str(caller_ip),
            instance_type=instance_type or DEFAULT_AWS_INSTANCE_TYPE,
            subnet=subnet,
            scratch_gib=scratch_gib or DEFAULT_AWS_SCRATCH_GIB,
            platform_profile=platform_profile,
            trust_roots=trust_roots,
            boot_timeout=boot_timeout,
        )
        verify_hint = f"--recipe {recipe}" + "".join(
            [
                f" --platform-profile {platform_profile}" if platform_profile else "",
                *(f" --trust-root {p}" for p in trust_roots),
            ]
        )
    elif platform == "gcp":
        outcome, verify_hint = _run_on_gcp(
            ctx,
            parsed,
            image=image,
            output=output,
            refused={
                "--ca": ca_dir,
                "--resource-group": resource_group,
                "--location": location,
                "--image-version": image_version_id,
                "--region": region,
                "--ami": ami,
                "--instance-type": instance_type,
                "--subnet": subnet,
            },
            project=gcp_project,
            zone=zone,
            gcp_image=gcp_image,
            recipe=recipe,
            caller_ip=caller_ip,
            machine_type=vm_size,
            scratch_gib=scratch_gib,
            secure_boot=secure_boot,
            platform_profile=platform_profile,
            trust_roots=trust_roots,
            boot_timeout=boot_timeout,
        )
    else:
        if ca_dir is not None:
            raise click.UsageError("--ca: only for --platform local (Azure's vTPM has its own CA)")
        given = [name for name, value in aws_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for --platform aws")
        required = {
            "--subscription (or $AZURE_SUBSCRIPTION_ID)": subscription,
            "--resource-group": resource_group,
            "--location": location,
            "--image-version": image_version_id,
            "--caller-ip": caller_ip,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise click.UsageError(f"--platform azure needs {', '.join(missing)}")
        if vm_size is not None:
            try:
                check_vm_size(vm_size)
            except VmSizeError as exc:
                raise click.UsageError(f"--vm-size: {exc.message}") from None
        recipe = recipe or image / "recipe.json"
        outcome = _run_on_azure(
            ctx,
            parsed,
            subscription=str(subscription),
            resource_group=str(resource_group),
            location=str(location),
            image_version_id=str(image_version_id),
            output=output,
            recipe=recipe,
            caller_ip=str(caller_ip),
            vm_size=vm_size or parsed.azure.vm_size or DEFAULT_AZURE_VM_SIZE,
            scratch_gib=scratch_gib or parsed.azure.scratch_gib or DEFAULT_AZURE_SCRATCH_GIB,
            platform_profile=platform_profile,
            trust_roots=trust_roots,
            boot_timeout=boot_timeout,
        )
        verify_hint = f"--recipe {recipe}" + "".join(
            [
                f" --platform-profile {platform_profile}" if platform_profile else "",
                *(f" --trust-root {p}" for p in trust_roots),
            ]
        )
    if as_json:
        click.echo(json.dumps(render_json(outcome.report, outcome.certificate), indent=2))
    else:
        click.echo(render_text(outcome.report, outcome.certificate, color=use_color(sys.stdout)))
        click.echo(
            f"\nAuditors verify it with:\n  aicert-verify {outcome.certificate} {verify_hint} "
            f"--nonce {parsed.nonce} --weights {outcome.weights}"
        )


def _say(line: str) -> None:
    click.echo(f"‣ {line}", err=True)


def _run_on_gcp(
    ctx: click.Context,
    job: JobFile,
    *,
    image: Path,
    output: Path,
    refused: dict[str, object],
    project: str | None,
    zone: str | None,
    gcp_image: str | None,
    recipe: Path | None,
    caller_ip: str | None,
    machine_type: str | None,
    scratch_gib: int | None,
    secure_boot: bool,
    platform_profile: str | None,
    trust_roots: tuple[Path, ...],
    boot_timeout: float,
) -> tuple[JobOutcome, str]:
    from aicert.builder.platforms.gcp.cli import run_gcp  # noqa: PLC0415 - optional SDK

    given = [name for name, value in refused.items() if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)}: not for --platform gcp")
    required = {
        "--gcp-project (or $GOOGLE_CLOUD_PROJECT)": project,
        "--zone": zone,
        "--gcp-image": gcp_image,
        "--caller-ip": caller_ip,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise click.UsageError(f"--platform gcp needs {', '.join(missing)}")
    recipe = recipe or image / "recipe.json"
    outcome = run_gcp(
        ctx,
        job,
        project=str(project),
        zone=str(zone),
        image=str(gcp_image),
        output=output,
        recipe=recipe,
        caller_ip=str(caller_ip),
        machine_type=machine_type,
        scratch_gib=scratch_gib,
        secure_boot=secure_boot,
        platform_profile=platform_profile,
        trust_roots=trust_roots,
        boot_timeout=boot_timeout,
        say=_say,
    )
    hint = f"--recipe {recipe}" + "".join(
        [
            f" --platform-profile {platform_profile}" if platform_profile else "",
            *(f" --trust-root {p}" for p in trust_roots),
        ]
    )
    return outcome, hint


def _run_on_azure(
    ctx: click.Context,
    job: JobFile,
    *,
    subscription: str,
    resource_group: str,
    location: str,
    image_version_id: str,
    output: Path,
    recipe: Path,
    caller_ip: str,
    vm_size: str,
    scratch_gib: int,
    platform_profile: str | None,
    trust_roots: tuple[Path, ...],
    boot_timeout: float,
) -> JobOutcome:
    # The Azure SDK is an optional extra and slow to import: only when it is used.
    from aicert.builder.platforms.azure.cli import _clients  # noqa: PLC0415
    from aicert.builder.platforms.azure.platform import AzurePlatform  # noqa: PLC0415
    from aicert.builder.platforms.azure.run import AzureRun  # noqa: PLC0415

    spec = AzureRun(
        subscription=subscription,
        resource_group=resource_group,
        location=location,
        image_version_id=image_version_id,
        output=output,
        recipe=recipe,
        caller_ip=caller_ip,
        vm_size=vm_size,
        scratch_gib=scratch_gib,
        platform_profile=platform_profile,
        trust_roots=tuple(load_root(p) for p in trust_roots),
        boot_timeout=boot_timeout,
    )
    platform = AzurePlatform(_clients(ctx, subscription))
    return run_on(platform, spec, job, output, say=_say)


def _run_on_aws(
    ctx: click.Context,
    job: JobFile,
    *,
    region: str,
    ami: str | None,
    image: Path,
    output: Path,
    recipe: Path,
    caller_ip: str,
    instance_type: str,
    subnet: str | None,
    scratch_gib: int,
    platform_profile: str | None,
    trust_roots: tuple[Path, ...],
    boot_timeout: float,
) -> JobOutcome:
    # boto3 is an optional extra: imported only when it is used.
    from aicert.builder.platforms.aws.cli import aws_clients, require_aws_profile  # noqa: PLC0415
    from aicert.builder.platforms.aws.platform import AwsPlatform  # noqa: PLC0415
    from aicert.builder.platforms.aws.run import AwsRun  # noqa: PLC0415

    if ami is None:  # the run publishes IMAGE itself: it must be an aws build
        require_aws_profile(image / "recipe.json")
    spec = AwsRun(
        region=region,
        output=output,
        recipe=recipe,
        caller_ip=caller_ip,
        image_id=ami,
        disk=image / "disk.raw",
        instance_type=instance_type,
        scratch_gib=scratch_gib,
        subnet_id=subnet,
        platform_profile=platform_profile,
        trust_roots=tuple(load_root(p) for p in trust_roots),
        boot_timeout=boot_timeout,
    )
    platform = AwsPlatform(aws_clients(ctx, region, None))
    return run_on(platform, spec, job, output, say=_say)
