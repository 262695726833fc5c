"""``aicert-build environment``: build a training environment as an OCI archive."""

from __future__ import annotations

import json
from pathlib import Path

import click
from aicert.builder.environment import DEFAULT_CACHE, build_environment, load_definition


@click.command("environment")
@click.argument(
    "definition",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("examples/demo/environment.toml"),
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("env.oci.tar"),
    show_default=True,
    help="The OCI image-layout archive to write (replaced only when done).",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Where downloaded .deb files are kept between builds.",
)
@click.option(
    "--update-lock",
    is_flag=True,
    help="Install the newest versions and rewrite the definition's lock file from them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def environment_command(
    definition: Path, output: Path, cache: Path, update_lock: bool, as_json: bool
) -> None:
    """Build DEFINITION (default examples/demo/environment.toml) reproducibly from pinned
    Debian packages with mmdebstrap, and write it as an OCI image-layout archive for a job
    file's `environment.path`. Two builds of the same definition and lock give the same
    manifest digest. Needs root (mmdebstrap --mode=root)."""
    loaded = load_definition(definition)
    build = build_environment(
        loaded,
        output,
        cache=cache,
        update_lock=update_lock,
        step=lambda line: click.echo(f"aicert-build environment: {line}", err=True),
    )
    summary = build.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(
        f"built {output} in {summary['seconds']} s: manifest {summary['manifest_digest']}, "
        f"layer {int(summary['layer_bytes']) >> 20} MiB compressed, "  # type: ignore[call-overload]
        f"{int(summary['unpacked_bytes']) >> 20} MiB unpacked, "  # type: ignore[call-overload]
        f"{summary['packages']} packages"
    )
