"""``aicert-build deploy azure`` and ``aicert-build destroy``.

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
from aicert.builder.mkosi import PROFILES, profile_platform
from aicert.builder.recipe import load_recipe
from aicert.verifier.errors import InputError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aicert import __version__

AZURE_PROFILE = "azure"

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


def _require_azure_profile(recipe_path: Path) -> None:
    """Refuse an image built for another platform: it would not boot as Azure expects."""
    inputs = load_recipe(recipe_path).get("inputs")
    profile = inputs.get("profile") if isinstance(inputs, dict) else None
    if profile not in PROFILES or profile_platform(profile) != AZURE_PROFILE:
        raise InputError(
            f"{recipe_path} is the recipe of a {profile!r} image; deploy azure publishes only "
            f"images built with 'aicert-build image --profile {AZURE_PROFILE}' (or azure+gpu)"
        )


def _say(message: str) -> None:
    click.echo(message, err=True)


_subscription = click.option(
    "--subscription",
    envvar="AZURE_SUBSCRIPTION_ID",
    required=True,
    help="Azure subscription id (default: $AZURE_SUBSCRIPTION_ID).",
)
_resource_group = click.option(
    "--resource-group", "resource_group", required=True, help="An existing resource group."
)


@click.group()
def deploy() -> None:
    """Publish the built image where it can be booted."""


@deploy.command("azure")
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
def deploy_azure(
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

    _require_azure_profile(image_dir / "recipe.json")
    spec = DeploymentSpec(
        resource_group=resource_group,
        location=location,
        disk=image_dir / "disk.raw",
        image_version=image_version,
        gallery=gallery,
        image_definition=image_definition,
        secure_boot_certs=tuple(_certificate_der(p) for p in secure_boot_certs),
    )
    platform = AzurePlatform(_clients(ctx, subscription), workers=workers)
    published = platform.publish(spec, say=_say)
    if published.summary is not None:
        _say(published.summary)
    click.echo(published.image_id)


@click.command("destroy")
@_subscription
@_resource_group
@click.option(
    "--deployment",
    default=None,
    help="Only resources of this deployment (GALLERY/DEFINITION/VERSION); default: all.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def destroy_command(
    ctx: click.Context,
    subscription: str,
    resource_group: str,
    deployment: str | None,
    yes: bool,
) -> None:
    """Delete every Azure resource aicert created in a resource group (found by tag)."""
    from .deploy import find_managed  # noqa: PLC0415 - optional, slow import
    from .platform import AzurePlatform, AzureScope  # noqa: PLC0415

    clients = _clients(ctx, subscription)
    found = find_managed(clients, resource_group, deployment=deployment)
    if not found:
        _say(f"no aicert resources in {resource_group}")
        return
    for res in found:
        _say(f"  {res.type}  {res.id}")
    if not yes and not click.confirm(
        f"delete these {len(found)} resources?", default=False, err=True
    ):
        _say("nothing deleted")
        raise SystemExit(5)
    deleted = AzurePlatform(clients).destroy(AzureScope(resource_group, deployment), say=_say)
    _say(f"deleted {len(deleted)} resources")
