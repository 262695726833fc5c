"""Signed reference bundles: recipe.json and platform profiles, from the maintainers, current.

A bundle is a DSSE envelope (``verifier/statement/dsse.py``) around an in-toto Statement v1
whose subjects are the published files and whose predicate carries their bytes
and a validity window::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "recipe.json", "digest": {"sha256": …}},
                 {"name": "platform-azure.json", "digest": {"sha256": …}}],
     "predicateType": "urn:aicert:predicate:reference-values:v1",
     "predicate": {"issuedOn": RFC 3339, "expiresOn": RFC 3339,
                   "recipe": BASE64 | null,
                   "platformProfiles": {"azure": BASE64, …}}}

It is signed with the maintainer's ECDSA P-256 key (the same signature scheme as
the agent's statement; the keyid is the hex SHA-256 of the public key's DER).
:func:`verify_bundle` checks, in this order and before any value is read: the
envelope's one signature under the maintainer key given, the statement's shape,
that ``issuedOn <= now < expiresOn``, and that every subject digest is the
SHA-256 of the bytes carried. Only then are the recipe and profiles parsed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import EnvelopeSignatureError, FormatError, InputError, ReferenceBundleError
from ..input_file import MAX_PEM_BYTES, MAX_REFERENCE_BYTES, read_input_file
from ..json_fields import b64decode, exact_members
from ..statement.canonical_json import parse_json
from ..statement.dsse import IN_TOTO_PAYLOAD_TYPE, parse_envelope, verify_envelope
from ..statement.provenance import STATEMENT_TYPE
from .boot_reference import BootReference, reference_from_recipe_bytes
from .platform_profile import PlatformProfile, parse_profile

PREDICATE_TYPE = "urn:aicert:predicate:reference-values:v1"
MAX_VALIDITY = timedelta(days=400)
"""The longest a bundle may be valid: a maintainer must re-sign at least yearly."""
RECIPE_NAME = "recipe.json"


@dataclass(frozen=True)
class ReferenceBundle:
    """What a verified bundle vouches for, and who signed it until when."""

    source: str
    signer: str
    """Who signed it: the maintainer key's id, or the sigstore identity and issuer."""
    issued_on: datetime
    expires_on: datetime
    recipe: BootReference | None
    profiles: Mapping[str, PlatformProfile]

    def describe(self) -> str:
        return (
            f"reference bundle {self.source} (signed by {self.signer}, "
            f"expires {self.expires_on.strftime('%Y-%m-%dT%H:%M:%SZ')})"
        )

    def profile(self, name: str) -> PlatformProfile:
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise InputError(
                f"{self.describe()} has no platform profile {name!r} (it has: {known})"
            )
        return self.profiles[name]


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_maintainer_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A maintainer's public key: PEM SubjectPublicKeyInfo, ECDSA P-256."""
    data = read_input_file(path, "maintainer key", MAX_PEM_BYTES)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"maintainer key {path} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InputError(f"maintainer key {path} is not an ECDSA P-256 public key")
    return key


def load_bundle(path: Path, maintainer_key: Path, now: datetime | None = None) -> ReferenceBundle:
    """Read and verify the bundle at ``path`` under the maintainer key file given."""
    key = load_maintainer_key(maintainer_key)
    data = read_input_file(path, "reference bundle", MAX_REFERENCE_BYTES)
    return verify_bundle(data, str(path), key, now or datetime.now(UTC))


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise FormatError(f"{where} must be an RFC 3339 UTC time ending in Z")
    try:
        return datetime.fromisoformat(value.removesuffix("Z") + "+00:00")
    except ValueError:
        raise FormatError(f"{where} {value!r} is not an RFC 3339 time") from None


def utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_bundle(
    data: bytes, source: str, maintainer_key: ec.EllipticCurvePublicKey, now: datetime
) -> ReferenceBundle:
    """The bundle's values, once its signature, validity window and digests are proven."""
    where = f"reference bundle {source}"
    envelope = parse_envelope(parse_json(data, where))
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"{where}: payloadType is not {IN_TOTO_PAYLOAD_TYPE}")
    keyid = key_id(maintainer_key)
    try:
        verify_envelope(envelope, maintainer_key, keyid, signer="the maintainer key")
    except EnvelopeSignatureError as exc:
        raise ReferenceBundleError(f"{where} is refused: {exc.message}") from None
    return verify_statement(envelope.payload, source, f"maintainer key {keyid[:16]}…", now)


