"""``aicert-build deploy aws``, ``destroy aws`` and the AWS half of ``run``.

boto3 is imported only when one of these commands runs: it is an optional extra
(``aicert[aws]``). Tests pass the endpoint of a local moto server through the
click context object (``obj={"aws_options": ClientOptions(...)}``); users get
AWS's endpoints and boto3's usual credential chain.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome, run_on
from aicert.builder.platforms.base import Say
from aicert.builder.platforms.commands import (
    RunOptions,
    deployment_option,
    destroy_confirmed,
    need,
    publish_and_print,
    require_profile,
    yes_option,
)
from aicert.verifier.cli import load_root
from aicert.verifier.errors import InputError
from aicert.verifier.input_file import read_input_file

from aicert import __version__

AWS_PROFILE = "aws"
_WHY = "it lacks the NVMe and ENA drivers"
# Kept in step with .run, whose module imports boto3.
DEFAULT_AWS_INSTANCE_TYPE = "m6i.xlarge"
DEFAULT_AWS_SCRATCH_GIB = 128
RUN_OPTIONS = frozenset(
    {
        "region",
        "ami",
        "instance_type",
        "subnet",
        "recipe",
        "caller_ip",
        "platform_profile",
        "trust_roots",
    }
)
"""The ``run`` options --platform aws takes besides the common ones."""

if TYPE_CHECKING:
    from .clients import AwsClients


def aws_clients(ctx: click.Context, region: str, profile: str | None) -> AwsClients:
    from .clients import ClientOptions, connect  # noqa: PLC0415 - optional import

    obj = ctx.find_root().obj or {}
    return connect(region, profile=profile, options=obj.get("aws_options") or ClientOptions())


def _uefi_text(data: bytes) -> str:
    """The file's base64 text, without the line breaks and spaces a file may add."""
    try:
        return "".join(data.decode("ascii").split())
    except UnicodeDecodeError:
        raise InputError(
            "the UEFI data file is not base64 text; write it with 'uefivars ... -o aws'"
        ) from None


region_option = click.option(
    "--region",
    envvar="AWS_REGION",
    required=True,
    help="AWS region, e.g. eu-west-1 (default: $AWS_REGION).",
)
profile_option = click.option(
    "--profile",
    "aws_profile",
    envvar="AWS_PROFILE",
    default=None,
    help="Named profile of ~/.aws/config (default: $AWS_PROFILE, else boto3's chain).",
)


@click.command("aws")
@region_option
@profile_option
@click.option(
    "--image-name",
    default=f"aicert-os-{__version__}",
    show_default=True,
    help="AMI name; one name holds one disk image.",
)
@click.option(
    "--image",
    "image_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image --profile aws' (disk.raw, recipe.json).",
)
@click.option(
    "--uefi-data",
    "uefi_data",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="AWS UEFI variable store (base64) with the Secure Boot PK, KEK and db (from "
    "'uefivars -i none -o aws'), so that instances boot the signed UKI with Secure Boot "
    "on. Default: AWS's UEFI defaults.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Parallel block writes during the upload.",
)
@click.pass_context
def deploy_command(
    ctx: click.Context,
    region: str,
    aws_profile: str | None,
    image_name: str,
    image_dir: Path,
    uefi_data: Path | None,
    workers: int,
) -> None:
    """Upload disk.raw as an EBS snapshot and register a UEFI NitroTPM AMI (idempotent)."""
    from .deploy import MAX_UEFI_DATA, AwsDeploySpec  # noqa: PLC0415 - optional import
    from .platform import AwsPlatform  # noqa: PLC0415

    require_profile(image_dir, AWS_PROFILE, _WHY)
    spec = AwsDeploySpec(
        disk=image_dir / "disk.raw",
        image_name=image_name,
        uefi_data=None
        if uefi_data is None
        else _uefi_text(read_input_file(uefi_data, "UEFI data", MAX_UEFI_DATA)),
        workers=workers,
    )
    publish_and_print(AwsPlatform(aws_clients(ctx, region, aws_profile)), spec)


@click.command("aws")
@region_option
@profile_option
@deployment_option("this deployment (an AMI name or run/NAME)")
@yes_option
@click.pass_context
def destroy_command(
    ctx: click.Context, region: str, aws_profile: str | None, deployment: str | None, yes: bool
) -> None:
    """Delete every AWS resource aicert created in a region (found by tag)."""
    from .platform import AwsPlatform, AwsScope  # noqa: PLC0415 - optional import

    platform = AwsPlatform(aws_clients(ctx, region, aws_profile))
    destroy_confirmed(platform, AwsScope(deployment), where=region, yes=yes)


def run_job(
    ctx: click.Context, job: JobFile, options: RunOptions, say: Say
) -> tuple[JobOutcome, str]:
    """``run --platform aws``: one NitroTPM instance for ``job``; all it made goes at the end."""
    region = options.region or os.environ.get("AWS_REGION")
    need("aws", {"--region (or $AWS_REGION)": region, "--caller-ip": options.caller_ip})
    from .platform import AwsPlatform  # noqa: PLC0415 - optional import
    from .run import AwsRun  # noqa: PLC0415

    if options.ami is None:  # the run publishes IMAGE itself: it must be an aws build
        require_profile(options.image, AWS_PROFILE, _WHY)
    spec = AwsRun(
        region=str(region),
        output=options.output,
        recipe=options.recipe_path,
        caller_ip=str(options.caller_ip),
        image_id=options.ami,
        disk=options.image / "disk.raw",
        instance_type=options.instance_type or DEFAULT_AWS_INSTANCE_TYPE,
        scratch_gib=options.scratch_gib or DEFAULT_AWS_SCRATCH_GIB,
        subnet_id=options.subnet,
        platform_profile=options.platform_profile,
        trust_roots=tuple(load_root(p) for p in options.trust_roots),
        boot_timeout=options.boot_timeout,
    )
    platform = AwsPlatform(aws_clients(ctx, str(region), None))
    return run_on(platform, spec, job, options.output, say=say), options.verify_hint()
