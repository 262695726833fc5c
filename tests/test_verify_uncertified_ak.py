"""A certificate whose AK nothing ties to a TPM (neither an AK certificate nor a Nitro
document): refused by default, reported as not established (never passed) when the
auditor accepts it. The certificate is a real one from a swtpm with its AK certificates removed."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from aicert.verifier.cli import main as verify_main
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.errors import AkChainError
from aicert.verifier.report import render_json, render_text
from aicert.verifier.statement.certificate import parse_certificate
from aicert.verifier.verify import UNCERTIFIED_AK, Policy, Status, verify_certificate
from certgen import IssuedCertificate, issue_certificate
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.swtpm


@pytest.fixture
def uncertified(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> tuple[IssuedCertificate, Path]:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)
    doc = copy.deepcopy(issued.certificate.to_json())
    doc["tpm"]["akCertificates"] = []
    path = tmp_path / "uncertified.json"
    path.write_text(json.dumps(doc))
    return issued, path


def _policy(issued: IssuedCertificate, **changes: object) -> Policy:
    policy = Policy(
        trust_roots=(),
        expected_nonce=issued.nonce,
        accept_any_image=True,
        weights_path=issued.weights,
        tree_digest=tree_digest_of,
    )
    return dataclasses.replace(policy, **changes)  # type: ignore[arg-type]


def test_without_the_flag_a_certificate_without_an_ak_certificate_fails(
    uncertified: tuple[IssuedCertificate, Path],
) -> None:
    issued, path = uncertified
    report = verify_certificate(parse_certificate(path.read_bytes()), _policy(issued))
    assert isinstance(report.error, AkChainError)
    assert "--accept-uncertified-ak" in report.error.message
    assert report.results[0].status is Status.PASSED  # statement
    assert report.results[1].check == "ak-chain"
    assert report.results[1].status is Status.FAILED


def test_accepted_it_is_not_established_never_passed_and_the_verdict_says_so(
    uncertified: tuple[IssuedCertificate, Path],
) -> None:
    issued, path = uncertified
    policy = _policy(issued, accept_uncertified_ak=True)
    report = verify_certificate(parse_certificate(path.read_bytes()), policy)
    assert report.ok, report.error
    statuses = {r.check: r.status for r in report.results}
    assert statuses["ak-chain"] is Status.NOT_ESTABLISHED
    assert statuses["quote-signature"] is Status.PASSED
    assert statuses["weights"] is Status.PASSED
    assert report.root_of_trust == UNCERTIFIED_AK
    assert not report.root_of_trust.hardware
    text = render_text(report, path, color=False)
    verdict = text.splitlines()[-1]
    assert verdict.startswith("NO ROOT OF TRUST: ak-chain not established")
    assert "VERIFIED" not in verdict
    assert "  NONE  ak-chain" in text
    doc = render_json(report, path)
    assert {"check": "ak-chain", "status": "not established"}.items() <= doc["checks"][1].items()
    assert doc["root_of_trust"]["hardware"] is False
    assert doc["root_of_trust"]["description"].startswith("NOT ESTABLISHED")


def test_the_flag_does_not_weaken_a_certificate_that_has_an_ak_chain(
    provisioned_swtpm: ProvisionedSwtpm, uncertified: tuple[IssuedCertificate, Path]
) -> None:
    issued, _path = uncertified
    report = verify_certificate(issued.certificate, _policy(issued, accept_uncertified_ak=True))
    assert isinstance(report.error, AkChainError)  # the local CA is not a trust root here
    ok = verify_certificate(
        issued.certificate,
        _policy(
            issued, accept_uncertified_ak=True, trust_roots=(provisioned_swtpm.ca.root_certificate,)
        ),
    )
    assert {r.check: r.status for r in ok.results}["ak-chain"] is Status.PASSED


def test_the_command_line(
    uncertified: tuple[IssuedCertificate, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    issued, path = uncertified
    args = [str(path), "--nonce", issued.nonce, "--any-image"]
    with pytest.raises(SystemExit) as exited:
        verify_main(args)
    out, err = capsys.readouterr()
    assert exited.value.code == 1
    assert err.count("\n") == 1
    assert "ak-chain" in err
    with pytest.raises(SystemExit) as exited:
        verify_main([*args, "--accept-uncertified-ak"])
    out, _ = capsys.readouterr()
    assert exited.value.code in (0, None)
    assert out.strip().splitlines()[-1].startswith("NO ROOT OF TRUST")
