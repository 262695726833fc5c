"""The ``aicert-verify`` command line: check a certificate offline, or digest a file tree.

``aicert-verify CERT [OPTIONS]`` verifies; ``aicert-verify digest PATH`` prints a
tree digest. One handler maps every error to an exit code (docs/exit-codes.md).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click
from cryptography import x509

from aicert import __version__

from .ak_chain import bundled_roots
from .bom import export_cyclonedx
from .boot_reference import reference_from_recipe, reference_from_uki
from .certificate import load_certificate
from .cli_params import nonce_value
from .cli_runner import AicertGroup, ReportedError, run_cli, use_color
from .digest_cli import digest_command
from .errors import EXIT_CODES, InputError
from .input_file import MAX_PEM_BYTES, read_input_file
from .platform_profile import bundled_profile_names, load_profile
from .report import render_json, render_text
from .verify import Policy, Status, verify_certificate
from .weights import tree_digest_of

_VERBOSE = ("-v", "--verbose")


class _VerifyByDefault(AicertGroup):
    """``aicert-verify CERT`` means ``aicert-verify verify CERT``; ``-v`` goes anywhere."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        verbose = [a for a in args[:end] if a in _VERBOSE][:1]
        rest = [a for a in args[:end] if a not in _VERBOSE] + args[end:]
        if rest and rest[0] not in (*self.commands, "-h", "--help", "--version"):
            rest = ["verify", *rest]
        return super().parse_args(ctx, [*verbose, *rest])


_EPILOG = "Exit status: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())


@click.group(
    "aicert-verify",
    cls=_VerifyByDefault,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_EPILOG,
)
@click.version_option(__version__, prog_name="aicert-verify")
@click.option("-v", "--verbose", is_flag=True, help="Log what is being checked.")
def cli(verbose: bool) -> None:
    """Verify aicert certificates offline.

    \b
    aicert-verify CERT [OPTIONS]    verify a certificate (see: aicert-verify verify --help)
    aicert-verify digest PATH       tree digest of a file or directory
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@cli.command(epilog=_EPILOG)
@click.argument("certificate", type=click.Path(path_type=Path))
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="Weights file or directory on disk: must hash to the certificate's subject.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path),
    help="recipe.json of the published image: boot PCRs must equal its prediction.",
)
@click.option(
    "--uki",
    type=click.Path(path_type=Path),
    help="The image's UKI (e.g. rebuilt): boot PCRs must equal those predicted from it.",
)
@click.option(
    "--any-image",
    is_flag=True,
    help="Accept any booted image (skips the boot-PCR check; the report says so).",
)
@click.option(
    "--platform-profile",
    metavar="NAME|FILE",
    help="Firmware reference profile: PCRs 0-3 and 7, and whether the platform gives a "
    "firmware event log (bundled: " + (", ".join(bundled_profile_names()) or "none") + ").",
)
@click.option(
    "--trust-root",
    "trust_roots",
    multiple=True,
    type=click.Path(path_type=Path),
    help="PEM file of a root CA for the AK chain (repeatable); the Azure vTPM root is bundled. "
    "A chain ending in a root given here is reported as a local test platform, with no "
    "hardware root of trust.",
)
@click.option(
    "--accept-uncertified-ak",
    is_flag=True,
    help="Accept a certificate whose AK no certificate ties to a TPM (AWS NitroTPM certifies "
    "none): ak-chain is reported as not established and the verdict as NO ROOT OF TRUST, "
    "never as verified by hardware. See docs/aws.md.",
)
@click.option(
    "--nonce",
    callback=nonce_value,
    metavar="HEX",
    help="The nonce sent with the job (8-64 bytes, hex): proves freshness.",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=PATH",
    help="An input you hold (code, data set): must be the one measured as NAME (repeatable).",
)
@click.option(
    "--results",
    multiple=True,
    metavar="NAME=PATH",
    help="The results file of evaluation NAME: must be the one measured (repeatable).",
)
@click.option(
    "--linked-certificate",
    "linked_certificates",
    multiple=True,
    type=click.Path(path_type=Path),
    help="For an evaluation-only certificate: the certificate it links (repeatable, in link "
    "order, when that one is evaluation-only too and links another).",
)
@click.option(
    "--require-training",
    is_flag=True,
    help="The chain of linked certificates must end in a training certificate, not in "
    "weights uploaded to an evaluation-only job.",
)
@click.option(
    "--export-bom",
    type=(click.Choice(["cyclonedx"]), click.Path(path_type=Path)),
    metavar="cyclonedx FILE",
    help="After successful verification, write a CycloneDX 1.6 ML-BOM to FILE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def verify(
    certificate: Path,
    weights: Path | None,
    recipe: Path | None,
    uki: Path | None,
    any_image: bool,
    platform_profile: str | None,
    trust_roots: Sequence[Path],
    accept_uncertified_ak: bool,
    nonce: str | None,
    inputs: Sequence[str],
    results: Sequence[str],
    linked_certificates: Sequence[Path],
    require_training: bool,
    export_bom: tuple[str, Path] | None,
    as_json: bool,
) -> None:
    """Verify CERTIFICATE: AK chain, quote, binding, logs, boot PCRs and (optionally) weights.

    Exit status 0 only when every check that runs passes.
    """
    if sum(x is not None for x in (recipe, uki)) + any_image > 1:
        raise click.UsageError("give at most one of --recipe, --uki and --any-image")
    if recipe is not None:
        reference = reference_from_recipe(recipe)
    elif uki is not None:
        reference = reference_from_uki(uki)
    else:
        reference = None
    policy = Policy(
        trust_roots=(*bundled_roots(), *(load_root(p) for p in trust_roots)),
        expected_nonce=nonce,
        boot_reference=reference,
        accept_any_image=any_image,
        platform_profile=load_profile(platform_profile) if platform_profile else None,
        weights_path=weights,
        tree_digest=tree_digest_of,
        linked_certificates=tuple(linked_certificates),
        require_training=require_training,
        input_paths=_named_paths(inputs, "--input"),
        results_paths=_named_paths(results, "--results"),
        accept_uncertified_ak=accept_uncertified_ak,
    )
    report = verify_certificate(load_certificate(certificate), policy)
    if as_json:
        click.echo(json.dumps(render_json(report, certificate), indent=2))
    elif not isinstance(report.error, InputError):
        # Malformed or missing input is no verdict: the error line alone says it.
        click.echo(render_text(report, certificate, color=use_color(sys.stdout)))
    if report.error is not None:
        failed = next(r.check for r in report.results if r.status is Status.FAILED)
        raise ReportedError(report.error, failed)
    if export_bom is not None and report.provenance is not None:
        export_cyclonedx(report.provenance, certificate, export_bom[1])
        click.echo(f"wrote CycloneDX ML-BOM to {export_bom[1]}", err=True)


def _named_paths(values: Sequence[str], option: str) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=PATH, got {value!r}", param_hint=option)
        named[name] = Path(path)
    return named


cli.add_command(digest_command)


def load_root(path: Path) -> x509.Certificate:
    data = read_input_file(path, "trust root", MAX_PEM_BYTES)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InputError(f"trust root {path} is not a PEM X.509 certificate") from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and map every error to one line and an exit code."""
    run_cli(cli, "aicert-verify", argv)
