"""``aicert-build publish``: sign recipe.json and platform profiles as a reference bundle.

The bundle (format in ``verifier/boot/reference_bundle.py``) is what an auditor passes to
``aicert-verify --reference BUNDLE --maintainer-key KEY``. Every file is parsed with
the verifier's own parsers before it is signed, so the maintainers never sign a bundle
the verifier would refuse; the signed bundle is verified once more before it is written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from aicert.verifier.boot.boot_reference import reference_from_recipe_bytes
from aicert.verifier.boot.platform_profile import parse_profile
from aicert.verifier.boot.reference_bundle import (
    MAX_VALIDITY,
    PREDICATE_TYPE,
    RECIPE_NAME,
    key_id,
    utc_text,
    verify_bundle,
)
from aicert.verifier.errors import InputError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from aicert.verifier.statement.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from aicert.verifier.statement.provenance import STATEMENT_TYPE
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A maintainer's private key: unencrypted PEM (PKCS#8 or SEC1), ECDSA P-256."""
    data = read_input_file(path, "maintainer signing key", MAX_PEM_BYTES)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InputError(
            f"maintainer signing key {path} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InputError(f"maintainer signing key {path} is not an ECDSA P-256 key")
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_bundle(
    recipe: bytes | None,
    profiles: Mapping[str, bytes],
    key: ec.EllipticCurvePrivateKey,
    issued_on: datetime,
    valid_for: timedelta,
) -> Envelope:
    """Sign ``recipe`` and ``profiles`` (name → file bytes) as a reference bundle."""
    if not timedelta(0) < valid_for <= MAX_VALIDITY:
        raise InputError(f"a bundle is valid for 1 to {MAX_VALIDITY.days} days")
    if recipe is None and not profiles:
        raise InputError("give a recipe, a platform profile, or both")
    if recipe is not None:
        reference_from_recipe_bytes(recipe, RECIPE_NAME)
    for name, data in profiles.items():
        profile = parse_profile(data, name)
        if profile.name != name:
            raise InputError(f"platform profile {name!r} calls itself {profile.name!r}")
    files = ({RECIPE_NAME: recipe} if recipe is not None else {}) | {
        f"platform-{name}.json": data for name, data in sorted(profiles.items())
    }
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
            for name, data in files.items()
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "issuedOn": utc_text(issued_on),
            "expiresOn": utc_text(issued_on + valid_for),
            "recipe": _b64(recipe) if recipe is not None else None,
            "platformProfiles": {name: _b64(data) for name, data in sorted(profiles.items())},
        },
    }
    payload = json.dumps(statement, indent=2).encode()
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, key, key_id(key.public_key()))
    verify_bundle(json.dumps(envelope.to_json()).encode(), "(new)", key.public_key(), issued_on)
    return envelope


def write_new_key(private_out: Path, public_out: Path) -> str:
    """A fresh maintainer key pair: the private key readable by its owner only."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public_out.write_bytes(public)
    except FileExistsError:
        raise InputError(f"{private_out} exists: a maintainer key is never overwritten") from None
    except OSError as exc:
        raise InputError(f"cannot write the key: {exc.strerror}") from None
    return key_id(key.public_key())
