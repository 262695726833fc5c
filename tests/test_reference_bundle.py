"""Signed reference bundles: published by aicert-build, checked before use by aicert-verify."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.profile_capture import capture_profile, write_profile
from aicert.builder.publish import build_bundle
from aicert.verifier.boot.reference_bundle import key_id, verify_bundle
from aicert.verifier.boot.sigstore_bundle import SigstoreSigner, load_sigstore_bundle
from aicert.verifier.cli import main as verify_main
from aicert.verifier.errors import FormatError, InputError, ReferenceBundleError
from aicert.verifier.statement.dsse import sign_envelope
from certgen import IssuedCertificate, issue_certificate, recipe_outputs
from click.testing import CliRunner
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
PROFILE = json.dumps(
    {
        "format": "aicert-platform-profile/2",
        "name": "lab",
        "description": "d",
        "firmwareLog": True,
        "pcrs": {
            "0": {
                "variants": [
                    {
                        "value": "11" * 32,
                        "captured": "2026-11-01T00:00:00Z",
                        "source": "s",
                        "vmSize": None,
                        "region": None,
                        "hostVersion": None,
                    }
                ]
            }
        },
    }
).encode()
RECIPE = json.dumps(
    {
        "format": 1,
        "inputs": {"profile": "qemu"},
        "outputs": {"roothash": "5a" * 32, "uki": {"authenticode_sha256": "00" * 32}},
        "expected_pcrs": {"pcrs": {str(p): "22" * 32 for p in (4, 9, 11, 12, 13)}},
    }
).encode()


def _bundle(key: ec.EllipticCurvePrivateKey = KEY, days: int = 30) -> bytes:
    envelope = build_bundle(RECIPE, {"lab": PROFILE}, key, NOW, timedelta(days=days))
    return json.dumps(envelope.to_json()).encode()


def test_a_published_bundle_verifies_and_carries_its_values() -> None:
    bundle = verify_bundle(_bundle(), "b.json", KEY.public_key(), NOW + timedelta(days=1))
    assert bundle.signer == f"maintainer key {key_id(KEY.public_key())[:16]}…"
    assert bundle.expires_on == NOW + timedelta(days=30)
    assert bundle.profile("lab").pcrs[0].variants[0].value == b"\x11" * 32
    assert bundle.recipe is not None
    assert bundle.recipe.pcrs[4] == b"\x22" * 32
    with pytest.raises(InputError, match=r"no platform profile 'azure' \(it has: lab\)"):
        bundle.profile("azure")


def test_expired_not_yet_valid_and_wrongly_signed_bundles_are_refused() -> None:
    data = _bundle()
    with pytest.raises(ReferenceBundleError, match="expired 2027-01-02T09:00:00Z"):
        verify_bundle(data, "b", KEY.public_key(), NOW + timedelta(days=30))
    with pytest.raises(ReferenceBundleError, match="check the clock"):
        verify_bundle(data, "b", KEY.public_key(), NOW - timedelta(seconds=1))
    with pytest.raises(ReferenceBundleError, match="not by the maintainer key"):
        verify_bundle(data, "b", OTHER_KEY.public_key(), NOW)


def _resigned(edit: dict[str, object], key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    """The bundle's statement edited and signed again by ``key``."""
    env = json.loads(_bundle())
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"] |= edit
    payload = json.dumps(statement).encode()
    new = sign_envelope(env["payloadType"], payload, key, key_id(key.public_key()))
    return json.dumps(new.to_json()).encode()


def test_a_signed_bundle_whose_files_do_not_match_their_subjects_is_refused() -> None:
    other = base64.b64encode(PROFILE.replace(b"11", b"33")).decode()
    with pytest.raises(ReferenceBundleError, match=r"platform-lab\.json does not have the digest"):
        verify_bundle(_resigned({"platformProfiles": {"lab": other}}), "b", KEY.public_key(), NOW)


def test_a_changed_payload_breaks_the_signature() -> None:
    env = json.loads(_bundle())
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["expiresOn"] = "2099-01-01T00:00:00Z"
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(ReferenceBundleError, match="does not verify"):
        verify_bundle(json.dumps(env).encode(), "b", KEY.public_key(), NOW)


@pytest.mark.parametrize(
    "edit",
    [
        {"expiresOn": "2030-01-01T00:00:00Z"},  # longer than 400 days
        {"expiresOn": "2026-12-03T09:00:00+00:00"},
        {"issuedOn": "yesterday"},
        {"recipe": None, "platformProfiles": {}},
        {"platformProfiles": {"../lab": base64.b64encode(PROFILE).decode()}},
        {"platformProfiles": []},
        {"extra": 1},
    ],
)
def test_malformed_bundles_are_format_errors(edit: dict[str, object]) -> None:
    with pytest.raises(FormatError):
        verify_bundle(_resigned(edit), "b", KEY.public_key(), NOW)


def test_publishing_refuses_what_the_verifier_would_refuse() -> None:
    with pytest.raises(FormatError):
        build_bundle(b"{}", {}, KEY, NOW, timedelta(days=1))
    with pytest.raises(InputError, match="calls itself 'lab'"):
        build_bundle(None, {"azure": PROFILE}, KEY, NOW, timedelta(days=1))
    with pytest.raises(InputError, match="1 to 400 days"):
        build_bundle(RECIPE, {}, KEY, NOW, timedelta(days=401))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_with_a_project_error(data: bytes) -> None:
    with pytest.raises((FormatError, ReferenceBundleError)):
        verify_bundle(data, "fuzz", KEY.public_key(), NOW)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 255))
