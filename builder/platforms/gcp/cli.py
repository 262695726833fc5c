"""``aicert-build deploy gcp``, ``destroy gcp`` and the GCP half of ``run``.

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

if TYPE_CHECKING:
    from .clients import GcpClients

GCP_PROFILE = "gcp"
# Kept in step with .run, whose module imports the Google Cloud SDK.
DEFAULT_GCP_SCRATCH_GIB = 64
RUN_OPTIONS = frozenset(
    {
        "gcp_project",
        "zone",
        "gcp_image",
        "recipe",
        "caller_ip",
        "vm_size",
        "secure_boot",
        "platform_profile",
        "trust_roots",
    }
)
"""The ``run`` options --platform gcp takes besides the common ones."""


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


_project = click.option(
    "--project",
    envvar="GOOGLE_CLOUD_PROJECT",
    required=True,
    help="Google Cloud project id (default: $GOOGLE_CLOUD_PROJECT).",
)


@click.command("gcp")
@_project
@click.option("--bucket", required=True, help="An existing Cloud Storage bucket for the upload.")
@click.option(
    "--image",
    "image_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image --profile gcp' (disk.raw, recipe.json).",
)
@click.option("--family", default="aicert-os", show_default=True, help="Image family.")
@click.pass_context
def deploy_command(
    ctx: click.Context, project: str, bucket: str, image_dir: Path, family: str
) -> None:
    """Publish disk.raw as a Compute Engine image for Shielded VMs (idempotent).

    Prints the image path that 'run --platform gcp --gcp-image' takes.
    """
    from .deploy import GcpPublish  # noqa: PLC0415 - optional, slow import
    from .platform import GcpPlatform  # noqa: PLC0415

    require_profile(image_dir, GCP_PROFILE, "its initrd lacks GCE's drivers")
    spec = GcpPublish(bucket=bucket, disk=image_dir / "disk.raw", family=family)
    publish_and_print(GcpPlatform(clients_for(ctx, project)), spec)


@click.command("gcp")
@_project
@deployment_option("this image or run VM (aicert-run-…, with its firewall rule)")
@yes_option
@click.pass_context
def destroy_command(ctx: click.Context, project: str, deployment: str | None, yes: bool) -> None:
    """Delete aicert's images, and the VMs and firewall rules of unfinished runs."""
    from .platform import GcpPlatform, GcpScope  # noqa: PLC0415 - optional, slow import

    platform = GcpPlatform(clients_for(ctx, project))
    destroy_confirmed(platform, GcpScope(deployment), where=f"project {project}", yes=yes)


def run_job(
    ctx: click.Context, job: JobFile, options: RunOptions, say: Say
) -> tuple[JobOutcome, str]:
    """``run --platform gcp``: one Shielded VM for ``job``, deleted at the end."""
    need(
        "gcp",
        {
            "--gcp-project (or $GOOGLE_CLOUD_PROJECT)": options.gcp_project,
            "--zone": options.zone,
            "--gcp-image": options.gcp_image,
            "--caller-ip": options.caller_ip,
        },
    )
    from .platform import GcpPlatform  # noqa: PLC0415 - optional, slow import
    from .run import DEFAULT_MACHINE_TYPE, DEFAULT_SCRATCH_GIB, GcpRun  # noqa: PLC0415

    spec = GcpRun(
        zone=str(options.zone),
        image=str(options.gcp_image),
        output=options.output,
        recipe=options.recipe_path,
        caller_ip=str(options.caller_ip),
        machine_type=options.vm_size or DEFAULT_MACHINE_TYPE,
        scratch_gib=options.scratch_gib or DEFAULT_SCRATCH_GIB,
        secure_boot=options.secure_boot,
        platform_profile=options.platform_profile,
        trust_roots=tuple(load_root(p) for p in options.trust_roots),
        boot_timeout=options.boot_timeout,
    )
    platform = GcpPlatform(clients_for(ctx, str(options.gcp_project)))
    return run_on(platform, spec, job, options.output, say=say), options.verify_hint()
