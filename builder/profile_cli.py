"""``aicert-build profile capture``: a firmware reference profile from a certificate."""

from __future__ import annotations

from pathlib import Path

import click
from aicert.builder.profile_capture import capture_profile, write_profile
from aicert.verifier.ak_chain import bundled_roots
from aicert.verifier.certificate import load_certificate
from aicert.verifier.cli import load_root


@click.group("profile")
def profile_group() -> None:
    """Firmware reference profiles (PCRs 0-3, 7) for aicert-verify --platform-profile."""


@profile_group.command("capture")
@click.argument("certificate", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Profile name, e.g. azure-trustedlaunch.")
@click.option(
    "--trust-root",
    "trust_roots",
    multiple=True,
    type=click.Path(path_type=Path),
    help="PEM root for the AK chain (repeatable); the Azure vTPM root is bundled.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the profile (default: platform-NAME.json).",
)
def capture_command(
    certificate: Path, name: str, trust_roots: tuple[Path, ...], output: Path | None
) -> None:
    """Record the firmware PCRs of CERTIFICATE's platform, once its quote verifies.

    Use it for platforms whose firmware PCRs are not published (Azure Trusted Launch):
    take a certificate from a VM you trust, then verify later ones against the profile.
    """
    roots = (*bundled_roots(), *(load_root(p) for p in trust_roots))
    profile = capture_profile(load_certificate(certificate), certificate.name, name, roots)
    out = output or Path(f"platform-{name}.json")
    write_profile(profile, out)
    click.echo(f"wrote platform profile {name!r} to {out}", err=True)
