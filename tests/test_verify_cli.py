"""``aicert-verify`` on a real swtpm certificate: report on stdout, one line on stderr."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aicert.verifier.cli import main as verify_main
from certgen import IssuedCertificate, issue_certificate
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.swtpm


@pytest.fixture
def issued(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    return issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def _aicert_keys(doc: Any, where: str = "") -> list[str]:
    """Every key of ``doc`` except inside the embedded in-toto statement."""
    if isinstance(doc, dict):
        keys = []
        for key, value in doc.items():
            keys.append(f"{where}.{key}")
            if key != "provenance":
                keys += _aicert_keys(value, f"{where}.{key}")
        return keys
    if isinstance(doc, list):
        return [k for item in doc for k in _aicert_keys(item, where)]
    return []


def test_a_failed_check_prints_the_report_and_one_stderr_line(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(issued.path), "--trust-root", str(provisioned_swtpm.ca.root_path), "--any-image"]
    code, out, err = _cli([*args, "--nonce", "00" * 16], capsys)
    assert code == 1
    assert "NOT VERIFIED: nonce:" in out
    (line,) = err.splitlines()
    assert line.startswith("aicert-verify: error: nonce: the statement's nonce ")

    code, out, err = _cli([*args, "--nonce", "00" * 16, "--json"], capsys)
    assert code == 1
    doc = json.loads(out)  # one document: the report, with no second error object
    assert doc["verified"] is False
    assert doc["error"]["check"] == "nonce"
    assert doc["error"]["type"] == "NonceError"
    assert doc["error"]["exit_code"] == 1
    assert len(err.splitlines()) == 1
    bad = [k for k in _aicert_keys(doc) if not re.fullmatch(r"[a-z0-9_]+", k.rsplit(".", 1)[1])]
    assert not bad, bad


def test_verbose_goes_before_or_after_the_certificate(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = str(provisioned_swtpm.ca.root_path)
    common = ["--trust-root", root, "--nonce", issued.nonce.upper(), "--any-image"]
    for args in (["-v", str(issued.path), *common], [str(issued.path), *common, "--verbose"]):
        code, out, err = _cli(args, capsys)
        assert code == 0, err
        assert "VERIFIED on a local test platform, no hardware root of trust: every check" in out


def test_a_truncated_quote_is_malformed_input(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    doc = json.loads(issued.path.read_text())
    attest = base64.b64decode(doc["tpm"]["quote"]["attest"])
    doc["tpm"]["quote"]["attest"] = base64.b64encode(attest[:40]).decode()
    cut = tmp_path / "truncated.aicert.json"
    cut.write_text(json.dumps(doc))
    root = str(provisioned_swtpm.ca.root_path)
    code, out, err = _cli([str(cut), "--trust-root", root, "--any-image", "--json"], capsys)
    assert code == 3
    report = json.loads(out)
    assert report["error"]["check"] == "quote-signature"
    assert report["error"]["type"] == "FormatError"
    assert report["error"]["exit_code"] == 3
    (line,) = err.splitlines()
    assert line.startswith("aicert-verify: error: quote-signature: TPMS_ATTEST")
