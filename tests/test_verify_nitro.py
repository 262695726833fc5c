"""ak-chain through a NitroTPM attestation document: a real certificate from a swtpm
whose AK certificates are replaced by a document from a test Nitro PKI, as the agent
on a NitroTPM writes it (user_data = the AK's name, nonce = SHA-256 of the agent key,
the TPM's SHA-384 PCRs)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from aicert.agent.tpm import AgentTpm
from aicert.builder.profile_capture import capture_profile
from aicert.verifier.boot.boot_reference import BankPrediction, BootReference
from aicert.verifier.cli import main as verify_main
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.errors import AkChainError, AkMismatchError, FormatError
from aicert.verifier.report import render_json, render_text
from aicert.verifier.statement.certificate import Certificate, parse_certificate
from aicert.verifier.tpm.tpm2_structures import parse_tpm2b_public
from aicert.verifier.verify import (
    UNCERTIFIED_AK,
    CheckResult,
    Policy,
    Status,
    verify_certificate,
)
from certgen import IssuedCertificate, issue_certificate, recipe_outputs
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from nitro_documents import real_document
from nitro_pki import NitroPki

pytestmark = pytest.mark.swtpm

BOOT = (4, 9, 11, 12, 13)


@dataclasses.dataclass
class NitroCase:
    issued: IssuedCertificate
    pki: NitroPki
    sha384: dict[int, bytes]
    tmp: Path

    def certificate(self, **payload_changes: object) -> Certificate:
        """The issued certificate, its AK vouched for by a Nitro document instead."""
        cert = self.issued.certificate
        payload = self.pki.payload(
            self.sha384,
            user_data=parse_tpm2b_public(cert.tpm.ak_public).name(),
            nonce=bytes.fromhex(cert.agent_key_id),
        )
        payload.update(payload_changes)
        return dataclasses.replace(
            cert,
            tpm=dataclasses.replace(
                cert.tpm, ak_certificates=(), nitro_document=self.pki.sign(payload)
            ),
        )

    def policy(self, **changes: object) -> Policy:
        quoted = self.issued.certificate.tpm.pcrs
        policy = Policy(
            trust_roots=(self.pki.root,),
            expected_nonce=self.issued.nonce,
            boot_reference=BootReference(
                "recipe nitro.json",
                {p: quoted[p] for p in BOOT},
                sha384=BankPrediction({p: self.sha384[p] for p in BOOT}, {}),
            ),
            weights_path=self.issued.weights,
            tree_digest=tree_digest_of,
        )
        return dataclasses.replace(policy, **changes)  # type: ignore[arg-type]


@pytest.fixture
def nitro(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> NitroCase:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)
    with AgentTpm(provisioned_swtpm.tcti) as tpm:
        sha384 = tpm.read_pcrs("sha384")
    return NitroCase(issued, NitroPki.generate(), sha384, tmp_path)


def _statuses(results: Iterable[CheckResult]) -> dict[str, Status]:
    return {r.check: r.status for r in results}


def test_a_document_naming_this_ak_from_this_boot_establishes_the_ak(nitro: NitroCase) -> None:
    report = verify_certificate(nitro.certificate(), nitro.policy())
    assert report.ok, report.error
    assert _statuses(report.results)["ak-chain"] is Status.PASSED
    assert report.root_of_trust is not None
    assert report.root_of_trust.root == nitro.pki.root.subject.rfc4514_string()
    # A root given with --trust-root is a test root, never AWS's.
    assert not report.root_of_trust.hardware
    detail = next(r.detail for r in report.results if r.check == "ak-chain")
    assert "i-0123456789abcdef0-tpm0123456789abcdef" in detail
    assert "SHA-384" in detail


def test_the_certificate_round_trips_with_its_document(nitro: NitroCase) -> None:
    cert = nitro.certificate()
    doc = cert.to_json()
    assert doc["tpm"]["akCertificates"] == []
    assert parse_certificate(json.dumps(doc).encode()) == cert


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"user_data": b"\x00\x0b" + bytes(32)}, AkMismatchError, "does not name the AK"),
        ({"user_data": None}, AkMismatchError, "does not name the AK"),
        ({"nonce": bytes(32)}, AkMismatchError, "another agent"),
    ],
)
def test_a_document_for_another_key_or_agent_fails(
    nitro: NitroCase, changes: dict[str, object], error: type[Exception], message: str
) -> None:
    report = verify_certificate(nitro.certificate(**changes), nitro.policy())
    assert isinstance(report.error, error)
    assert message in report.error.message
    assert _statuses(report.results)["ak-chain"] is Status.FAILED


def test_a_document_from_another_boot_fails(nitro: NitroCase) -> None:
    other = dict(nitro.sha384)
    other[4] = b"\x44" * 48
    report = verify_certificate(nitro.certificate(nitrotpm_pcrs=other), nitro.policy())
    assert isinstance(report.error, AkChainError)
    assert "shows another boot than recipe nitro.json: PCR 4" in report.error.message


def test_a_secure_boot_variant_of_a_pcr_is_accepted(nitro: NitroCase) -> None:
    secure = dict(nitro.sha384)
    secure[4] = b"\x55" * 48
    reference = nitro.policy().boot_reference
    assert reference is not None
    assert reference.sha384 is not None
    with_variant = dataclasses.replace(
        reference, sha384=BankPrediction(reference.sha384.pcrs, {4: secure[4]})
    )
    report = verify_certificate(
        nitro.certificate(nitrotpm_pcrs=secure), nitro.policy(boot_reference=with_variant)
    )
    assert _statuses(report.results)["ak-chain"] is Status.PASSED


def test_a_document_under_an_untrusted_root_fails(nitro: NitroCase) -> None:
    report = verify_certificate(nitro.certificate(), nitro.policy(trust_roots=()))
    assert isinstance(report.error, AkChainError)
    assert "does not chain to a trusted root" in report.error.message


def test_the_real_ec2_document_does_not_vouch_for_a_swtpm_ak(nitro: NitroCase) -> None:
    cert = nitro.issued.certificate
    forged = dataclasses.replace(
        cert, tpm=dataclasses.replace(cert.tpm, ak_certificates=(), nitro_document=real_document())
    )
    report = verify_certificate(forged, nitro.policy())
    assert isinstance(report.error, AkMismatchError)


def test_without_sha384_predictions_it_fails_or_is_not_established(nitro: NitroCase) -> None:
    reference = nitro.policy().boot_reference
    old_recipe = dataclasses.replace(reference, sha384=None)  # type: ignore[arg-type]
    report = verify_certificate(nitro.certificate(), nitro.policy(boot_reference=old_recipe))
    assert isinstance(report.error, AkChainError)
    assert "no SHA-384 boot predictions" in report.error.message
    accepted = verify_certificate(
        nitro.certificate(),
        nitro.policy(boot_reference=None, accept_any_image=True, accept_uncertified_ak=True),
    )
    assert accepted.ok, accepted.error
    assert _statuses(accepted.results)["ak-chain"] is Status.NOT_ESTABLISHED
    assert accepted.root_of_trust == UNCERTIFIED_AK
    text = render_text(accepted, nitro.tmp / "c.json", color=False)
    assert text.splitlines()[-1].startswith("NO ROOT OF TRUST")
    assert render_json(accepted, nitro.tmp / "c.json")["root_of_trust"]["hardware"] is False


def test_both_ak_certificates_and_a_document_is_malformed(nitro: NitroCase) -> None:
    doc = copy.deepcopy(nitro.certificate().to_json())
    doc["tpm"]["akCertificates"] = nitro.issued.certificate.to_json()["tpm"]["akCertificates"]
    with pytest.raises(FormatError, match="both akCertificates and a nitroDocument"):
        parse_certificate(json.dumps(doc).encode())


def _hexes(pcrs: Mapping[int, bytes]) -> dict[str, str]:
    return {str(p): pcrs[p].hex() for p in BOOT}


def test_the_command_line_with_a_recipe(
    nitro: NitroCase, capsys: pytest.CaptureFixture[str]
) -> None:
    quoted = nitro.issued.certificate.tpm.pcrs
    recipe = nitro.tmp / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "format": 1,
                "outputs": recipe_outputs(),
                "expected_pcrs": {
                    "pcrs": _hexes(quoted),
                    "secure_boot_pcrs": {},
                    "sha384": {"pcrs": _hexes(nitro.sha384), "secure_boot_pcrs": {}},
                },
            }
        )
    )
    cert = nitro.tmp / "nitro.aicert.json"
    cert.write_text(json.dumps(nitro.certificate().to_json()))
    root = nitro.tmp / "nitro-root.pem"
    root.write_bytes(nitro.pki.root_pem)
    args = [str(cert), "--nonce", nitro.issued.nonce, "--recipe", str(recipe)]
    with pytest.raises(SystemExit) as exited:
        verify_main([*args, "--trust-root", str(root), "--json"])
    out, err = capsys.readouterr()
    assert exited.value.code in (0, None), err
    result = json.loads(out)
    assert {"check": "ak-chain", "status": "passed"}.items() <= result["checks"][1].items()
    with pytest.raises(SystemExit) as exited:
        verify_main(args)
    _out, err = capsys.readouterr()
    assert exited.value.code == 1
    assert err.count("\n") == 1
    assert "Nitro attestation document" in err


def test_profile_capture_of_a_nitro_certificate_needs_the_recipe(nitro: NitroCase) -> None:
    """``profile capture`` proves the quote up to ak-chain first; on NitroTPM that needs
    the image's SHA-384 boot predictions (``--recipe``)."""
    cert = nitro.certificate()
    roots = (nitro.pki.root,)
    with pytest.raises(AkChainError, match="without a recipe"):
        capture_profile(cert, "nitro.aicert.json", "aws", roots)
    profile = capture_profile(
        cert, "nitro.aicert.json", "aws", roots, boot_reference=nitro.policy().boot_reference
    )
    quoted = nitro.issued.certificate.tpm.pcrs
    assert {p: r.variants[0].value for p, r in profile.pcrs.items()} == {
        p: quoted[p] for p in (0, 1, 2, 3, 7)
    }
