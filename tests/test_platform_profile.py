"""Firmware reference profiles: capture from a verified certificate, enforce, and fail closed."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import azure_capture
import pytest
from aicert.builder.cli import main as build_main
from aicert.builder.profile_capture import PlatformFacts, capture_profile, write_profile
from aicert.verifier.boot.boot_reference import BootReference
from aicert.verifier.boot.platform_profile import (
    FIRMWARE_PCRS,
    PcrRule,
    PlatformProfile,
    Provenance,
    Variant,
    check_profile,
    load_profile,
    merge_capture,
    parse_profile,
    single_variant_profile,
)
from aicert.verifier.errors import FirmwareLogError, FormatError, InputError, PlatformProfileError
from aicert.verifier.report import render_json
from aicert.verifier.statement.certificate import Certificate, parse_certificate
from aicert.verifier.verify import Policy, Status, verify_certificate
from certgen import IssuedCertificate, issue_certificate
from click.testing import CliRunner
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.swtpm

# PCR values of the real OVMF boot in shared/testdata/ovmf-qemu/README.md.
OVMF_PCR0 = "0101271704ccc2360ddbb08438d591c23fb8a0a9cb0cebc60cefea7868833f8e"
OVMF_PCR7 = "b5710bf57d25623e4019027da116821fa99f5c81e9e38b87671cc574f9281439"


def _variant(change: dict[str, object] | None = None) -> dict[str, object]:
    variant: dict[str, object] = {
        "value": "00" * 32,
        "captured": "2026-07-27T10:00:00Z",
        "source": "s",
        "vmSize": "Standard_D2s_v7",
        "region": "eastus2",
        "hostVersion": None,
    }
    return variant | (change or {})


def _profile(change: dict[str, object]) -> bytes:
    doc: dict[str, object] = {
        "format": "aicert-platform-profile/2",
        "name": "p",
        "description": "d",
        "firmwareLog": True,
        "pcrs": {"0": {"variants": [_variant()]}},
    }
    return json.dumps(doc | change).encode()


def _pcrs(**rules: object) -> dict[str, object]:
    return {"pcrs": {key.removeprefix("p"): rule for key, rule in rules.items()}}


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
    assert profile.pcrs[0].variants[0].value.hex() == OVMF_PCR0
    assert profile.pcrs[7].variants[0].value.hex() == OVMF_PCR7
    provenance = profile.pcrs[0].variants[0].provenance
    assert "replays" in provenance.source
    assert provenance.captured is not None
    assert provenance.captured.endswith("Z")
    out = tmp_path / "platform-lab.json"
    write_profile(profile, out)
    loaded = load_profile(str(out))
    assert loaded == profile

    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=loaded)
    report = verify_certificate(issued.certificate, policy)
    assert report.ok, report.error
    assert report.pcr_sources[7] == (
        "replayed from the firmware log; platform profile 'lab' variant 1"
    )
    assert report.pcr_sources[15].startswith("CEL log")

    other = PcrRule(variants=(Variant(bytes(32), loaded.pcrs[1].variants[0].provenance),))
    wrong = dataclasses.replace(loaded, pcrs={**loaded.pcrs, 1: other})
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
    assert "no firmware event log" in profile.pcrs[0].variants[0].provenance.source
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
        _profile({"pcrs": {}}),
        _profile(_pcrs(p4={"variants": [_variant()]})),
        _profile(_pcrs(p0={"variants": [_variant({"value": "zz"})]})),
        _profile({"name": 1}),
        # Every member is required, no other is allowed, and each field has one spelling.
        _profile({"firmwareLog": None}),
        _profile({"firmwareLog": 1}),
        _profile({"extra": 1}),
        _profile({"format": "aicert-platform-profile/3"}),
        _profile(_pcrs(**{"p00": {"variants": [_variant()]}})),
        _profile(_pcrs(p0={"variants": [_variant({"value": "AA" * 32})]})),
        _profile(_pcrs(p0={"variants": [_variant({"value": "00" * 31 + " 0"})]})),
        _profile(_pcrs(p0={"variants": []})),
        _profile(_pcrs(p0={"variants": [_variant(), _variant({"source": "again"})]})),
        _profile(_pcrs(p0={"variants": [_variant({"captured": "yesterday"})]})),
        _profile(_pcrs(p0={"variants": [_variant({"captured": "2026-07-27T10:00:00"})]})),
        _profile(_pcrs(p0={"variants": [_variant({"region": ""})]})),
        _profile(_pcrs(p0={"variants": [_variant({"extra": 1})]})),
        _profile(_pcrs(p0={"variants": [{"value": "00" * 32}]})),
        _profile(_pcrs(p0={"variants": [_variant()], "perVm": "both"})),
        _profile(_pcrs(p6={"perVm": ""})),
        # A profile that declares every PCR per-VM vouches for nothing.
        _profile(_pcrs(p6={"perVm": "per-VM"})),
        _profile(_pcrs(p0={"notCaptured": ""})),
        _profile(_pcrs(p0={"notCaptured": 1})),
        _profile(_pcrs(p0={"notCaptured": "how", "variants": [_variant()]})),
        _profile({}).replace(b"true", b"7" * 5000),
    ],
)
def test_malformed_profiles_are_format_errors(text: bytes) -> None:
    with pytest.raises(FormatError):
        parse_profile(text, "test")


def test_a_complete_profile_parses() -> None:
    doc = _profile(_pcrs(p0={"variants": [_variant()]}, p6={"perVm": "per-VM measurement"}))
    profile = parse_profile(doc, "test")
    assert profile.firmware_log is True
    assert profile.checked_pcrs == [0]
    assert profile.per_vm_pcrs == [6]
    assert parse_profile(json.dumps(profile.to_json()).encode(), "test") == profile


def test_unknown_profile_name_says_what_exists() -> None:
    with pytest.raises(InputError, match="neither a bundled profile"):
        load_profile("no-such-platform")


# --------------------------------------------------------------------------- variants and per-VM


def test_a_capture_added_after_a_firmware_update_is_the_variant_that_matches(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    captured = capture_profile(
        issued.certificate, "job.aicert.json", "lab", roots,
        platform=PlatformFacts(vm_size="q35-2cpu", region="lab-1", host_version="ovmf 2022.11"),
    )  # fmt: skip
    # The profile as it stood before a firmware update: another PCR 0.
    before_pcr0 = PcrRule(
        variants=(Variant(bytes(range(32)), Provenance(None, "the firmware before")),)
    )
    before = dataclasses.replace(captured, pcrs={**captured.pcrs, 0: before_pcr0})
    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=before)
    report = verify_certificate(issued.certificate, policy)
    assert isinstance(report.error, PlatformProfileError)
    assert "none of the 1 variant(s)" in report.error.message

    merged, changes = merge_capture(before, captured)
    assert changes == [f"PCR 0: new variant 2 {OVMF_PCR0}"]
    assert [v.value.hex() for v in merged.pcrs[0].variants] == [bytes(range(32)).hex(), OVMF_PCR0]
    again, none = merge_capture(merged, captured)
    assert again == merged
    assert none == []

    report = verify_certificate(
        issued.certificate, dataclasses.replace(policy, platform_profile=merged)
    )
    assert report.ok, report.error
    pcr0 = next(m for m in report.profile_matches if m.pcr == 0)
    assert pcr0.variant == 2
    assert pcr0.describe().startswith("PCR 0 variant 2 (captured ")
    assert "q35-2cpu, lab-1, host ovmf 2022.11" in pcr0.describe()
    assert report.pcr_sources[0].endswith("platform profile 'lab' variant 2")
    detail = next(r.detail for r in report.results if r.check == "platform-profile")
    assert detail.startswith("PCRs 0-3,7 match platform profile 'lab' (variants: PCR 0 #2, ")
    assert "PCR 7 #1" in detail


def test_a_per_vm_pcr_is_skipped_with_its_reason_never_passed(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    reason = "the firmware measures a per-VM value"
    profile = capture_profile(
        issued.certificate, "c", "lab", roots, platform=PlatformFacts(per_vm=((6, reason),))
    )
    assert profile.per_vm_pcrs == [6]
    report = verify_certificate(
        issued.certificate,
        Policy(trust_roots=roots, accept_any_image=True, platform_profile=profile),
    )
    assert report.ok, report.error
    (pcr6,) = (m for m in report.profile_matches if m.pcr == 6)
    assert pcr6.variant is None
    assert pcr6.skipped == reason
    assert pcr6.describe() == f"PCR 6 SKIPPED: per-VM ({reason})"
    detail = next(r.detail for r in report.results if r.check == "platform-profile")
    assert detail.endswith(f"; PCR 6 SKIPPED: per-VM ({reason})")
    assert "PCR 6 #" not in detail
    assert "SKIPPED by platform profile 'lab': per-VM" in report.pcr_sources[6]
    assert "platform profile 'lab' variant" not in report.pcr_sources[6]
    rendered = render_json(report, Path("c"))["platform_profile"]
    assert {"pcr": 6, "status": "skipped", "reason": reason} in rendered
    assert all(m["status"] == "passed" for m in rendered if m["pcr"] != 6)
    # A later capture never turns the per-VM PCR into a compared one.
    merged, _ = merge_capture(profile, capture_profile(issued.certificate, "c", "lab", roots))
    assert merged.pcrs[6].per_vm == reason


def test_pcrs_not_captured_yet_are_skipped_never_passed_until_a_capture_adds_them(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    policy = Policy(trust_roots=roots, accept_any_image=True, platform_profile=load_profile("aws"))
    report = verify_certificate(issued.certificate, policy)
    assert report.ok, report.error
    result = next(r for r in report.results if r.check == "platform-profile")
    assert result.status is Status.SKIPPED
    assert result.detail.startswith("platform profile 'aws': PCR 0 SKIPPED: not captured yet (")
    for pcr in FIRMWARE_PCRS:
        assert "SKIPPED by platform profile 'aws': not captured yet" in report.pcr_sources[pcr]
        assert "variant" not in report.pcr_sources[pcr]
    rendered = render_json(report, Path("c"))["platform_profile"]
    assert [m["status"] for m in rendered] == ["skipped"] * len(FIRMWARE_PCRS)

    # One PCR still uncaptured among captured ones: the check passes on those, names it.
    captured = capture_profile(issued.certificate, "c", "aws", roots)
    partial = dataclasses.replace(captured, pcrs={**captured.pcrs, 7: load_profile("aws").pcrs[7]})
    report = verify_certificate(
        issued.certificate, dataclasses.replace(policy, platform_profile=partial)
    )
    assert report.ok, report.error
    result = next(r for r in report.results if r.check == "platform-profile")
    assert result.status is Status.PASSED
    assert result.detail.startswith("PCRs 0-3 match platform profile 'aws'")
    assert "PCR 7 SKIPPED: not captured yet" in result.detail

    # profile capture --add gives each uncaptured PCR its first variant.
    filled, changes = merge_capture(load_profile("aws"), captured)
    assert filled.uncaptured_pcrs == []
    assert changes[0] == f"PCR 0: new variant 1 {OVMF_PCR0}"
    assert check_profile(filled, issued.certificate.tpm.pcrs)[4].variant == 1


def test_merging_refuses_a_capture_that_disagrees_on_the_firmware_log(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate
) -> None:
    roots = (provisioned_swtpm.ca.root_certificate,)
    with_log = capture_profile(issued.certificate, "c", "lab", roots)
    without = capture_profile(_without_log(issued), "c", "lab", roots)
    with pytest.raises(InputError, match="another platform"):
        merge_capture(with_log, without)


def _azure_profile(pcrs: dict[int, bytes]) -> PlatformProfile:
    provenance = Provenance(
        azure_capture.CAPTURED_ON,
        "tpm2_quote of PCRs 0-7 on an Azure Trusted Launch VM (tests/data/azure-vtpm-2026-07-27)",
        vm_size=azure_capture.VM_SIZE,
        region=azure_capture.REGION,
    )
    return single_variant_profile(
        "azure-trustedlaunch",
        "Azure Trusted Launch, Secure Boot on",
        {p: pcrs[p] for p in FIRMWARE_PCRS},
        provenance,
        firmware_log=False,
        per_vm=((6, "Azure Trusted Launch measures a per-VM value into PCR 6"),),
    )


def test_profile_from_real_azure_trusted_launch_pcrs() -> None:
    """PCRs quoted by a genuine Azure vTPM: the profile built from them matches, per variant."""
    quoted = azure_capture.quoted_pcrs()
    profile = parse_profile(json.dumps(_azure_profile(quoted).to_json()).encode(), "azure")
    matches = check_profile(profile, quoted)
    assert [(m.pcr, m.variant) for m in matches] == [
        (0, 1), (1, 1), (2, 1), (3, 1), (6, None), (7, 1),
    ]  # fmt: skip
    assert matches[0].describe() == (
        "PCR 0 variant 1 (captured 2026-07-27T00:00:00Z, Standard_D2s_v7, eastus2)"
    )
    # Azure updates its firmware: PCR 0 moves, and PCR 6 differs on every VM anyway.
    updated = {**quoted, 0: hashlib.sha256(quoted[0]).digest(), 6: bytes(32)}
    with pytest.raises(PlatformProfileError, match=r"PCR 0 is .* none of the 1 variant"):
        check_profile(profile, updated)
    newer = dataclasses.replace(
        _azure_profile(updated),
        pcrs={
            p: PcrRule(variants=(dataclasses.replace(r.variants[0], provenance=Provenance(
                "2026-09-01T00:00:00Z", "after the update", host_version="hyper-v 2026.09"
            )),)) if r.variants else r
            for p, r in _azure_profile(updated).pcrs.items()
        },
    )  # fmt: skip
    merged, changes = merge_capture(profile, newer)
    assert changes == [f"PCR 0: new variant 2 {updated[0].hex()}"]
    assert check_profile(merged, updated)[0].variant == 2
    assert check_profile(merged, quoted)[0].variant == 1
    assert "host hyper-v 2026.09" in check_profile(merged, updated)[0].describe()


def test_an_old_single_value_profile_is_refused_with_the_command_that_converts_it(
    tmp_path: Path,
) -> None:
    old = {
        "name": "lab",
        "description": "d",
        "obtained": "recorded by hand",
        "firmwareLog": True,
        "pcrs": {"0": OVMF_PCR0, "7": OVMF_PCR7},
    }
    path = tmp_path / "platform-lab.json"
    path.write_text(json.dumps(old))
    with pytest.raises(FormatError, match="aicert-build profile migrate"):
        load_profile(str(path))
    result = CliRunner().invoke(build_main, ["profile", "migrate", str(path)])
    assert result.exit_code == 0, result.output
    profile = load_profile(str(path))
    assert profile.pcrs[7].variants[0].value.hex() == OVMF_PCR7
    assert profile.pcrs[0].variants[0].provenance == Provenance(None, "recorded by hand")
    result = CliRunner().invoke(build_main, ["profile", "migrate", str(path)])
    assert result.exit_code == 3
    assert "not in the old format" in result.output


def test_capture_add_on_the_command_line(
    provisioned_swtpm: ProvisionedSwtpm, issued: IssuedCertificate, tmp_path: Path
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(provisioned_swtpm.ca.root_certificate.public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "platform-lab.json"
    base = ["profile", "capture", str(issued.path), "--trust-root", str(root)]
    result = CliRunner().invoke(
        build_main,
        [*base, "--name", "lab", "--vm-size", "q35", "--per-vm", "6=per VM", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert load_profile(str(out)).per_vm_pcrs == [6]
    result = CliRunner().invoke(build_main, [*base, "--add", str(out), "--region", "lab-2"])
    assert result.exit_code == 0, result.output
    assert "already accepted: no change" in result.output
    result = CliRunner().invoke(build_main, [*base, "--add", str(out), "--name", "x"])
    assert result.exit_code == 2
    result = CliRunner().invoke(build_main, [*base, "--name", "x", "--per-vm", "6"])
    assert result.exit_code == 2


_STEPS = ["pcrs", "0", "variants", 0, "value", "captured", "format", "6", "perVm"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 30) | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.sampled_from(_STEPS), max_size=4), value=_JSON)
def test_a_mutated_profile_parses_or_is_a_format_error(path: list[object], value: object) -> None:
    doc = json.loads(_profile({}))
    node = doc
    for step in path[:-1]:
        try:
            node = node[step]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            break
    if path and isinstance(node, dict | list):
        with contextlib.suppress(IndexError, TypeError):
            node[path[-1]] = value  # type: ignore[index]
    try:
        profile = parse_profile(json.dumps(doc).encode(), "fuzz")
    except FormatError:
        return
    assert parse_profile(json.dumps(profile.to_json()).encode(), "fuzz") == profile


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_profile(data, "fuzz")