def verify_statement(payload: bytes, source: str, signer: str, now: datetime) -> ReferenceBundle:
    """The values of a reference statement whose signature by ``signer`` was verified."""
    where = f"reference bundle {source}"
    statement = parse_json(payload, f"{where}: statement")
    if not isinstance(statement, Mapping):
        raise FormatError(f"{where}: the statement must be a JSON object")
    exact_members(statement, ("_type", "subject", "predicateType", "predicate"), where)
    if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
        raise FormatError(f"{where} is not an in-toto statement of {PREDICATE_TYPE}")
    predicate = statement["predicate"]
    if not isinstance(predicate, Mapping):
        raise FormatError(f"{where}: predicate must be an object")
    exact_members(
        predicate, ("issuedOn", "expiresOn", "recipe", "platformProfiles"), f"{where}: predicate"
    )
    issued, expires = (
        _time(predicate["issuedOn"], f"{where}: issuedOn"),
        _time(predicate["expiresOn"], f"{where}: expiresOn"),
    )
    if not issued < expires <= issued + MAX_VALIDITY:
        raise FormatError(
            f"{where}: expiresOn must be after issuedOn and within {MAX_VALIDITY.days} days of it"
        )
    if now < issued:
        raise ReferenceBundleError(
            f"{where} is refused: issued {utc_text(issued)}, after the time now "
            f"({utc_text(now)}); check the clock"
        )
    if now >= expires:
        raise ReferenceBundleError(
            f"{where} is refused: it expired {utc_text(expires)}; get the maintainers' current one"
        )
    files = _carried_files(predicate, where)
    _check_subjects(statement["subject"], files, where)
    recipe = files.get(RECIPE_NAME)
    profiles = {
        name: parse_profile(files[f"platform-{name}.json"], f"{name} of {where}")
        for name in _profile_names(predicate)
    }
    for name, profile in profiles.items():
        if profile.name != name:
            raise FormatError(f"{where}: profile {name!r} calls itself {profile.name!r}")
    return ReferenceBundle(
        source=source,
        signer=signer,
        issued_on=issued,
        expires_on=expires,
        recipe=reference_from_recipe_bytes(recipe, f"{RECIPE_NAME} of {where}")
        if recipe is not None
        else None,
        profiles=profiles,
    )


def _profile_names(predicate: Mapping[str, object]) -> list[str]:
    raw = predicate["platformProfiles"]
    assert isinstance(raw, Mapping)  # noqa: S101 - checked by _carried_files
    return sorted(raw)


def _carried_files(predicate: Mapping[str, object], where: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if predicate["recipe"] is not None:
        files[RECIPE_NAME] = b64decode(predicate["recipe"], f"{where}: recipe")
    profiles = predicate["platformProfiles"]
    if not isinstance(profiles, Mapping):
        raise FormatError(f"{where}: platformProfiles must be an object")
    for name, content in profiles.items():
        if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
            raise FormatError(f"{where}: platform profile name {name!r} is not a plain name")
        files[f"platform-{name}.json"] = b64decode(content, f"{where}: profile {name}")
    if not files:
        raise FormatError(f"{where} carries neither a recipe nor a platform profile")
    return files


def _check_subjects(raw: object, files: Mapping[str, bytes], where: str) -> None:
    if not isinstance(raw, list):
        raise FormatError(f"{where}: subject must be a list")
    digests: dict[str, str] = {}
    for n, subject in enumerate(raw):
        if not isinstance(subject, Mapping):
            raise FormatError(f"{where}: subject {n} must be an object")
        exact_members(subject, ("name", "digest"), f"{where}: subject {n}")
        name, digest = subject["name"], subject["digest"]
        if not isinstance(name, str) or not isinstance(digest, Mapping) or name in digests:
            raise FormatError(f"{where}: subject {n} must have a unique name and a digest")
        exact_members(digest, ("sha256",), f"{where}: subject {name} digest")
        if not isinstance(digest["sha256"], str):
            raise FormatError(f"{where}: subject {name} sha256 must be a string")
        digests[name] = digest["sha256"]
    if set(digests) != set(files):
        raise FormatError(f"{where}: the subjects are not exactly the files it carries")
    for name, content in files.items():
        if hashlib.sha256(content).hexdigest() != digests[name]:
            raise ReferenceBundleError(
                f"{where} is refused: {name} does not have the digest its subject names"
            )
