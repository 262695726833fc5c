"""Firmware reference profiles: capture from a verified certificate, enforce, and fail closed."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from aicert.builder.profile_capture import capture_profile, write_profile
from aicert.verifier.boot_reference import BootReference
from aicert.verifier.certificate import Certificate, parse_certificate
from aicert.verifier.errors import FirmwareLogError, FormatError, PlatformProfileError
from aicert.verifier.platform_profile import load_profile, parse_profile
from aicert.verifier.verify import Policy, Status, verify_certificate
from certgen import IssuedCertificate, issue_certificate
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.swtpm

# PCR values of the real OVMF boot in shared/testdata/ovmf-qemu/README.md.
OVMF_PCR0 = "0101271704ccc2360ddbb08438d591c23fb8a0a9cb0cebc60cefea7868833f8e"
OVMF_PCR7 = "b5710bf57d25623e4019027da116821fa99f5c81e9e38b87671cc574f9281439"


def _profile(change: dict[str, object]) -> bytes:
    doc: dict[str, object] = {
        "name": "p",
        "description": "d",
        "obtained": "o",
        "firmwareLog": True,
        "pcrs": {"0": "00" * 32},
    }
    return json.dumps(doc | change).encode()


@pytest.fixture
def issued(provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path) -> IssuedCertificate:
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    return issue_certificate(provisioned_swtpm.tcti, (intermediate,), tmp_path)


def test_capture_then_enforce(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate, tmp_path: Path
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    profile = capture_profile(issued.certificate, "job.aicert.json", "lab", roots)
    assert profile.pcrs[0].hex() == OVMF_PCR0
    assert profile.pcrs[7].hex() == OVMF_PCR7
    assert "replays" in profile.obtained
    out = tmp_path / "platform-lab.json"
    write_profile(profile, out)
    loaded = load_profile(str(out))
    assert loaded == profile

    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=loaded)
    report = verify_certificate(issued.certificate, policy)
    assert report.ok, report.error
    assert report.pcr_sources[7] == "replayed from the firmware log; platform profile 'lab'"
    assert report.pcr_sources[15].startswith("CEL log")

    wrong = dataclasses.replace(loaded, pcrs={**loaded.pcrs, 1: bytes(32)})
    report = verify_certificate(
        issued.certificate, dataclasses.replace(policy, platform_profile=wrong)
    )
    assert isinstance(report.error, PlatformProfileError)


def test_capture_refuses_an_unverified_certificate(issued: IssuedCertificate) -> None:
    from aicert.verifier.errors import AkChainError

    with pytest.raises(AkChainError):
        capture_profile(issued.certificate, "x", "lab", ())


def _without_log(issued: IssuedCertificate) -> Certificate:
    doc = copy.deepcopy(issued.certificate.to_json())
    doc["tpm"]["firmwareEventLog"] = ""
    return parse_certificate(json.dumps(doc).encode())


def test_missing_firmware_log_needs_a_profile_that_declares_none(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    cert = _without_log(issued)
    roots = (provisioned_swtpm.ca.root_certificate,)
    report = verify_certificate(cert, Policy(trust_roots=roots, accept_any_image=True))
    assert isinstance(report.error, FirmwareLogError)

    profile = capture_profile(cert, "no-log", "cloud", roots)
    assert "no firmware event log" in profile.obtained
    assert not profile.firmware_log
    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=profile)
    report = verify_certificate(cert, policy)
    assert report.ok, report.error
    result = next(r for r in report.results if r.check == "firmware-log")
    assert result.status is Status.SKIPPED
    # Without a log and with --any-image, PCRs 4, 5 and 6 rest on the quote alone.
    assert "PCRs 4-6 are checked against nothing" in result.detail
    assert report.pcr_sources[5] == report.pcr_sources[6] == "quoted only"

    quoted = cert.tpm.pcrs
    recipe = BootReference("recipe r.json", {p: quoted[p] for p in (4, 9, 11, 12, 13)})
    report = verify_certificate(
        cert, dataclasses.replace(policy, boot_reference=recipe, accept_any_image=False)
    )
    assert report.ok, report.error
    assert "PCRs 5-6 are checked against nothing" in report.results[7].detail


def test_a_stripped_log_fails_when_the_profile_says_the_platform_gives_one(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    # The profile of this very platform, recorded from its honest certificate.
    profile = capture_profile(issued.certificate, "job.aicert.json", "lab", roots)
    assert profile.firmware_log
    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=profile)
    assert verify_certificate(issued.certificate, policy).ok
    report = verify_certificate(_without_log(issued), policy)
    assert isinstance(report.error, FirmwareLogError)
    assert "the log was removed" in report.error.message
    # The bundled QEMU profile declares a log, too.
    qemu = dataclasses.replace(policy, platform_profile=load_profile("qemu"))
    assert load_profile("qemu").firmware_log
    assert isinstance(verify_certificate(_without_log(issued), qemu).error, FirmwareLogError)


@pytest.mark.parametrize(
    "text",
    [
        b"[]",
        b'{"pcrs": {}}',
        b'{"pcrs": {"4": "' + b"00" * 32 + b'"}}',
        b'{"pcrs": {"0": "zz"}}',
        b'{"name": 1, "pcrs": {"0": "' + b"00" * 32 + b'"}}',
        # Every member is required, no other is allowed, and each field has one spelling.
        _profile({"firmwareLog": None}),
        _profile({"firmwareLog": 1}),
        _profile({"extra": 1}),
        _profile({"pcrs": {"00": "00" * 32}}),
        _profile({"pcrs": {"0": "AA" * 32}}),
        _profile({"pcrs": {"0": "00" * 31 + " 0"}}),
        b'{"firmwareLog": true, "pcrs": {"0": "' + b"00" * 32 + b'"}}',
        _profile({}).replace(b"true", b"7" * 5000),
    ],
)
def test_malformed_profiles_are_format_errors(text: bytes) -> None:
    with pytest.raises(FormatError):
        parse_profile(text, "test")


def test_a_complete_profile_parses() -> None:
    profile = parse_profile(_profile({}), "test")
    assert profile.firmware_log is True
    assert parse_profile(json.dumps(profile.to_json()).encode(), "test") == profile


def test_unknown_profile_name_says_what_exists() -> None:
    from aicert.verifier.errors import InputError

    with pytest.raises(InputError, match="neither a bundled profile"):
        load_profile("no-such-platform")
