"""``aicert-build publish`` and ``aicert-build maintainer-key``: signed reference bundles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from aicert.builder.publish import build_bundle, load_signing_key, write_new_key
from aicert.verifier.boot.platform_profile import parse_profile
from aicert.verifier.boot.reference_bundle import MAX_VALIDITY, utc_text
from aicert.verifier.input_file import MAX_PROFILE_BYTES, MAX_RECIPE_BYTES, read_input_file


@click.command("publish")
@click.option(
    "--recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The image's recipe.json (aicert-build image writes it).",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A platform profile file to publish (repeatable); its name is the profile's own.",
)
@click.option(
    "--key",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The maintainer's private key (PEM, ECDSA P-256; see aicert-build maintainer-key).",
)
@click.option(
    "--valid-days",
    type=click.IntRange(1, MAX_VALIDITY.days),
    default=90,
    show_default=True,
    help="How long the bundle is valid; after that aicert-verify refuses it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("reference.dsse.json"),
    show_default=True,
)
def publish_command(
    recipe: Path | None, profiles: tuple[Path, ...], key: Path, valid_days: int, output: Path
) -> None:
    """Sign recipe.json and platform profiles as a reference bundle with an expiry.

    Auditors check it with: aicert-verify CERT --reference BUNDLE --maintainer-key KEY.pub
    """
    if recipe is None and not profiles:
        raise click.UsageError("give --recipe, --profile, or both")
    signing_key = load_signing_key(key)
    recipe_bytes = read_input_file(recipe, "recipe", MAX_RECIPE_BYTES) if recipe else None
    by_name: dict[str, bytes] = {}
    for path in profiles:
        data = read_input_file(path, "platform profile", MAX_PROFILE_BYTES)
        name = parse_profile(data, str(path)).name
        if name in by_name:
            raise click.UsageError(f"two profiles are named {name!r}")
        by_name[name] = data
    now = datetime.now(UTC).replace(microsecond=0)
    envelope = build_bundle(recipe_bytes, by_name, signing_key, now, timedelta(days=valid_days))
    try:
        output.write_text(json.dumps(envelope.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise click.FileError(str(output), exc.strerror) from None
    names = ", ".join(sorted(by_name)) or "no profiles"
    expires = utc_text(now + timedelta(days=valid_days))
    click.echo(
        f"wrote reference bundle {output} ({'recipe, ' if recipe else ''}{names}; "
        f"signed by {envelope.signatures[0].keyid[:16]}…, expires {expires})",
        err=True,
    )


@click.command("maintainer-key")
@click.argument("private_key", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--public",
    "public_key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the public key (default: PRIVATE_KEY with .pub appended).",
)
def maintainer_key_command(private_key: Path, public_key: Path | None) -> None:
    """Make a new maintainer key pair (ECDSA P-256) for aicert-build publish.

    Keep PRIVATE_KEY offline; publish the public key where auditors get it
    (docs/certificate-format.md, "Reference bundles", on rotation).
    """
    public = public_key or private_key.with_name(private_key.name + ".pub")
    keyid = write_new_key(private_key, public)
    click.echo(f"wrote {private_key} (private, mode 0600) and {public}; key id {keyid}", err=True)
