"""aicert-verify --ear: an IETF RATS EAR, checked with an independent JWT library (PyJWT)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aicert.verifier.cli import main as verify_main
from aicert.verifier.verify import CheckResult, Report, RootOfTrust, Status
from certgen import IssuedCertificate, issue_certificate, recipe_outputs
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from aicert.ear import EAR_PROFILE, ear_claims, encode_jwt

EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _decode(token: str, key: Any, alg: str) -> dict[str, Any]:
    return jwt.decode(token, key, algorithms=[alg], options={"require": ["iat"]})


def _report(**statuses: Status) -> Report:
    results = tuple(CheckResult(name.replace("_", "-"), s, "") for name, s in statuses.items())
    root = RootOfTrust(True, "CN=Azure Virtual TPM Root Certificate Authority 2023", "hardware")
    return Report(results, None, root_of_trust=root)


def test_claims_follow_the_checks_and_pyjwt_verifies_both_algorithms() -> None:
    passed = dict.fromkeys(
        ("statement", "ak_chain", "quote_signature", "binding", "envelope_signature",
         "nonce", "pcr_digest", "firmware_log", "cel_log", "boot_pcrs", "platform_profile",
         "weights", "files"),
        Status.PASSED,
    )  # fmt: skip
    report = _report(**passed, evaluations=Status.SKIPPED)
    claims = ear_claims(report, datetime(2026, 12, 3, tzinfo=UTC), "aicert-verify 0")
    for key, alg in ((EC_KEY, "ES256"), (ED_KEY, "EdDSA")):
        token = encode_jwt(claims, key)
        assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT"}
        decoded = _decode(token, key.public_key(), alg)
        assert decoded == claims
    assert claims["eat_profile"] == EAR_PROFILE
    submods = claims["submods"]
    assert isinstance(submods, dict)
    assert submods["platform"]["ear_trustworthiness_vector"] == {
        "instance-identity": 2, "hardware": 2, "configuration": 2,
    }  # fmt: skip
    assert submods["boot"]["ear_status"] == "affirming"
    # No evaluation ran: no claim about it, not an affirmation.
    assert submods["evaluation"] == {
        "ear_status": "none",
        "ear_trustworthiness_vector": {"executables": 0, "sourced-data": 0},
    }
    assert claims["ear_status"] == "affirming"


def test_a_wrong_key_or_a_changed_claim_fails_in_pyjwt() -> None:
    claims = ear_claims(_report(statement=Status.PASSED), datetime.now(UTC), "b")
    token = encode_jwt(claims, EC_KEY)
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(token, ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256")
    header, _payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps({**claims, "ear_status": "affirming"}).encode()
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(f"{header}.{forged}.{signature}", EC_KEY.public_key(), "ES256")
    # The algorithm is bound: a relying party that expects EdDSA refuses this ES256 token.
    with pytest.raises(jwt.InvalidAlgorithmError):
        _decode(token, EC_KEY.public_key(), "EdDSA")


# --------------------------------------------------------------------------- command line


@pytest.fixture
def issued(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    return issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path, evaluate=True)


def _verify(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.swtpm
def test_verify_writes_an_ear_for_a_pass_and_for_a_failure(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(provisioned_swtpm.ca.root_certificate.public_bytes(serialization.Encoding.PEM))
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
    key = _pem(EC_KEY, tmp_path / "verifier.pem")
    ear = tmp_path / "result.ear.jwt"
    base = [str(issued.path), "--trust-root", str(root), "--recipe", str(recipe)]
    code, _, err = _verify(
        [*base, "--nonce", issued.nonce, "--ear", str(ear), "--ear-key", str(key)], capsys
    )
    assert code == 0, err
    claims = _decode(ear.read_text().strip(), EC_KEY.public_key(), "ES256")
    submods = claims["submods"]
    assert set(submods) == {"boot", "platform", "training", "evaluation"}
    assert submods["boot"]["ear_trustworthiness_vector"]["executables"] == 2
    # The local CA is no hardware root of trust: a warning, never affirming hardware.
    assert submods["platform"]["ear_trustworthiness_vector"]["hardware"] == 32
    assert submods["platform"]["ear_status"] == "warning"
    assert submods["training"]["ear_trustworthiness_vector"]["executables"] == 2
    assert submods["evaluation"]["ear_trustworthiness_vector"]["executables"] == 2
    assert claims["ear_status"] == "warning"
    assert claims["ear_verifier_id"]["build"].startswith("aicert-verify ")

    code, _, err = _verify(
        [*base, "--nonce", "ab" * 16, "--ear", str(ear), "--ear-key", str(key)], capsys
    )
    assert code == 1
    assert err.count("\n") == 1
    claims = _decode(ear.read_text().strip(), EC_KEY.public_key(), "ES256")
    assert claims["submods"]["training"]["ear_trustworthiness_vector"]["sourced-data"] == 96
    assert claims["submods"]["training"]["ear_status"] == "contraindicated"
    assert claims["ear_status"] == "contraindicated"

    code, _, err = _verify([*base, "--ear", str(ear)], capsys)
    assert code == 2
    assert "no unsigned EAR" in err
    code, _, err = _verify([*base, "--ear", str(ear), "--ear-key", str(root)], capsys)
    assert code == 3
