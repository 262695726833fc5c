"""``aicert-build profile``: capture, extend and convert firmware reference profiles."""

from __future__ import annotations

from pathlib import Path

import click
from aicert.builder.profile_capture import (
    PlatformFacts,
    capture_from_go_attestation,
    capture_profile,
    write_profile,
)
from aicert.verifier.boot.boot_reference import reference_from_recipe
from aicert.verifier.boot.platform_profile import (
    declare_per_vm,
    load_profile,
    merge_capture,
    migrate_old_profile,
)
from aicert.verifier.cli import load_root
from aicert.verifier.input_file import MAX_CERTIFICATE_BYTES, MAX_PROFILE_BYTES, read_input_file
from aicert.verifier.json_fields import pcr_index
from aicert.verifier.statement.certificate import load_certificate
from aicert.verifier.tpm.ak_chain import bundled_roots


@click.group("profile")
def profile_group() -> None:
    """Firmware reference profiles (PCRs 0-3, 6, 7) for aicert-verify --platform-profile."""


def _per_vm(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[int, str]]:
    declared: list[tuple[int, str]] = []
    for value in values:
        key, sep, reason = value.partition("=")
        index = pcr_index(key)
        if not sep or index is None or not reason.strip():
            raise click.BadParameter(
                f"expected PCR=REASON (e.g. 6='per-VM on Azure'), got {value!r}"
            )
        assert index is not None  # noqa: S101 - in PROFILE_PCRS
        declared.append((index, reason))
    return declared


@profile_group.command("capture")
@click.argument("certificate", type=click.Path(path_type=Path))
@click.option("--name", help="Profile name, e.g. azure-trustedlaunch (not with --add).")
@click.option(
    "--add",
    "add_to",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Merge this capture into an existing profile file: new values become new variants.",
)
@click.option("--vm-size", help="Provenance: the VM size it ran on (e.g. Standard_D2s_v5).")
@click.option("--region", help="Provenance: the region or site (e.g. eastus2).")
@click.option("--host-version", help="Provenance: the host or firmware version, where known.")
@click.option(
    "--per-vm",
    multiple=True,
    callback=_per_vm,
    metavar="PCR=REASON",
    help="Declare a PCR per-VM (repeatable): never compared, reported SKIPPED with REASON.",
)
@click.option(
    "--trust-root",
    "trust_roots",
    multiple=True,
    type=click.Path(path_type=Path),
    help="PEM root for the AK chain (repeatable); the Azure vTPM root is bundled.",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The image's recipe.json: needed for a NitroTPM certificate (AWS), whose AK a "
    "Nitro document vouches for only with this image's SHA-384 boot PCRs.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the profile (default: platform-NAME.json, or the --add file).",
)
def capture_command(
    certificate: Path,
    name: str | None,
    add_to: Path | None,
    vm_size: str | None,
    region: str | None,
    host_version: str | None,
    per_vm: list[tuple[int, str]],
    trust_roots: tuple[Path, ...],
    recipe: Path | None,
    output: Path | None,
) -> None:
    """Record the firmware PCRs of CERTIFICATE's platform, once its quote verifies.

    Use it for platforms whose firmware PCRs are not published (Azure Trusted Launch):
    take a certificate from a VM you trust, then verify later ones against the profile.
    After a firmware update, or on another VM size or region, capture again with
    --add PROFILE: the profile then accepts either firmware, and the verifier's
    report names the variant each PCR matched.
    """
    if (name is None) == (add_to is None):
        raise click.UsageError("give either --name (a new profile) or --add PROFILE")
    existing = load_profile(str(add_to)) if add_to is not None else None
    roots = (*bundled_roots(), *(load_root(p) for p in trust_roots))
    facts = PlatformFacts(vm_size, region, host_version, per_vm)
    profile_name = existing.name if existing is not None else str(name)
    profile = capture_profile(
        load_certificate(certificate),
        certificate.name,
        profile_name,
        roots,
        platform=facts,
        boot_reference=reference_from_recipe(recipe) if recipe is not None else None,
    )
    changes = [f"new profile {profile_name!r}"]
    if existing is not None:
        profile, changes = merge_capture(declare_per_vm(existing, dict(per_vm)), profile)
        changes += [f"PCR {pcr}: per-VM ({reason})" for pcr, reason in per_vm]
        changes = changes or ["every captured value was already accepted: no change"]
    out = output or add_to or Path(f"platform-{profile_name}.json")
    write_profile(profile, out)
    for line in changes:
        click.echo(f"  {line}", err=True)
    click.echo(f"wrote platform profile {profile_name!r} to {out}", err=True)


@profile_group.command("from-go-attestation")
@click.argument("evidence", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Profile name, e.g. gcp.")
@click.option("--description", required=True, help="The platform, as the profile states it.")
@click.option(
    "--source",
    required=True,
    help="Where EVIDENCE comes from (repository, commit, file), recorded with each value.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the profile (default: platform-NAME.json).",
)
def from_go_attestation_command(
    evidence: Path, name: str, description: str, source: str, output: Path | None
) -> None:
    """Derive the SHA-256 firmware PCRs of go-attestation evidence (its JSON form).

    For platforms whose only real evidence is a SHA-1 quote with its event log (GCP's
    Shielded VM in go-attestation's test data). The quote's signature, its PCR digest
    and the log's replay are checked first; each SHA-256 value is then recomputed from
    the logged event data, which works only if every event of PCRs 0-3 and 7 is
    determined by its data. The AK of such evidence is not certified: prefer
    'profile capture' from an aicert certificate wherever one exists.
    """
    data = read_input_file(evidence, "go-attestation evidence", MAX_CERTIFICATE_BYTES)
    profile = capture_from_go_attestation(data, str(evidence), name, description, source)
    out = output or Path(f"platform-{name}.json")
    write_profile(profile, out)
    click.echo(f"wrote platform profile {name!r} to {out}", err=True)


@profile_group.command("migrate")
@click.argument("old", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the converted profile (default: over OLD).",
)
def migrate_command(old: Path, output: Path | None) -> None:
    """Convert a profile of the first format (one value per PCR) to accepted variants.

    Each value becomes the one accepted variant of its PCR, with the old "obtained"
    text as its source and no capture time (the old format recorded none).
    """
    profile = migrate_old_profile(
        read_input_file(old, "platform profile", MAX_PROFILE_BYTES), str(old)
    )
    out = output or old
    write_profile(profile, out)
    click.echo(
        f"wrote platform profile {profile.name!r} ({len(profile.pcrs)} PCRs) to {out}", err=True
    )
