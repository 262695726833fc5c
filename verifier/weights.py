"""Re-hashing weights on the auditor's machine, with the agent's own tree digest."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .progress import progress_for
from .treehash import hash_tree


def weights_tree_digest(path: Path) -> str:
    """The tree digest (hex) of the weights file or directory at ``path``."""
    if not path.exists():
        raise InputError(f"weights path {path} does not exist")
    return hash_tree(path, progress=progress_for(label="hashing weights")).digest