def test_a_flipped_byte_is_refused(at: int, value: int) -> None:
    original = _bundle()
    data = bytearray(original)
    at %= len(data)
    if data[at] == value:
        return
    data[at] = value
    with contextlib.suppress(ValueError):
        if json.loads(bytes(data)) == json.loads(original):
            return  # only the JSON whitespace changed: the same bundle
    with pytest.raises((FormatError, ReferenceBundleError)):
        verify_bundle(bytes(data), "fuzz", KEY.public_key(), NOW)


# --------------------------------------------------------------------------- command lines


@pytest.fixture
def issued(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    return issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)


def _verify(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.swtpm
def test_publish_then_verify_with_the_bundle(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    root = tmp_path / "root.pem"
    root.write_bytes(roots[0].public_bytes(serialization.Encoding.PEM))
    profile = tmp_path / "platform-lab.json"
    write_profile(capture_profile(issued.certificate, "c", "lab", roots), profile)
    quoted = issued.certificate.tpm.pcrs
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "format": 1,
                "inputs": {"profile": "qemu"},
                "outputs": recipe_outputs(),
                "expected_pcrs": {"pcrs": {str(p): quoted[p].hex() for p in (4, 9, 11, 12, 13)}},
            }
        )
    )
    runner = CliRunner()
    key = tmp_path / "maintainer.pem"
    result = runner.invoke(build_main, ["maintainer-key", str(key)])
    assert result.exit_code == 0, result.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert runner.invoke(build_main, ["maintainer-key", str(key)]).exit_code == 3
    bundle = tmp_path / "reference.dsse.json"
    args = ["publish", "--recipe", str(recipe), "--profile", str(profile), "--key", str(key)]
    result = runner.invoke(build_main, [*args, "-o", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "expires" in result.output

    pub = tmp_path / "maintainer.pem.pub"
    cert = str(issued.path)
    base = [cert, "--trust-root", str(root), "--reference", str(bundle), "--maintainer-key"]
    code, out, err = _verify([*base, str(pub), "--platform-profile", "lab", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    boot = next(c for c in report["checks"] if c["check"] == "boot-pcrs")
    assert boot["status"] == "passed"
    assert "recipe.json of reference bundle" in boot["detail"]
    assert report["platform_profile"][0]["variant"] == 1

    other = tmp_path / "other.pem"
    assert runner.invoke(build_main, ["maintainer-key", str(other)]).exit_code == 0
    code, out, err = _verify([*base, f"{other}.pub"], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "reference-bundle: reference bundle" in err
    assert "not by the maintainer key" in err
    assert out == ""
    code, _, err = _verify([cert, "--reference", str(bundle)], capsys)
    assert code == 2
    assert "exactly one of --maintainer-key" in err


# --------------------------------------------------------------------------- sigstore


SIGSTORE = Path(__file__).parent / "data" / "sigstore"
SIGSTORE_BUNDLE = SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json"
SIGNER = SigstoreSigner(
    SIGSTORE / "staging-trusted_root.json",
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
    "https://token.actions.githubusercontent.com",
)


def test_a_real_sigstore_bundle_verifies_offline_then_its_statement_is_judged() -> None:
    # The signature, certificate chain, timestamp and inclusion proof pass; what it
    # signed is SLSA provenance, not reference values, and is refused as such.
    with pytest.raises(FormatError, match="not an in-toto statement of urn:aicert"):
        load_sigstore_bundle(SIGSTORE_BUNDLE, SIGNER)


def test_a_sigstore_bundle_of_another_identity_or_issuer_is_refused() -> None:
    other = dataclasses.replace(SIGNER, identity="https://github.com/someone/else")
    with pytest.raises(ReferenceBundleError, match=r"is refused: .*SAN"):
        load_sigstore_bundle(SIGSTORE_BUNDLE, other)
    other = dataclasses.replace(SIGNER, issuer="https://accounts.google.com")
    with pytest.raises(ReferenceBundleError, match="OIDCIssuer does not match"):
        load_sigstore_bundle(SIGSTORE_BUNDLE, other)


def test_a_changed_sigstore_payload_is_refused(tmp_path: Path) -> None:
    doc = json.loads(SIGSTORE_BUNDLE.read_bytes())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["name"] = "b.txt"
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    changed = tmp_path / "changed.sigstore.json"
    changed.write_text(json.dumps(doc))
    with pytest.raises(ReferenceBundleError, match="is refused"):
        load_sigstore_bundle(changed, SIGNER)


def test_malformed_sigstore_input_is_one_line_of_bad_input(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(FormatError, match="not a sigstore bundle") as bundle_error:
        load_sigstore_bundle(garbage, SIGNER)
    with pytest.raises(FormatError, match=r"trust root .* is malformed") as root_error:
        load_sigstore_bundle(SIGSTORE_BUNDLE, dataclasses.replace(SIGNER, trust_root=garbage))
    for error in (bundle_error.value, root_error.value):
        assert "\n" not in error.message


def test_sigstore_options_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = tmp_path / "c.json"
    cert.write_text("{}")
    base = [str(cert), "--reference", str(SIGSTORE_BUNDLE)]
    root = ["--sigstore-trust-root", str(SIGNER.trust_root)]
    code, _, err = _verify([*base, *root], capsys)
    assert code == 2
    assert "go together" in err
    who = ["--sigstore-identity", SIGNER.identity, "--sigstore-issuer", SIGNER.issuer]
    code, _, err = _verify([*base, *root, *who, "--maintainer-key", str(cert)], capsys)
    assert code == 2
    assert "exactly one of" in err
    code, _, err = _verify([*base, *root, *who], capsys)
    assert code == 3
    assert err.count("\n") == 1
    assert "not an in-toto statement of urn:aicert" in err
