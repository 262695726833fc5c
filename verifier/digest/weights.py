"""Re-hashing files on the auditor's machine (weights, linked certificates) as the agent did."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..progress import progress_for
from .treehash import hash_tree
from .treemanifest import TreeManifest


def tree_manifest_of(path: Path) -> TreeManifest:
    """The tree manifest of the file or directory at ``path``."""
    if not path.exists():
        raise InputError(f"{path} does not exist")
    return hash_tree(path, progress=progress_for(label=f"hashing {path.name}"))


def tree_digest_of(path: Path) -> str:
    """The tree digest (hex) of the file or directory at ``path``."""
    return tree_manifest_of(path).digest
