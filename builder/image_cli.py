"""``aicert-build image``, ``measure``, ``lock``, ``check-reproducible``, ``record-profile``."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
from aicert.builder import firmware_profile
from aicert.builder.image import (
    DEFAULT_CACHE,
    LOCK_PATH,
    ImageRequest,
    build_image,
    lock_from_builds,
)
from aicert.builder.mkosi import DEFAULT_PROFILE, PROFILES
from aicert.builder.module_signing import (
    ModuleSigning,
    module_signing_from_options,
    require_module_profile,
)
from aicert.builder.reproducibility import check_reproducible
from aicert.verifier.boot.uki import predict_boot_pcrs
from aicert.verifier.errors import AicertError, FormatError
from aicert.verifier.input_file import MAX_UKI_BYTES, read_input_file


class NotReproducibleError(AicertError):
    """Two builds of the same recipe differ: the image is not reproducible."""

    exit_code = 1


def _step_printer(verbose: bool) -> Callable[[str], None]:
    """Show mkosi's step lines ("‣ ..."), or everything with --verbose."""

    def show(line: str) -> None:
        if verbose or line.lstrip().startswith("‣"):
            click.echo(line, err=True)

    return show


_profile_option = click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Image profile (mkosi.conf.d/); 'gpu' is an add-on over qemu, 'azure+gpu' over azure "
    "(docs/gpu.md).",
)


def _module_signing_options(command: Callable[..., None]) -> Callable[..., None]:
    """--module-signing-key/--module-signing-cert and --module-signatures (gpu profiles)."""
    path = click.Path(path_type=Path, dir_okay=False)
    for option in reversed(
        [
            click.option(
                "--module-signing-key",
                type=path,
                default=None,
                help="Unencrypted RSA PEM key that signs the kernel modules the build "
                "compiles (gpu profiles), so that they load with Secure Boot on: the key of "
                "a certificate in the VMs' UEFI db (docs/gpu.md).",
            ),
            click.option(
                "--module-signing-cert",
                type=path,
                default=None,
                help="Certificate (PEM or DER) of --module-signing-key.",
            ),
            click.option(
                "--module-signatures",
                type=path,
                default=None,
                help="A signed build's module-signatures.json: graft its signatures instead "
                "of signing, to rebuild that image byte for byte without the key.",
            ),
        ]
    ):
        command = option(command)
    return command


def _module_signing(
    profile: str, key: Path | None, cert: Path | None, signatures: Path | None
) -> ModuleSigning | None:
    """The signing options as one value; a usage error if they do not fit together."""
    try:
        signing = module_signing_from_options(key, cert, signatures)
        if signing is not None:
            require_module_profile(profile)
        return signing
    except AicertError as exc:
        raise click.UsageError(exc.message) from None


@click.command("image")
@_profile_option
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/image"),
    show_default=True,
    help="Directory to write disk.raw, uki.efi and recipe.json to (replaced only when done).",
)
@click.option("--mirror", default=None, help="Debian mirror URL, e.g. a snapshot.debian.org one.")
@click.option(
    "--security-mirror",
    default=None,
    help="Debian security archive URL (default: security.debian.org unless --mirror is given).",
)
@_module_signing_options
@click.option("--verbose", is_flag=True, help="Show all of mkosi's output.")
def image_command(
    profile: str,
    output: Path,
    mirror: str | None,
    security_mirror: str | None,
    module_signing_key: Path | None,
    module_signing_cert: Path | None,
    module_signatures: Path | None,
    verbose: bool,
) -> None:
    """Build the measured OS image (mkosi) and write its recipe with the expected PCRs."""
    request = ImageRequest(
        output=output,
        profile=profile,
        mirror=mirror,
        security_mirror=security_mirror,
        module_signing=_module_signing(
            profile, module_signing_key, module_signing_cert, module_signatures
        ),
    )
    result = build_image(request, _step_printer(verbose))
    outputs = result.recipe["outputs"]
    click.echo(
        f"built {result.output} in {result.seconds:.0f} s: uki {outputs['uki']['sha256']} "
        f"({outputs['uki']['size'] >> 20} MiB), roothash {outputs['roothash']}, "
        f"disk {outputs['disk']['size'] >> 20} MiB"
    )


