"""One in-toto subject per weights file, with the file's plain SHA-256.

Generic supply-chain tools (slsa-verifier ``--artifact-path``, GUAC, ``sha256sum``)
match an artifact by the SHA-256 of its bytes, so the statement lists every file of
the certified tree under its plain SHA-256. The tree digest, which also binds names,
sizes, directories and the absence of any other file, stays in the predicate.

A manifest entry's digest already is the plain SHA-256 for files no larger than one
shard; a larger file is read once more, its plain SHA-256 and its shard digest computed
in the same pass (on two threads), and the shard digest must equal the manifest's, so
the plain digest provably belongs to the measured contents. Large files are read in
parallel with each other.

An output of many files would make the statement unwieldy: at most
:data:`MAX_FILE_SUBJECTS` files get a subject, the largest ones (ties by path), listed in
path order. See docs/certificate-format.md.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import InputError
from .filehash import MiB, StreamingHasher, is_sharded
from .treemanifest import FileEntry, TreeManifest

# 1000 subjects of ~125 bytes keep the statement near 125 KB, well under any input cap,
# while covering every file of ordinary model outputs (shards, configs, tokenizers).
MAX_FILE_SUBJECTS: Final = 1000

# Large enough that handing each chunk to the second hashing thread costs little.
CHUNK_SIZE: Final = 8 * MiB


@dataclass(frozen=True)
class FileSubject:
    """A file of a certified tree: ``<tree name>/<path>`` (or the tree name for a tree that
    is one file) and the plain SHA-256 of its contents."""

    name: str
    sha256: str


def subject_name(tree: str, path: str) -> str:
    return f"{tree}/{path}" if path else tree


def selected_files(manifest: TreeManifest) -> tuple[FileEntry, ...]:
    """The files that get a subject: all of them, or the largest MAX_FILE_SUBJECTS."""
    files = manifest.files
    if len(files) > MAX_FILE_SUBJECTS:
        largest = sorted(files, key=lambda f: (-f.size, f.path))[:MAX_FILE_SUBJECTS]
        files = tuple(sorted(largest, key=lambda f: f.path))
    return files


def file_subjects(
    tree: str, manifest: TreeManifest, sha256s: Mapping[str, str]
) -> tuple[FileSubject, ...]:
    """The subjects of ``tree`` from its manifest and the plain SHA-256 of its files."""
    return tuple(
        FileSubject(subject_name(tree, f.path), sha256s[f.path]) for f in selected_files(manifest)
    )


def plain_sha256s(
    root: Path, manifest: TreeManifest, *, workers: int | None = None
) -> dict[str, str]:
    """The plain SHA-256 of each selected file of the tree ``root`` that ``manifest`` measured.

    Raises InputError if a sharded file no longer has the digest the manifest records.
    """
    result: dict[str, str] = {}
    sharded: list[FileEntry] = []
    for entry in selected_files(manifest):
        if is_sharded(entry.size, manifest.shard_size):
            sharded.append(entry)
        else:
            result[entry.path] = entry.digest
    if sharded:
        count = max(1, min(workers or os.cpu_count() or 1, len(sharded)))
        with ThreadPoolExecutor(count, thread_name_prefix="sha256") as pool:
            for entry, sha256 in zip(
                sharded,
                pool.map(lambda e: _plain_sha256(root, e, manifest.shard_size), sharded),
                strict=True,
            ):
                result[entry.path] = sha256
    return result


def _plain_sha256(root: Path, entry: FileEntry, shard_size: int) -> str:
    path = root / entry.path if entry.path else root
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened: {exc.strerror}") from None
    shards = StreamingHasher(shard_size)
    plain = hashlib.sha256()
    # Both digests of each chunk at once, on two cores: hashlib releases the GIL.
    with os.fdopen(fd, "rb", buffering=0) as handle, ThreadPoolExecutor(1) as side:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: is not a regular file")
        while chunk := handle.read(CHUNK_SIZE):
            done = side.submit(plain.update, chunk)
            shards.update(chunk)
            done.result()
    digest = shards.result()
    if digest.size != entry.size or digest.digest != entry.digest:
        raise InputError(f"{path}: changed since its tree digest was computed")
    return plain.hexdigest()
