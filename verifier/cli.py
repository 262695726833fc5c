"""The ``aicert-verify`` command line: check a certificate offline, or digest a file tree.

``aicert-verify CERT [OPTIONS]`` verifies; ``aicert-verify digest PATH`` prints a
tree digest. One handler maps every error to an exit code (docs/exit-codes.md).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
from cryptography import x509

from aicert import __version__
from aicert.bom import export_cyclonedx
from aicert.digest_cli import digest_command
from aicert.ear import load_ear_key, write_ear

from .boot.boot_reference import BootReference, reference_from_recipe, reference_from_uki
from .boot.platform_profile import PlatformProfile, bundled_profile_names, load_profile
from .boot.reference_bundle import ReferenceBundle, load_bundle
from .boot.sigstore_bundle import SigstoreSigner, load_sigstore_bundle
from .cli_params import nonce_value
from .cli_runner import AicertGroup, ReportedError, run_cli, use_color
from .digest.weights import tree_digest_of
from .errors import EXIT_CODES, InputError
from .gpu.nvidia_evidence import GpuPolicy, bundled_nvidia_roots
from .gpu.nvidia_rim import MAX_RIM_BYTES, Rim, parse_rim
from .input_file import MAX_PEM_BYTES, read_input_file
from .report import render_json, render_text
from .statement.certificate import load_certificate
from .tpm.ak_chain import bundled_roots
from .verify import Policy, Status, verify_certificate

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
    help="Firmware reference profile: accepted variants of PCRs 0-3, 6, 7, and whether the "
    "platform gives a firmware event log (bundled: "
    + (", ".join(bundled_profile_names()) or "none")
    + "). With --reference, NAME is one of the bundle's profiles.",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Signed reference bundle (aicert-build publish): recipe and platform profiles from "
    "the maintainers; its signature and expiry are checked before any value is used.",
)
@click.option(
    "--maintainer-key",
    type=click.Path(path_type=Path),
    help="PEM public key (ECDSA P-256) the --reference bundle must be signed with.",
)
@click.option(
    "--sigstore-trust-root",
    type=click.Path(path_type=Path),
    help="Instead of --maintainer-key: the --reference bundle is a sigstore bundle, verified "
    "offline against this trusted_root.json (needs aicert[sigstore]).",
)
@click.option(
    "--sigstore-identity",
    metavar="IDENTITY",
    help="With --sigstore-trust-root: the signer identity its certificate must name.",
)
@click.option(
    "--sigstore-issuer",
    metavar="URL",
    help="With --sigstore-trust-root: the OIDC issuer its certificate must name.",
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
@click.option(
    "--ear",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the result as an IETF RATS EAR (a JWT with AR4SI trustworthiness "
    "vectors for boot, platform, training, evaluation), pass or fail; needs --ear-key.",
)
@click.option(
    "--ear-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key (ECDSA P-256 or Ed25519) that signs the --ear token.",
)
@click.option(
    "--gpu-rim",
    "gpu_rims",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Signed NVIDIA RIM file (driver or VBIOS): GPU measurements must match (repeatable).",
)
@click.option(
    "--gpu-root",
    "gpu_roots",
    multiple=True,
    type=click.Path(path_type=Path),
    help="PEM file of a GPU device root instead of the bundled NVIDIA Device Identity CA.",
)
@click.option(
    "--gpu-rim-root",
    "gpu_rim_roots",
    multiple=True,
    type=click.Path(path_type=Path),
    help="PEM file of a RIM signing root instead of the bundled NVIDIA CoRIM signing root.",
)
@click.option(
    "--require-gpus",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Refuse a certificate that records fewer than N GPUs.",
)
@click.option(
    "--require-gpu-cc",
    is_flag=True,
    help="Refuse a GPU not in confidential-computing mode (off or DEVTOOLS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def verify(
    certificate: Path,
    weights: Path | None,
    recipe: Path | None,
    uki: Path | None,
    any_image: bool,
    platform_profile: str | None,
    reference: Path | None,
    maintainer_key: Path | None,
    sigstore_trust_root: Path | None,
    sigstore_identity: str | None,
    sigstore_issuer: str | None,
    trust_roots: Sequence[Path],
    accept_uncertified_ak: bool,
    nonce: str | None,
    inputs: Sequence[str],
    results: Sequence[str],
    linked_certificates: Sequence[Path],
    require_training: bool,
    export_bom: tuple[str, Path] | None,
    ear: Path | None,
    ear_key: Path | None,
    gpu_rims: Sequence[Path],
    gpu_roots: Sequence[Path],
    gpu_rim_roots: Sequence[Path],
    require_gpus: int,
    require_gpu_cc: bool,
    as_json: bool,
) -> None:
    """Verify CERTIFICATE: AK chain, quote, binding, logs, boot PCRs and (optionally) weights.

    Exit status 0 only when every check that runs passes.
    """
    if sum(x is not None for x in (recipe, uki)) + any_image > 1:
        raise click.UsageError("give at most one of --recipe, --uki and --any-image")
    sigstore = (sigstore_trust_root, sigstore_identity, sigstore_issuer)
    if any(sigstore) and not all(sigstore):
        raise click.UsageError(
            "--sigstore-trust-root, --sigstore-identity and --sigstore-issuer go together"
        )
    signers = (maintainer_key is not None) + (sigstore_trust_root is not None)
    if (reference is None and signers) or (reference is not None and signers != 1):
        raise click.UsageError(
            "--reference needs exactly one of --maintainer-key and --sigstore-trust-root"
        )
    if (ear is None) != (ear_key is None):
        raise click.UsageError("--ear and --ear-key go together: aicert writes no unsigned EAR")
    ear_signer = load_ear_key(ear_key) if ear_key is not None else None
    bundle: ReferenceBundle | None = None
    if reference is not None and maintainer_key is not None:
        bundle = load_bundle(reference, maintainer_key)
    elif reference is not None and sigstore_trust_root and sigstore_identity and sigstore_issuer:
        signer = SigstoreSigner(sigstore_trust_root, sigstore_identity, sigstore_issuer)
        bundle = load_sigstore_bundle(reference, signer)
    if recipe is not None:
        boot = reference_from_recipe(recipe)
    elif uki is not None:
        boot = reference_from_uki(uki)
    elif bundle is not None and not any_image:
        boot = _bundle_recipe(bundle)
    else:
        boot = None
    profile: PlatformProfile | None
    if bundle is not None and platform_profile:
        profile = bundle.profile(platform_profile)
    else:
        profile = load_profile(platform_profile) if platform_profile else None
    policy = Policy(
        trust_roots=(*bundled_roots(), *(load_root(p) for p in trust_roots)),
        expected_nonce=nonce,
        boot_reference=boot,
        accept_any_image=any_image,
        platform_profile=profile,
        weights_path=weights,
        tree_digest=tree_digest_of,
        linked_certificates=tuple(linked_certificates),
        require_training=require_training,
        input_paths=_named_paths(inputs, "--input"),
        results_paths=_named_paths(results, "--results"),
        gpu=GpuPolicy(
            roots=tuple(load_root(p) for p in gpu_roots) or bundled_nvidia_roots(),
            rims=tuple(_load_rim(p) for p in gpu_rims),
            rim_roots=tuple(load_root(p) for p in gpu_rim_roots),
            require_gpus=require_gpus,
            require_cc=require_gpu_cc,
        ),
        accept_uncertified_ak=accept_uncertified_ak,
    )
    report = verify_certificate(load_certificate(certificate), policy)
    if ear is not None and ear_signer is not None and not isinstance(report.error, InputError):
        build = f"aicert-verify {__version__}"
        write_ear(report, ear, ear_signer, datetime.now(UTC), build)
        if report.error is None:
            # A failure's one stderr line is its error; the EAR is written all the same.
            click.echo(f"wrote attestation result (EAR) to {ear}", err=True)
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


def _bundle_recipe(bundle: ReferenceBundle) -> BootReference:
    if bundle.recipe is None:
        raise InputError(f"{bundle.describe()} carries no recipe: pass --recipe or --uki")
    return replace(bundle.recipe, source=f"recipe.json of {bundle.describe()}")


def _named_paths(values: Sequence[str], option: str) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=PATH, got {value!r}", param_hint=option)
        named[name] = Path(path)
    return named


cli.add_command(digest_command)


def _load_rim(path: Path) -> Rim:
    return parse_rim(read_input_file(path, "GPU RIM", MAX_RIM_BYTES), path.name)


def load_root(path: Path) -> x509.Certificate:
    data = read_input_file(path, "trust root", MAX_PEM_BYTES)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InputError(f"trust root {path} is not a PEM X.509 certificate") from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and map every error to one line and an exit code."""
    run_cli(cli, "aicert-verify", argv)
