"""``aicert-build deploy azure``, ``destroy azure`` and the Azure half of ``run``.

The Azure SDK is imported only when one of these commands runs: it is an optional
extra (``aicert[azure]``) and takes about a second to import.

Tests inject the credential and the HTTP transport through the click context object
(``obj={"azure_credential": ..., "azure_options": ...}``); users get
DefaultAzureCredential and the SDK's own transport.
"""

from __future__ import annotations

import logging
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
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aicert import __version__

from .sizes import VmSizeError, check_vm_size

AZURE_PROFILE = "azure"
# Kept in step with DEFAULT_VM_SIZE and DEFAULT_SCRATCH_GIB of .run and .vm, whose
# modules import the Azure SDK.
DEFAULT_AZURE_VM_SIZE = "Standard_D4s_v5"
DEFAULT_AZURE_SCRATCH_GIB = 128
RUN_OPTIONS = frozenset(
    {
        "subscription",
        "resource_group",
        "location",
        "image_version_id",
        "recipe",
        "caller_ip",
        "vm_size",
        "platform_profile",
        "trust_roots",
    }
)
"""The ``run`` options --platform azure takes besides the common ones."""

if TYPE_CHECKING:
    from .clients import AzureClients


def _clients(ctx: click.Context, subscription: str) -> AzureClients:
    from .clients import ClientOptions, connect  # noqa: PLC0415 - optional, slow import

    # azure-identity logs a many-line warning naming every credential it tried, and
    # azure-core logs each retry; the CloudError aicert raises says what matters in one
    # line. `aicert-build -v` shows them.
    verbose = bool(ctx.find_root().params.get("verbose"))
    logging.getLogger("azure").setLevel(logging.NOTSET if verbose else logging.ERROR)

    obj = ctx.find_root().obj or {}
    return connect(
        subscription,
        credential=obj.get("azure_credential"),
        options=obj.get("azure_options") or ClientOptions(),
    )


def _certificate_der(path: Path) -> bytes:
    """The DER bytes of the X.509 certificate in ``path`` (PEM or DER)."""
    data = read_input_file(path, "Secure Boot certificate", MAX_PEM_BYTES)
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise InputError(f"{path} is not an X.509 certificate (PEM or DER)") from exc
    return cert.public_bytes(Encoding.DER)


_subscription = click.option(
    "--subscription",
    envvar="AZURE_SUBSCRIPTION_ID",
    required=True,
    help="Azure subscription id (default: $AZURE_SUBSCRIPTION_ID).",
)
_resource_group = click.option(
    "--resource-group", "resource_group", required=True, help="An existing resource group."
)


@click.command("azure")
@_subscription
@_resource_group
@click.option("--location", required=True, help="Azure region, e.g. westeurope.")
@click.option(
    "--gallery",
    default="aicert_gallery",
    show_default=True,
    help="Azure Compute Gallery (created if missing).",
)
@click.option(
    "--image-definition",
    default="aicert-os",
    show_default=True,
    help="Image definition in the gallery (created if missing).",
)
@click.option(
    "--image-version",
    default=__version__,
    show_default=True,
    help="Gallery image version, MAJOR.MINOR.PATCH; one version holds one disk image.",
)
@click.option(
    "--image",
    "image_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/image"),
    show_default=True,
    help="Output directory of 'aicert-build image --profile azure' (disk.raw, recipe.json).",
)
@click.option(
    "--secure-boot-cert",
    "secure_boot_certs",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Certificate (PEM or DER) that signs the UKI, added to the VMs' UEFI db so the "
    "image boots with Secure Boot on. Repeatable.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Parallel page writes during the upload.",
)
@click.pass_context
def deploy_command(
    ctx: click.Context,
    subscription: str,
    resource_group: str,
    location: str,
    gallery: str,
    image_definition: str,
    image_version: str,
    image_dir: Path,
    secure_boot_certs: tuple[Path, ...],
    workers: int,
) -> None:
    """Upload disk.raw as a Trusted Launch gallery image version (idempotent, resumable)."""
    from .deploy import DeploymentSpec  # noqa: PLC0415 - optional, slow import
    from .platform import AzurePlatform  # noqa: PLC0415

    require_profile(image_dir, AZURE_PROFILE, "it would not boot as Azure expects")
    spec = DeploymentSpec(
        resource_group=resource_group,
        location=location,
        disk=image_dir / "disk.raw",
        image_version=image_version,
        gallery=gallery,
        image_definition=image_definition,
        secure_boot_certs=tuple(_certificate_der(p) for p in secure_boot_certs),
    )
    publish_and_print(AzurePlatform(_clients(ctx, subscription), workers=workers), spec)


@click.command("azure")
@_subscription
@_resource_group
@deployment_option("this deployment (GALLERY/DEFINITION/VERSION or vm/NAME)")
@yes_option
@click.pass_context
def destroy_command(
    ctx: click.Context,
    subscription: str,
    resource_group: str,
    deployment: str | None,
    yes: bool,
) -> None:
    """Delete every Azure resource aicert created in a resource group (found by tag)."""
    from .platform import AzurePlatform, AzureScope  # noqa: PLC0415 - optional, slow import

    platform = AzurePlatform(_clients(ctx, subscription))
    destroy_confirmed(
        platform, AzureScope(resource_group, deployment), where=resource_group, yes=yes
    )


def run_job(
    ctx: click.Context, job: JobFile, options: RunOptions, say: Say
) -> tuple[JobOutcome, str]:
    """``run --platform azure``: one Trusted Launch VM for ``job``, deleted at the end."""
    need(
        "azure",
        {
            "--subscription (or $AZURE_SUBSCRIPTION_ID)": options.subscription,
            "--resource-group": options.resource_group,
            "--location": options.location,
            "--image-version": options.image_version_id,
            "--caller-ip": options.caller_ip,
        },
    )
    if options.vm_size is not None:
        try:
            check_vm_size(options.vm_size)
        except VmSizeError as exc:
            raise click.UsageError(f"--vm-size: {exc.message}") from None
    from .platform import AzurePlatform  # noqa: PLC0415 - optional, slow import
    from .run import AzureRun  # noqa: PLC0415

    spec = AzureRun(
        subscription=str(options.subscription),
        resource_group=str(options.resource_group),
        location=str(options.location),
        image_version_id=str(options.image_version_id),
        output=options.output,
        recipe=options.recipe_path,
        caller_ip=str(options.caller_ip),
        vm_size=options.vm_size or job.azure.vm_size or DEFAULT_AZURE_VM_SIZE,
        scratch_gib=options.scratch_gib or job.azure.scratch_gib or DEFAULT_AZURE_SCRATCH_GIB,
        platform_profile=options.platform_profile,
        trust_roots=tuple(load_root(p) for p in options.trust_roots),
        boot_timeout=options.boot_timeout,
    )
    platform = AzurePlatform(_clients(ctx, str(options.subscription)))
    return run_on(platform, spec, job, options.output, say=say), options.verify_hint()
