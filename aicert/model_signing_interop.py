"""The digest sigstore ``model_signing`` computes for a tree, from an aicert tree manifest.

``aicert-verify digest`` prints it beside the tree digest, for interoperability; no check
of a certificate uses it. See ``docs/tree-digest.md`` ("Interoperability with sigstore
model_signing").
"""

from __future__ import annotations

import hashlib
from typing import Final

from aicert.verifier.digest.filehash import is_sharded
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.errors import InputError

# Top-level names model_signing leaves out of its manifest by default.
_MODEL_SIGNING_IGNORED: Final = frozenset({".git", ".gitattributes", ".github", ".gitignore"})


def model_signing_resources(
    manifest: TreeManifest, *, ignore_git_paths: bool = True
) -> list[tuple[str, str]]:
    """The ``(name, sha256 hex)`` resources sigstore ``model_signing`` lists, in its order.

    model_signing (file serialization, SHA-256) names files by their relative path ('.' for
    a root that is a file), leaves out ``.git``, ``.gitattributes``, ``.github`` and
    ``.gitignore`` at the top level by default, and sorts by path components.
    """
    if any(is_sharded(f.size, manifest.shard_size) for f in manifest.files):
        raise InputError(
            "the manifest holds shard digests, not plain SHA-256, for files larger than "
            f"{manifest.shard_size} bytes; hash with shard size 0 for model_signing digests"
        )
    kept = [
        f
        for f in manifest.files
        if not (ignore_git_paths and f.path.split("/")[0] in _MODEL_SIGNING_IGNORED)
    ]
    kept.sort(key=lambda f: f.path.split("/"))
    return [(f.path or ".", f.digest) for f in kept]


def model_signing_digest(manifest: TreeManifest, *, ignore_git_paths: bool = True) -> str:
    """The root digest model_signing puts in its statement's subject (SHA-256 hex).

    It is the SHA-256 of the concatenated raw file digests in model_signing's order; unlike
    the tree digest it binds neither names nor sizes, only the order of the contents.
    """
    outer = hashlib.sha256()
    for _, digest in model_signing_resources(manifest, ignore_git_paths=ignore_git_paths):
        outer.update(bytes.fromhex(digest))
    return outer.hexdigest()
