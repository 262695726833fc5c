"""Our manifest yields exactly what sigstore model_signing computes for the same tree."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from aicert.verifier.digest.treehash import hash_tree
from google.protobuf import json_format
from model_signing import hashing as ms_hashing
from model_signing._signing.signing import Payload

from aicert.model_signing_interop import model_signing_digest, model_signing_resources


def model_signing_statement(path: Path, *, ignore_git_paths: bool = True) -> dict[str, Any]:
    """The in-toto statement model_signing signs for ``path`` (file serialization, SHA-256)."""
    config = ms_hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=ignore_git_paths)
    statement = Payload(config.hash(path)).statement.pb
    return json_format.MessageToDict(statement)


def their_resources(statement: dict[str, Any]) -> list[tuple[str, str]]:
    resources = statement["predicate"]["resources"]
    assert {r["algorithm"] for r in resources} <= {"sha256"}
    return [(r["name"], r["digest"]) for r in resources]


def their_root(statement: dict[str, Any]) -> str:
    (subject,) = statement["subject"]
    return str(subject["digest"]["sha256"])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    files = {
        "config.json": b'{"hidden_size": 64}',
        "model-00001-of-00002.safetensors": hashlib.shake_256(b"1").digest(300_000),
        "model-00002-of-00002.safetensors": hashlib.shake_256(b"2").digest(123_457),
        # "a-b" sorts before "a/b" as a string but after it component by component.
        "a-b": b"dash",
        "a/b": b"slash",
        "a/c/deep.bin": b"deep",
        "empty.bin": b"",
        unicodedata.normalize("NFC", "tokenizer-é😀.json"): b"{}",
        "Z-upper": b"upper",
        ".hidden": b"dotfile",
        # model_signing leaves these out by default.
        ".gitignore": b"*.tmp\n",
        ".git/HEAD": b"ref: refs/heads/main\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()
    return root


@pytest.mark.parametrize("ignore_git_paths", [True, False])
def test_directory_matches_model_signing(model_dir: Path, ignore_git_paths: bool) -> None:
    statement = model_signing_statement(model_dir, ignore_git_paths=ignore_git_paths)
    manifest = hash_tree(model_dir, shard_size=0, workers=2)
    ours = model_signing_resources(manifest, ignore_git_paths=ignore_git_paths)
    assert ours == their_resources(statement)
    assert model_signing_digest(manifest, ignore_git_paths=ignore_git_paths) == their_root(
        statement
    )
    names = [name for name, _ in ours]
    assert names.index("a/b") < names.index("a-b")
    assert (".gitignore" in names) is not ignore_git_paths


def test_default_shard_size_matches_when_files_fit_one_shard(model_dir: Path) -> None:
    # Files no larger than the shard size carry their plain SHA-256 in every manifest.
    manifest = hash_tree(model_dir)
    assert model_signing_digest(manifest) == their_root(model_signing_statement(model_dir))


def test_single_file_matches_model_signing(model_dir: Path) -> None:
    path = model_dir / "model-00001-of-00002.safetensors"
    statement = model_signing_statement(path)
    manifest = hash_tree(path, shard_size=0)
    assert model_signing_resources(manifest) == their_resources(statement)
    assert model_signing_digest(manifest) == their_root(statement)


def test_tree_digest_binds_names_where_model_signing_does_not(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root, name in ((one, "weights.bin"), (two, "renamed.bin")):
        root.mkdir()
        (root / name).write_bytes(b"same contents")
    first, second = hash_tree(one, shard_size=0), hash_tree(two, shard_size=0)
    assert their_root(model_signing_statement(one)) == their_root(model_signing_statement(two))
    assert model_signing_digest(first) == model_signing_digest(second)
    assert first.digest != second.digest