@click.command("measure")
@click.argument("uki", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {pcr: hex} as JSON.")
def measure_command(uki: Path, as_json: bool) -> None:
    """Print the PCRs 4, 9, 11, 12, 13 expected when booting UKI directly."""
    try:
        prediction = predict_boot_pcrs(read_input_file(uki, "UKI", MAX_UKI_BYTES))
    except FormatError as exc:
        raise FormatError(f"UKI {uki}: {exc.message}") from None
    pcrs = {str(pcr): value.hex() for pcr, value in sorted(prediction.pcrs.items())}
    if as_json:
        click.echo(json.dumps(pcrs, indent=1))
        return
    click.echo(f"systemd-stub {prediction.stub_version}")
    for pcr, value in pcrs.items():
        click.echo(f"PCR {pcr:>2}: {value}")


@click.command("lock")
@click.argument("builds", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=LOCK_PATH,
    show_default=True,
)
def lock_command(builds: tuple[Path, ...], lock_file: Path) -> None:
    """Write the package lock from the recipes of BUILDS (one per profile)."""
    lock = lock_from_builds(list(builds))
    lock_file.write_text(lock.to_json())
    counts = ", ".join(f"{part} {len(v)}" for part, v in sorted(lock.parts.items()))
    click.echo(f"wrote {lock_file}: {counts} packages")


@click.command("check-reproducible")
@_profile_option
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to keep the two builds (default: a temporary directory, removed afterwards).",
)
@_module_signing_options
@click.option("--verbose", is_flag=True, help="Show all of mkosi's output.")
def check_reproducible_command(
    profile: str,
    workdir: Path | None,
    module_signing_key: Path | None,
    module_signing_cert: Path | None,
    module_signatures: Path | None,
    verbose: bool,
) -> None:
    """Build twice from a clean state (sharing only the package download cache) and compare."""
    signing = _module_signing(profile, module_signing_key, module_signing_cert, module_signatures)
    with tempfile.TemporaryDirectory(prefix="aicert-repro-", dir=DEFAULT_CACHE.parent) as tmp:
        base = workdir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        comparison, results = check_reproducible(
            profile,
            base,
            DEFAULT_CACHE / "packages",
            _step_printer(verbose),
            module_signing=signing,
        )
    outputs = results[0].recipe["outputs"]
    for label, same in (
        ("UKI sha256", comparison.same_uki),
        ("roothash", comparison.same_roothash),
        ("disk sha256", comparison.same_disk),
    ):
        click.echo(f"{label}: {'same' if same else 'DIFFERENT'}")
    if not comparison.reproducible:
        also = comparison.differences[1:]
        raise NotReproducibleError(
            f"the two builds differ, first in {comparison.differences[0]}"
            + (f" (also: {', '.join(also)})" if also else "")
        )
    click.echo(
        f"reproducible: uki {outputs['uki']['sha256']}, roothash {outputs['roothash']}, "
        f"disk {outputs['disk']['sha256']} "
        f"(builds took {results[0].seconds:.0f} s and {results[1].seconds:.0f} s)"
    )


@click.command("record-profile")
@click.option("--platform", type=click.Choice(firmware_profile.PLATFORMS), default="qemu")
@click.option(
    "--image",
    "image_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/image"),
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=firmware_profile.PROFILE_PATH,
    show_default=True,
)
def record_profile_command(platform: str, image_dir: Path, out: Path) -> None:
    """Boot IMAGE on the reference QEMU machine and record its firmware PCRs."""
    profile = firmware_profile.record_profile(image_dir, out)
    click.echo(f"wrote {out} ({platform}): " + ", ".join(f"PCR {p}" for p in sorted(profile.pcrs)))


COMMANDS = (
    image_command,
    measure_command,
    lock_command,
    check_reproducible_command,
    record_profile_command,
)
