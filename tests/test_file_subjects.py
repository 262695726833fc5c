"""Per-file subjects: the plain SHA-256 of each file of a measured tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aicert.verifier.digest.file_subjects import (
    MAX_FILE_SUBJECTS,
    FileSubject,
    file_subjects,
    plain_sha256s,
    selected_files,
)
from aicert.verifier.digest.filehash import MIN_SHARD_SIZE
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.treemanifest import FileEntry, TreeManifest
from aicert.verifier.errors import InputError
from hypothesis import given, settings
from hypothesis import strategies as st


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"layers": 2}',
        "shards/model-00001.bin": hashlib.shake_256(b"1").digest(3 * MIN_SHARD_SIZE + 17),
        "shards/model-00002.bin": hashlib.shake_256(b"2").digest(2 * MIN_SHARD_SIZE),
        "empty": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_every_file_gets_its_plain_sha256_sharded_or_not(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    manifest = hash_tree(tmp_path, shard_size=MIN_SHARD_SIZE)
    sharded = [f for f in manifest.files if f.size > MIN_SHARD_SIZE]
    assert len(sharded) == 2
    assert all(f.digest != hashlib.sha256(files[f.path]).hexdigest() for f in sharded)
    sha256s = plain_sha256s(tmp_path, manifest, workers=2)
    assert sha256s == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert file_subjects("model", manifest, sha256s) == tuple(
        FileSubject(f"model/{name}", hashlib.sha256(files[name]).hexdigest())
        for name in sorted(files)
    )


def test_a_single_file_tree_is_named_by_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"x" * (MIN_SHARD_SIZE + 1))
    manifest = hash_tree(path, shard_size=MIN_SHARD_SIZE)
    sha256s = plain_sha256s(path, manifest)
    assert file_subjects("model.gguf", manifest, sha256s) == (
        FileSubject("model.gguf", hashlib.sha256(path.read_bytes()).hexdigest()),
    )


def test_a_file_changed_after_measuring_is_refused(tmp_path: Path) -> None:
    _tree(tmp_path)
    manifest = hash_tree(tmp_path, shard_size=MIN_SHARD_SIZE)
    big = tmp_path / "shards" / "model-00001.bin"
    data = bytearray(big.read_bytes())
    data[5] ^= 1
    big.write_bytes(bytes(data))
    with pytest.raises(InputError, match="changed since its tree digest was computed"):
        plain_sha256s(tmp_path, manifest)
    big.unlink()
    with pytest.raises(InputError, match="cannot be opened"):
        plain_sha256s(tmp_path, manifest)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=1200))
def test_the_selection_is_the_largest_files_in_path_order(sizes: list[int]) -> None:
    files = tuple(FileEntry(f"f{i:05d}", size, "ab" * 32) for i, size in enumerate(sizes))
    chosen = selected_files(TreeManifest(0, files, ()))
    assert len(chosen) == min(len(files), MAX_FILE_SUBJECTS)
    assert list(chosen) == sorted(chosen, key=lambda f: f.path)
    if chosen:
        rest = set(files) - set(chosen)
        assert all(f.size <= min(c.size for c in chosen) for f in rest)
