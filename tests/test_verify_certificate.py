"""End-to-end verification of a certificate made on a real swtpm, and one tampering per check."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aicert.verifier.boot.boot_reference import BootReference, reference_from_recipe
from aicert.verifier.cli import main as verify_main
from aicert.verifier.digest.treemanifest import TreeManifest
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.errors import (
    AkChainError,
    AkMismatchError,
    BindingError,
    BootPcrError,
    CelLogError,
    EnvelopeSignatureError,
    FirmwareLogError,
    FormatError,
    ImageIdentityError,
    NonceError,
    PcrDigestError,
    StatementMismatchError,
    VerificationError,
    WeightsError,
)
from aicert.verifier.logs.tcg_log import Event, parse_event_log
from aicert.verifier.statement.certificate import parse_certificate
from aicert.verifier.statement.dsse import sign_envelope
from aicert.verifier.verify import LOCAL_TEST_PLATFORM, Policy, Report, Status, verify_certificate
from certgen import ROOTHASH, IssuedCertificate, issue_certificate, recipe_outputs
from conftest import ProvisionedSwtpm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.swtpm

SHA256_ID = 0x000B


@pytest.fixture
def issued(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    return issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)


def _policy(swtpm: ProvisionedSwtpm, issued: IssuedCertificate, **changes: Any) -> Policy:
    policy = Policy(
        trust_roots=(swtpm.ca.root_certificate,),
        expected_nonce=issued.nonce,
        accept_any_image=True,
        weights_path=issued.weights,
        tree_digest=tree_digest_of,
    )
    return dataclasses.replace(policy, **changes)


def _verify_json(doc: dict[str, Any], policy: Policy) -> Report:
    return verify_certificate(parse_certificate(json.dumps(doc).encode()), policy)


def _failed(report: Report) -> tuple[str, type[Exception]]:
    assert report.error is not None, "verification passed but should have failed"
    failed = [r.check for r in report.results if r.status is Status.FAILED]
    return failed[0], type(report.error)


def test_an_honest_certificate_verifies(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert report.ok, report.error
    statuses = {r.check: r.status for r in report.results}
    assert statuses["boot-pcrs"] is Status.SKIPPED  # --any-image: said, not hidden
    assert statuses["platform-profile"] is Status.SKIPPED
    assert all(
        s is Status.PASSED
        for c, s in statuses.items()
        if c not in {"boot-pcrs", "platform-profile", "gpus", "evaluations", "files"}
    )
    assert report.provenance is not None
    assert report.provenance.nonce == issued.nonce


def _edit_statement(doc: dict[str, Any]) -> None:
    payload = json.loads(base64.b64decode(doc["envelope"]["payload"]))
    payload["predicate"]["buildDefinition"]["externalParameters"]["command"] = ["python3", "x.py"]
    doc["envelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()


def _swap_ak(doc: dict[str, Any]) -> None:
    other = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    ak = bytearray(base64.b64decode(doc["tpm"]["akPublic"]))
    modulus = other.n.to_bytes(256, "big")
    ak[-256:] = modulus  # TPM2B_PUBLIC of an RSA-2048 key ends with its modulus
    doc["tpm"]["akPublic"] = base64.b64encode(bytes(ak)).decode()


def _self_signed_chain(doc: dict[str, Any]) -> None:
    leaf = x509.load_der_x509_certificate(base64.b64decode(doc["tpm"]["akCertificates"][0]))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed")])
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(name)
        .public_key(leaf.public_key())  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    doc["tpm"]["akCertificates"] = [
        base64.b64encode(forged.public_bytes(serialization.Encoding.DER)).decode()
    ]


def _reorder_cel(doc: dict[str, Any]) -> None:
    cel = doc["tpm"]["celLog"]
    cel[2], cel[3] = cel[3], cel[2]


def _drop_cel(doc: dict[str, Any]) -> None:
    del doc["tpm"]["celLog"][2]


def _alter_pcr(doc: dict[str, Any]) -> None:
    doc["tpm"]["pcrs"]["sha256"]["7"] = "00" * 32


def _log_events(doc: dict[str, Any]) -> tuple[bytes, list[Event]]:
    raw = base64.b64decode(doc["tpm"]["firmwareEventLog"])
    return raw, list(parse_event_log(raw).events)


def _set_log(doc: dict[str, Any], raw: bytes) -> None:
    doc["tpm"]["firmwareEventLog"] = base64.b64encode(raw).decode()


def _forge_pcr9_event(doc: dict[str, Any]) -> None:
    # The kernel command-line event's digest is not derived from its data: only a replay
    # to the quoted PCR 9 can tell a forged one.
    raw, events = _log_events(doc)
    event = next(e for e in events if e.pcr == 9)
    _set_log(doc, raw.replace(event.digests[SHA256_ID], hashlib.sha256(b"forged").digest()))


def _drop_pcr11_event(doc: dict[str, Any]) -> None:
    raw, events = _log_events(doc)
    i = next(i for i, e in enumerate(events) if e.pcr == 11)
    _set_log(doc, raw[: events[i].offset] + raw[events[i + 1].offset :])


def _second_signature(doc: dict[str, Any]) -> None:
    # A valid signature by another key over the same statement.
    other = ec.generate_private_key(ec.SECP256R1())
    envelope = parse_certificate(json.dumps(doc).encode()).envelope
    forged = sign_envelope(envelope.payload_type, envelope.payload, other, "other-key")
    doc["envelope"]["signatures"].append(forged.to_json()["signatures"][0])


def _alter_pcr15_and_cel(doc: dict[str, Any]) -> None:
    # A CEL record that matches its own digest but was never extended.
    from aicert.verifier.logs.cel import make_record

    cel = doc["tpm"]["celLog"]
    cel.insert(-1, make_record(len(cel) - 1, {"event": "command-exit", "exitStatus": 0}).to_json())
    cel[-1]["recnum"] = len(cel) - 1


@pytest.mark.parametrize(
    ("tamper", "check", "error"),
    [
        (_edit_statement, "binding", BindingError),
        (_swap_ak, "ak-chain", AkMismatchError),
        (_self_signed_chain, "ak-chain", AkChainError),
        (_reorder_cel, "cel-log", CelLogError),
        (_drop_cel, "cel-log", CelLogError),
        (_alter_pcr, "pcr-digest", PcrDigestError),
        (_alter_pcr15_and_cel, "cel-log", CelLogError),
        (_forge_pcr9_event, "firmware-log", FirmwareLogError),
        (_drop_pcr11_event, "firmware-log", FirmwareLogError),
        (_second_signature, "envelope-signature", EnvelopeSignatureError),
    ],
)
def test_each_tampering_fails_its_check(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    tamper: Callable[[dict[str, Any]], None],
    check: str,
    error: type[VerificationError],
) -> None:
    doc = copy.deepcopy(issued.certificate.to_json())
    tamper(doc)
    report = _verify_json(doc, _policy(provisioned_swtpm, issued))
    assert _failed(report) == (check, error)


def test_the_report_shows_which_pcrs_the_firmware_log_authenticates(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert report.ok, report.error
    assert report.pcr_sources[9] == "replayed from the firmware log"
    assert report.pcr_sources[11] == "replayed from the firmware log + boot phases"
    assert report.pcr_sources[10] == "quoted only"  # nothing in the log: the OS's own


def test_a_local_ca_root_is_no_hardware_root_of_trust(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    from aicert.verifier.report import render_json, render_text
    from aicert.verifier.tpm.ak_chain import bundled_roots
    from aicert.verifier.verify import root_of_trust

    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert report.root_of_trust is not None
    assert not report.root_of_trust.hardware
    assert report.root_of_trust.description.startswith(LOCAL_TEST_PLATFORM)
    text = render_text(report, issued.path, color=False)
    assert f"VERIFIED on a {LOCAL_TEST_PLATFORM}" in text
    assert render_json(report, issued.path)["root_of_trust"]["hardware"] is False
    # Only a bundled root counts as hardware, whatever another root's name says.
    azure = bundled_roots()[0]
    assert root_of_trust(azure).hardware
    assert "hardware root of trust" in root_of_trust(azure).description
    assert not root_of_trust(provisioned_swtpm.ca.root_certificate).hardware


def test_other_nonce_fails(provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate) -> None:
    report = verify_certificate(
        issued.certificate, _policy(provisioned_swtpm, issued, expected_nonce="ff" * 16)
    )
    assert _failed(report) == ("nonce", NonceError)


def test_untrusted_root_fails(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    report = verify_certificate(
        issued.certificate, _policy(provisioned_swtpm, issued, trust_roots=())
    )
    assert _failed(report) == ("ak-chain", AkChainError)


def test_statement_that_differs_from_the_log_fails(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate, tmp_path: Path
) -> None:
    # A second, honest session's statement quoted and signed properly cannot be mixed
    # with this session's log: the binding ties statement and quote together.
    doc = copy.deepcopy(issued.certificate.to_json())
    doc["tpm"]["celLog"][1]["content"]["nonce"] = "00" * 16
    report = _verify_json(doc, _policy(provisioned_swtpm, issued))
    assert _failed(report) == ("cel-log", CelLogError)
    assert StatementMismatchError.check == "cel-log"


def test_wrong_boot_reference_fails(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    reference = BootReference("recipe other.json", {4: b"\x11" * 32, 9: bytes(32)})
    policy = _policy(provisioned_swtpm, issued, boot_reference=reference, accept_any_image=False)
    report = verify_certificate(issued.certificate, policy)
    assert _failed(report) == ("boot-pcrs", BootPcrError)


def test_matching_recipe_passes(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    quoted = issued.certificate.tpm.pcrs
    reference = BootReference("recipe same.json", {p: quoted[p] for p in (4, 9, 11, 12, 13)})
    policy = _policy(provisioned_swtpm, issued, boot_reference=reference, accept_any_image=False)
    assert verify_certificate(issued.certificate, policy).ok


def test_no_boot_reference_fails_closed(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    policy = _policy(provisioned_swtpm, issued, accept_any_image=False)
    assert _failed(verify_certificate(issued.certificate, policy)) == ("boot-pcrs", BootPcrError)


def test_altered_weights_fail(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    model = issued.weights / "model.bin"
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert _failed(report) == ("weights", WeightsError)


def test_an_added_or_removed_weights_file_fails(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    (issued.weights / "extra.bin").write_bytes(b"x")
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert _failed(report) == ("weights", WeightsError)
    (issued.weights / "extra.bin").unlink()
    (issued.weights / "config.json").unlink()
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert _failed(report) == ("weights", WeightsError)


def test_a_file_subject_that_lies_fails(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    """An agent whose per-file SHA-256 does not fit the measured tree is caught on --weights."""

    def lying(weights: Path, manifest: TreeManifest) -> dict[str, str]:
        return {f.path: "00" * 32 if f.path == "model.bin" else f.digest for f in manifest.files}

    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(
        provisioned_swtpm.tcti, (intermediate,), tmp_path, file_sha256s=lying
    )
    report = verify_certificate(issued.certificate, _policy(provisioned_swtpm, issued))
    assert _failed(report) == ("weights", WeightsError)
    assert "weights/model.bin" in str(report.error)


def _recipe(tmp_path: Path, issued: IssuedCertificate, **outputs: Any) -> Path:
    quoted = issued.certificate.tpm.pcrs
    recipe = {
        "format": 1,
        "inputs": {"profile": "qemu"},
        "outputs": recipe_outputs() | outputs,
        "expected_pcrs": {"pcrs": {str(p): quoted[p].hex() for p in (4, 9, 11, 12, 13)}},
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_the_statement_names_the_recipes_image(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate, tmp_path: Path
) -> None:
    reference = reference_from_recipe(_recipe(tmp_path, issued))
    policy = _policy(provisioned_swtpm, issued, boot_reference=reference, accept_any_image=False)
    report = verify_certificate(issued.certificate, policy)
    assert report.ok, report.error
    assert report.provenance is not None
    assert report.provenance.image.roothash == ROOTHASH
    assert report.provenance.image.uki_authenticode.startswith("5fad3168")
    assert "names its image" in {r.check: r.detail for r in report.results}["boot-pcrs"]


@pytest.mark.parametrize(
    "outputs",
    [
        {"roothash": "11" * 32},
        {"uki": {"authenticode_sha256": "22" * 32}},
    ],
)
def test_a_statement_naming_another_image_fails(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    tmp_path: Path,
    outputs: dict[str, Any],
) -> None:
    reference = reference_from_recipe(_recipe(tmp_path, issued, **outputs))
    policy = _policy(provisioned_swtpm, issued, boot_reference=reference, accept_any_image=False)
    assert _failed(verify_certificate(issued.certificate, policy)) == (
        "boot-pcrs",
        ImageIdentityError,
    )


def test_a_statement_without_the_root_hash_fails_against_a_recipe(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    issued = issue_certificate(
        provisioned_swtpm.tcti, (intermediate,), tmp_path / "job", kernel_cmdline="console=ttyS0"
    )
    reference = reference_from_recipe(_recipe(tmp_path, issued))
    policy = _policy(provisioned_swtpm, issued, boot_reference=reference, accept_any_image=False)
    report = verify_certificate(issued.certificate, policy)
    assert _failed(report) == ("boot-pcrs", ImageIdentityError)
    assert "names no root hash" in str(report.error)


def _pcr_key_with_leading_zero(doc: dict[str, Any]) -> None:
    pcrs = doc["tpm"]["pcrs"]["sha256"]
    pcrs["07"] = pcrs.pop("7")


def _two_cel_digests(doc: dict[str, Any]) -> None:
    record = doc["tpm"]["celLog"][1]
    record["digests"].insert(0, {"hashAlg": "sha256", "digest": "00" * 32})


def _upper_case_pcr(doc: dict[str, Any]) -> None:
    pcrs = doc["tpm"]["pcrs"]["sha256"]
    pcrs["4"] = pcrs["4"].upper()


def _url_safe_base64(doc: dict[str, Any]) -> None:
    raw = base64.b64decode(doc["tpm"]["quote"]["attest"])
    doc["tpm"]["quote"]["attest"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "tamper",
    [
        _pcr_key_with_leading_zero,
        _two_cel_digests,
        _upper_case_pcr,
        _url_safe_base64,
        lambda doc: doc.update(extra="accepted?"),
        lambda doc: doc["tpm"].update(extra=1),
        lambda doc: doc["tpm"]["quote"].update(extra=1),
        lambda doc: doc["tpm"]["pcrs"].update(sha1={}),
        lambda doc: doc["envelope"].update(extra=1),
        lambda doc: doc["tpm"]["celLog"][0].update(extra=1),
        lambda doc: doc.pop("agentPublicKey"),
    ],
)
def test_non_canonical_certificates_are_refused(
    issued: IssuedCertificate, tamper: Callable[[dict[str, Any]], None]
) -> None:
    # Each edit keeps the evidence's meaning, which is why it must not parse: one
    # certificate has one encoding.
    doc = copy.deepcopy(issued.certificate.to_json())
    tamper(doc)
    with pytest.raises(FormatError):
        parse_certificate(json.dumps(doc).encode())


def test_the_certificate_encoding_round_trips(issued: IssuedCertificate) -> None:
    doc = issued.certificate.to_json()
    assert parse_certificate(json.dumps(doc).encode()) == issued.certificate


def test_truncated_quote_is_malformed_input(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    doc = copy.deepcopy(issued.certificate.to_json())
    attest = base64.b64decode(doc["tpm"]["quote"]["attest"])
    doc["tpm"]["quote"]["attest"] = base64.b64encode(attest[:40]).decode()
    report = _verify_json(doc, _policy(provisioned_swtpm, issued))
    check, error = _failed(report)
    assert check == "quote-signature"
    assert issubclass(error, (FormatError, VerificationError))


# --------------------------------------------------------------------------- the CLI


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        verify_main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_verifies_and_reports_json(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = str(provisioned_swtpm.ca.root_path)
    args = [str(issued.path), "--trust-root", root, "--nonce", issued.nonce, "--any-image"]
    code, out, _ = _cli([*args, "--weights", str(issued.weights)], capsys)
    assert code == 0, out
    assert "VERIFIED" in out
    code, out, _ = _cli([*args, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0
    assert doc["verified"] is True
    (weights,) = doc["provenance"]["predicate"]["aicert_weights"]
    assert weights["digest"] == {
        "aicert-tree-sha256": issued.certificate.tpm.cel_log[-2].content["sha256"]
    }
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in issued.weights.iterdir()}
    assert {s["name"]: s["digest"] for s in doc["provenance"]["subject"]} == {
        f"weights/{name}": {"sha256": sha256} for name, sha256 in files.items()
    }


def test_cli_fails_with_one_line_and_exit_codes(
    provisioned_swtpm: ProvisionedSwtpm,
    issued: IssuedCertificate,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    root = str(provisioned_swtpm.ca.root_path)
    code, out, _ = _cli(
        [str(issued.path), "--trust-root", root, "--nonce", "00" * 16, "--any-image"], capsys
    )
    assert code == 1
    assert "NOT VERIFIED: nonce:" in out

    code, _, err = _cli([str(tmp_path / "missing.json")], capsys)
    assert code == 3
    assert err.count("\n") == 1
    assert "does not exist" in err

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    code, _, err = _cli([str(garbage)], capsys)
    assert code == 3
    assert "not valid JSON" in err

    code, _, err = _cli([str(issued.path), "--recipe", "a", "--uki", "b"], capsys)
    assert code == 2
