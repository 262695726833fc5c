"""``aicert-build deploy gcp``, and the GCP half of ``aicert-build run --platform gcp``.

The Google Cloud SDKs are imported only when a GCP command runs (``aicert[gcp]``).
Tests inject the endpoint, credentials and retry policy through the click context
object (``obj={"gcp_endpoint": ..., "gcp_credentials": ..., "gcp_retry": ...}``);
users get Google's endpoints and Application Default Credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome, run_on
from aicert.builder.platforms.base import Say
from aicert.builder.recipe import load_recipe
from aicert.verifier.cli import load_root
from aicert.verifier.errors import InputError

if TYPE_CHECKING:
    from .clients import GcpClients

GCP_PROFILE = "gcp"


def clients_for(ctx: click.Context, project: str) -> GcpClients:
    from .clients import connect  # noqa: PLC0415 - optional, slow import

    obj = ctx.find_root().obj or {}
    return connect(
        project,
        endpoint=obj.get("gcp_endpoint"),
        credentials=obj.get("gcp_credentials"),
        retry=obj.get("gcp_retry"),
        poll_interval=obj.get("gcp_poll_interval", 2.0),
    )


def _require_gcp_profile(recipe_path: Path) -> None:
    """Refuse an image built for another platform: its initrd lacks GCE's drivers."""
    inputs = load_recipe(recipe_path).get("inputs")
    profile = inputs.get("profile") if isinstance(inputs, dict) else None
    if profile != GCP_PROFILE:
        raise InputError(
            f"{recipe_path} is the recipe of a {profile!r} image; deploy gcp publishes only "
            f"images built with 'aicert-build image --profile {GCP_PROFILE}'"
        )


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.command("gcp")
@click.option(
    "--project",
    envvar="GOOGLE_CLOUD_PROJECT",
    required=True,
    help="Google Cloud project id (default: $GOOGLE_CLOUD_PROJECT).",
)
@click.option("--bucket", default=None, help="An existing Cloud Storage bucket for the upload.")
@click.option(
    "--image",
    "image_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image --profile gcp' (disk.raw, recipe.json).",
)
@click.option("--family", default="aicert-os", show_default=True, help="Image family.")
@click.option(
    "--delete-image",
    default=None,
    metavar="NAME",
    help="Delete this image instead of publishing ('all': every image aicert labelled).",
)
@click.pass_context
def deploy_gcp(
    ctx: click.Context,
    project: str,
    bucket: str | None,
    image_dir: Path,
    family: str,
    delete_image: str | None,
) -> None:
    """Publish disk.raw as a Compute Engine image for Shielded VMs (idempotent).

    Prints the image path that 'run --platform gcp --gcp-image' takes.
    """
    from .deploy import GcpPublish  # noqa: PLC0415 - optional, slow import
    from .platform import GcpPlatform, GcpScope  # noqa: PLC0415

    if delete_image is not None:
        if bucket is not None:
            raise click.UsageError("--bucket and --delete-image exclude each other")
        scope = GcpScope(None if delete_image == "all" else delete_image)
        deleted = GcpPlatform(clients_for(ctx, project)).destroy(scope, say=_say)
        _say(f"deleted {len(deleted)} images")
        return
    if bucket is None:
        raise click.UsageError("deploy gcp needs --bucket (or --delete-image)")
    _require_gcp_profile(image_dir / "recipe.json")
    spec = GcpPublish(bucket=bucket, disk=image_dir / "disk.raw", family=family)
    published = GcpPlatform(clients_for(ctx, project)).publish(spec, say=_say)
    if published.summary is not None:
        _say(published.summary)
    elif published.already_published:
        _say("already published: nothing uploaded")
    click.echo(published.image_id)


def run_gcp(
    ctx: click.Context,
    job: JobFile,
    *,
    project: str,
    zone: str,
    image: str,
    output: Path,
    recipe: Path,
    caller_ip: str,
    machine_type: str | None,
    scratch_gib: int | None,
    secure_boot: bool,
    platform_profile: str | None,
    trust_roots: tuple[Path, ...],
    boot_timeout: float,
    say: Say,
) -> JobOutcome:
    """``run --platform gcp``: one Shielded VM for ``job``, deleted at the end."""
    from .platform import GcpPlatform  # noqa: PLC0415 - optional, slow import
    from .run import DEFAULT_MACHINE_TYPE, DEFAULT_SCRATCH_GIB, GcpRun  # noqa: PLC0415

    spec = GcpRun(
        zone=zone,
        image=image,
        output=output,
        recipe=recipe,
        caller_ip=caller_ip,
        machine_type=machine_type or DEFAULT_MACHINE_TYPE,
        scratch_gib=scratch_gib or DEFAULT_SCRATCH_GIB,
        secure_boot=secure_boot,
        platform_profile=platform_profile,
        trust_roots=tuple(load_root(p) for p in trust_roots),
        boot_timeout=boot_timeout,
    )
    return run_on(GcpPlatform(clients_for(ctx, project)), spec, job, output, say=say)
