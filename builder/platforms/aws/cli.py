"""``aicert-build deploy aws`` and ``aicert-build destroy-aws``.

boto3 is imported only when one of these commands runs: it is an optional extra
(``aicert[aws]``). Tests pass the endpoint of a local moto server through the
click context object (``obj={"aws_options": ClientOptions(...)}``); users get
AWS's endpoints and boto3's usual credential chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from aicert.builder.recipe import load_recipe
from aicert.verifier.errors import InputError
from aicert.verifier.input_file import read_input_file

from aicert import __version__

AWS_PROFILE = "aws"

if TYPE_CHECKING:
    from .clients import AwsClients


def aws_clients(ctx: click.Context, region: str, profile: str | None) -> AwsClients:
    from .clients import ClientOptions, connect  # noqa: PLC0415 - optional import

    obj = ctx.find_root().obj or {}
    return connect(region, profile=profile, options=obj.get("aws_options") or ClientOptions())


def require_aws_profile(recipe_path: Path) -> None:
    """Refuse an image built for another platform: it lacks the NVMe and ENA drivers."""
    inputs = load_recipe(recipe_path).get("inputs")
    profile = inputs.get("profile") if isinstance(inputs, dict) else None
    if profile != AWS_PROFILE:
        raise InputError(
            f"{recipe_path} is the recipe of a {profile!r} image; deploy aws publishes only "
            f"images built with 'aicert-build image --profile {AWS_PROFILE}'"
        )


def _uefi_text(data: bytes) -> str:
    """The file's base64 text, without the line breaks and spaces a file may add."""
    try:
        return "".join(data.decode("ascii").split())
    except UnicodeDecodeError:
        raise InputError(
            "the UEFI data file is not base64 text; write it with 'uefivars ... -o aws'"
        ) from None


def _say(message: str) -> None:
    click.echo(message, err=True)


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
def deploy_aws(
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

    require_aws_profile(image_dir / "recipe.json")
    spec = AwsDeploySpec(
        disk=image_dir / "disk.raw",
        image_name=image_name,
        uefi_data=None
        if uefi_data is None
        else _uefi_text(read_input_file(uefi_data, "UEFI data", MAX_UEFI_DATA)),
        workers=workers,
    )
    published = AwsPlatform(aws_clients(ctx, region, aws_profile)).publish(spec, say=_say)
    if published.summary is not None:
        _say(published.summary)
    click.echo(published.image_id)


@click.command("destroy-aws")
@region_option
@profile_option
@click.option(
    "--deployment",
    default=None,
    help="Only resources of this deployment (an AMI name or run/NAME); default: all.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def destroy_aws(
    ctx: click.Context, region: str, aws_profile: str | None, deployment: str | None, yes: bool
) -> None:
    """Delete every AWS resource aicert created in a region (found by tag)."""
    from .deploy import delete_managed, find_managed  # noqa: PLC0415 - optional import

    clients = aws_clients(ctx, region, aws_profile)
    found = find_managed(clients, deployment)
    if not found:
        _say(f"no aicert resources in {region}")
        return
    for m in found:
        _say(f"  {m.kind}  {m.id}")
    if not yes and not click.confirm(
        f"delete these {len(found)} resources?", default=False, err=True
    ):
        _say("nothing deleted")
        raise SystemExit(5)
    deleted = delete_managed(clients, found, say=_say)
    _say(f"deleted {len(deleted)} resources")
