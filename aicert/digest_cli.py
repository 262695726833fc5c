"""``aicert-verify digest PATH``: print the tree digest of a file or directory."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from aicert.model_signing_interop import model_signing_digest
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, MAX_JSON_INT, MIN_SHARD_SIZE
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import InputError
from aicert.verifier.progress import format_bytes, progress_for


def shard_size_value(_ctx: click.Context, _param: click.Parameter, value: int) -> int:
    """Bytes per shard: 0 (no sharding) or MIN_SHARD_SIZE up to the JSON integer limit."""
    if value != 0 and not MIN_SHARD_SIZE <= value <= MAX_JSON_INT:
        raise click.BadParameter(f"{value} must be 0 or {MIN_SHARD_SIZE} to {MAX_JSON_INT}")
    return value


def _model_signing(manifest: TreeManifest) -> str | None:
    try:
        return model_signing_digest(manifest)
    except InputError:
        return None  # sharded files carry no plain SHA-256; the text output says so


def summary(manifest: TreeManifest, elapsed: float) -> dict[str, Any]:
    """The fields printed by ``digest --json`` besides the manifest."""
    return {
        "tree_digest": manifest.digest,
        "file_count": len(manifest.files),
        "directory_count": len(manifest.directories),
        "total_bytes": manifest.total_bytes,
        "shard_size": manifest.shard_size,
        "elapsed_seconds": round(elapsed, 3),
        "model_signing_sha256": _model_signing(manifest),
    }


@click.command("digest")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary and manifest as JSON.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Hashing threads (default: number of CPUs; never changes the digest).",
)
@click.option(
    "--shard-size",
    type=int,
    callback=shard_size_value,
    default=DEFAULT_SHARD_SIZE,
    show_default=True,
    help="Bytes per independently hashed shard of a large file (at least "
    f"{MIN_SHARD_SIZE}); 0 = plain SHA-256 per file.",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Hash what symlinks to regular files point to, instead of refusing them.",
)
def digest_command(
    path: Path, as_json: bool, workers: int | None, shard_size: int, follow_symlinks: bool
) -> None:
    """Print the tree digest of PATH, a file or a directory (see docs/tree-digest.md)."""
    started = time.perf_counter()
    manifest = hash_tree(
        path,
        shard_size=shard_size,
        workers=workers,
        follow_symlinks=follow_symlinks,
        progress=progress_for(sys.stderr),
    )
    elapsed = time.perf_counter() - started
    info = summary(manifest, elapsed)
    if as_json:
        click.echo(json.dumps({**info, "manifest": manifest.to_json()}, ensure_ascii=False))
        return
    rate = f" ({format_bytes(manifest.total_bytes / elapsed)}/s)" if elapsed > 0 else ""
    ms_digest = info["model_signing_sha256"]
    ms = (
        f"sha256:{ms_digest}"
        if ms_digest
        else "n/a (files larger than a shard; use --shard-size 0)"
    )
    click.echo(f"tree digest:     sha256:{info['tree_digest']}")
    click.echo(f"files:           {info['file_count']}")
    click.echo(f"directories:     {info['directory_count']}")
    click.echo(f"total bytes:     {manifest.total_bytes} ({format_bytes(manifest.total_bytes)})")
    click.echo(f"shard size:      {shard_size}")
    click.echo(f"elapsed:         {elapsed:.3f} s{rate}")
    click.echo(f"model_signing:   {ms}")
