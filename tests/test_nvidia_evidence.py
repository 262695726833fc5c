"""NVIDIA GPU attestation: the SPDM report parser, the device chain, the signature, the
session nonce, RIM measurements and the CC policy, on NVIDIA's published Hopper sample
and on evidence of a stand-in device CA."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from aicert.agent.gpu_attestation import GpuAttestationError, attest_gpus
from aicert.agent.gpu_inventory import GpuInfo
from aicert.verifier.errors import (
    FormatError,
    GpuCcModeError,
    GpuChainError,
    GpuEvidenceError,
    GpuMeasurementError,
    GpuMissingError,
    GpuNonceError,
    GpuSignatureError,
)
from aicert.verifier.gpu.nvidia_evidence import (
    GpuPolicy,
    bundled_nvidia_roots,
    bundled_rim_roots,
    check_evidence,
    check_gpus,
    check_rim_signer,
    vbios_version,
    verify_device_chain,
)
from aicert.verifier.gpu.nvidia_rim import parse_rim
from aicert.verifier.gpu.record import GpuAttestation, GpuRecord, gpu_nonce, parse_gpus
from aicert.verifier.gpu.spdm import parse_attestation_report
from aicert.verifier.gpu.xml_c14n import canonicalize, parse_document
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from gpu_evidence_builder import (
    DRIVER,
    VBIOS,
    FakeDeviceCa,
    FakeEvidenceSource,
    FakeRimSigner,
    measurement_values,
    rim_xml,
    spdm_report,
)
from hypothesis import given, settings
from hypothesis import strategies as st

NVIDIA = Path(__file__).parent / "data" / "nvidia"
SAMPLE_REPORT = bytes.fromhex((NVIDIA / "hopperAttestationReport.txt").read_text().strip())
SAMPLE_CHAIN = tuple(
    c.public_bytes(serialization.Encoding.DER)
    for c in x509.load_pem_x509_certificates((NVIDIA / "hopperCertChain.txt").read_bytes())
)
SAMPLE_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
NOW = datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)
SESSION_NONCE = "ab" * 16
AGENT_KEY = "cd" * 32
UUID = "GPU-5f1c3b2a-8d41-4c7e-9a3b-0e2f6d7c8a91"


def _record(report: bytes, chain: tuple[bytes, ...], nonce: bytes, cc: str = "on") -> GpuRecord:
    return GpuRecord(
        "NVIDIA H100 80GB HBM3",
        UUID,
        DRIVER,
        VBIOS,
        cc,
        GpuAttestation(nonce.hex(), report, chain, "nv-local-gpu-verifier", True),
    )


SAMPLE = _record(SAMPLE_REPORT, SAMPLE_CHAIN, SAMPLE_NONCE)


def _check(record: GpuRecord, nonce: bytes, policy: GpuPolicy, at: datetime.datetime = NOW) -> None:
    assert record.attestation is not None
    check_evidence(record, record.attestation, nonce, policy, at)


NVIDIA_POLICY = GpuPolicy(bundled_nvidia_roots())


# ----------------------------------------------------------------------- NVIDIA's sample


def test_the_sample_report_parses() -> None:
    report = parse_attestation_report(SAMPLE_REPORT)
    assert report.request_nonce == SAMPLE_NONCE
    assert len(report.measurements) == 64
    assert all(len(b.value) == 48 for b in report.measurements)
    assert report.opaque_text(3) == "550.90.07"
    assert vbios_version(report) == "96.00.9F.00.01"
    assert report.signed == SAMPLE_REPORT[:-96]


def test_the_sample_verifies_to_nvidias_bundled_root() -> None:
    leaf = verify_device_chain(SAMPLE_CHAIN, bundled_nvidia_roots(), NOW, UUID)
    assert "GSP FMC LF" in leaf.subject.rfc4514_string()
    _check(SAMPLE, SAMPLE_NONCE, NVIDIA_POLICY)


def test_the_sample_answers_another_nonce_than_a_session_s() -> None:
    with pytest.raises(GpuNonceError, match="answers nonce 931d8dd0"):
        check_gpus([SAMPLE], NVIDIA_POLICY, SESSION_NONCE, AGENT_KEY, NOW)


def test_a_chain_to_another_root_is_refused() -> None:
    other = FakeDeviceCa()
    with pytest.raises(GpuChainError, match="not at a trusted NVIDIA root"):
        verify_device_chain(SAMPLE_CHAIN, (other.root,), NOW, UUID)
    # The chain without NVIDIA's root, offered to another root, is refused the same way.
    with pytest.raises(GpuChainError):
        verify_device_chain(SAMPLE_CHAIN[:-1], (other.root,), NOW, UUID)


def test_a_chain_with_a_foreign_link_is_refused() -> None:
    ca = FakeDeviceCa()
    _, fake = ca.device()
    spliced = (fake[0], *SAMPLE_CHAIN[1:])
    with pytest.raises(GpuChainError, match="not issued by"):
        verify_device_chain(spliced, bundled_nvidia_roots(), NOW, UUID)


def test_a_changed_byte_breaks_the_signature() -> None:
    tampered = bytearray(SAMPLE_REPORT)
    tampered[200] ^= 0x01  # inside a measurement
    record = _record(bytes(tampered), SAMPLE_CHAIN, SAMPLE_NONCE)
    with pytest.raises(GpuSignatureError):
        _check(record, SAMPLE_NONCE, NVIDIA_POLICY)


NVIDIA_RIM = (NVIDIA / "1010_0200_882_96005E0001_PROD.swidtag").read_bytes()
# Inside the validity of NVIDIA's sample RIM signer (2023-06-23 .. 2025-06-22).
RIM_TIME = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)


def test_nvidias_signed_rim_verifies_and_is_for_another_vbios() -> None:
    rim = parse_rim(NVIDIA_RIM, "vbios")  # its XML signature verifies
    assert rim.version == "96.00.5E.00.01"
    assert "HCC RIM L4 Signer" in rim.signers[0].subject.rfc4514_string()
    check_rim_signer(rim, bundled_rim_roots(), RIM_TIME)
    policy = GpuPolicy(bundled_nvidia_roots(), rims=(rim,))
    with pytest.raises(GpuMeasurementError, match="not a golden value"):
        _check(SAMPLE, SAMPLE_NONCE, policy, RIM_TIME)


def test_a_rim_signed_by_an_expired_or_foreign_signer_is_refused() -> None:
    rim = parse_rim(NVIDIA_RIM, "vbios")
    with pytest.raises(GpuMeasurementError, match="is not valid at"):
        check_rim_signer(rim, bundled_rim_roots(), NOW)
    with pytest.raises(GpuMeasurementError, match="not at a trusted NVIDIA root"):
        check_rim_signer(rim, (FakeRimSigner().root,), RIM_TIME)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b'index="3" active="True"', b'index="3" active="False"', "signed digest"),
        (b"<ds:SignatureValue>", b"<ds:SignatureValue>AAAA", "not base64|P-384|not verify"),
        (b'xml-c14n11"/></ds:Transforms>', b'xml-exc-c14n#"/></ds:Transforms>', "transforms"),
    ],
)
def test_a_changed_rim_is_refused(old: bytes, new: bytes, message: str) -> None:
    assert old in NVIDIA_RIM
    with pytest.raises((GpuMeasurementError, FormatError), match=message):
        parse_rim(NVIDIA_RIM.replace(old, new, 1), "vbios")


def test_an_unsigned_rim_is_refused() -> None:
    start = NVIDIA_RIM.index(b"<ds:Signature")
    unsigned = NVIDIA_RIM[:start] + b"</SoftwareIdentity>"
    with pytest.raises(GpuMeasurementError, match="exactly one XML signature"):
        parse_rim(unsigned, "vbios")


def test_a_rim_built_from_the_sample_matches() -> None:
    values = [b.value for b in parse_attestation_report(SAMPLE_REPORT).measurements]
    signer = FakeRimSigner()
    rim = parse_rim(rim_xml(values, signer), "own")
    _check(SAMPLE, SAMPLE_NONCE, GpuPolicy(bundled_nvidia_roots(), (rim,), (signer.root,)))


def test_versions_that_disagree_with_the_statement_are_refused() -> None:
    record = GpuRecord("H100", UUID, "535.1", VBIOS, "on", SAMPLE.attestation)
    with pytest.raises(GpuEvidenceError, match=r"names driver 550\.90\.07"):
        _check(record, SAMPLE_NONCE, NVIDIA_POLICY)


# ---------------------------------------------------------------- parser properties


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLE_REPORT) - 1))
def test_every_truncation_is_a_format_error(cut: int) -> None:
    with pytest.raises(FormatError):
        parse_attestation_report(SAMPLE_REPORT[:cut])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLE_REPORT) - 97), st.integers(1, 255))
def test_a_flipped_byte_is_refused_by_the_parser_or_the_signature(at: int, xor: int) -> None:
    tampered = bytearray(SAMPLE_REPORT)
    tampered[at] ^= xor
    record = _record(bytes(tampered), SAMPLE_CHAIN, SAMPLE_NONCE)
    with pytest.raises((FormatError, GpuEvidenceError)):
        _check(record, SAMPLE_NONCE, NVIDIA_POLICY)


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_parse_or_fail_with_format_error(data: bytes) -> None:
    try:
        report = parse_attestation_report(data)
    except FormatError:
        return
    assert len(report.signature) == 96
    assert len(report.request_nonce) == 32


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(FormatError, match="after the signature"):
        parse_attestation_report(SAMPLE_REPORT + b"\x00")


# -------------------------------------------------- the session binding and the policy


def test_the_nonce_binds_session_nonce_and_agent_key() -> None:
    nonce = gpu_nonce(SESSION_NONCE, AGENT_KEY)
    assert (
        nonce
        == hashlib.sha256(
            b"aicert-gpu-attestation-v1\x00"
            + bytes.fromhex(SESSION_NONCE)
            + bytes.fromhex(AGENT_KEY)
        ).digest()
    )
    assert nonce != gpu_nonce("ac" * 16, AGENT_KEY)
    assert nonce != gpu_nonce(SESSION_NONCE, "ce" * 32)


def _attested(source: FakeEvidenceSource, cc: str = "on") -> tuple[GpuRecord, ...]:
    info = GpuInfo("NVIDIA H100 80GB HBM3", UUID, DRIVER, VBIOS, cc)
    return attest_gpus([info], SESSION_NONCE, AGENT_KEY, source, roots=(source.ca.root,))


def test_the_agent_attests_a_cc_gpu_and_the_verifier_accepts_it() -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), (UUID,))
    gpus = _attested(source)
    # The record survives the statement's JSON.
    assert parse_gpus([g.to_json() for g in gpus]) == gpus
    signer = FakeRimSigner()
    policy = GpuPolicy(
        (source.ca.root,),
        rims=(parse_rim(rim_xml(measurement_values(), signer), "vbios"),),
        rim_roots=(signer.root,),
        require_gpus=1,
        require_cc=True,
    )
    detail = check_gpus(gpus, policy, SESSION_NONCE, AGENT_KEY, datetime.datetime.now(datetime.UTC))
    assert detail == "1 GPU(s), 1 with NVIDIA attestation verified, measurements match 1 RIM(s)"


def test_the_agent_refuses_evidence_for_another_nonce() -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), (UUID,), answer_nonce=bytes(32))
    with pytest.raises(GpuAttestationError, match="answers nonce 0000"):
        _attested(source)


def test_the_agent_refuses_when_nvidias_verifier_says_no() -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), (UUID,), result=False)
    with pytest.raises(GpuAttestationError, match="refused"):
        _attested(source)


def test_the_agent_refuses_a_cc_gpu_without_evidence() -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), ())
    with pytest.raises(GpuAttestationError, match="gave no evidence"):
        _attested(source)


def test_a_gpu_without_cc_is_recorded_without_evidence() -> None:
    (gpu,) = _attested(FakeEvidenceSource(FakeDeviceCa(), (UUID,)), cc="off")
    assert gpu.attestation is None
    assert gpu.evidence_sha256 == ""


@pytest.mark.parametrize("mode", ["devtools", "off"])
def test_the_cc_policy_refuses_devtools_and_off(mode: str) -> None:
    source = FakeEvidenceSource(FakeDeviceCa(), (UUID,))
    gpus = _attested(source, cc=mode)
    now = datetime.datetime.now(datetime.UTC)
    lax = GpuPolicy((source.ca.root,))
    assert check_gpus(gpus, lax, SESSION_NONCE, AGENT_KEY, now).startswith("1 GPU(s)")
    with pytest.raises(GpuCcModeError, match=f"CC mode '{mode}'"):
        check_gpus(
            gpus, GpuPolicy((source.ca.root,), require_cc=True), SESSION_NONCE, AGENT_KEY, now
        )


def test_a_cc_claim_without_evidence_is_refused() -> None:
    bare = GpuRecord("NVIDIA H100", UUID, DRIVER, VBIOS, "on")
    with pytest.raises(GpuCcModeError, match="carries no evidence"):
        check_gpus([bare], NVIDIA_POLICY, SESSION_NONCE, AGENT_KEY, NOW)


def test_a_missing_gpu_the_policy_requires_is_refused() -> None:
    with pytest.raises(GpuMissingError, match="records 0 GPU"):
        check_gpus(
            [], GpuPolicy(bundled_nvidia_roots(), require_gpus=1), SESSION_NONCE, AGENT_KEY, NOW
        )
    source = FakeEvidenceSource(FakeDeviceCa(), (UUID,))
    with pytest.raises(GpuMissingError, match="requires 2"):
        check_gpus(
            _attested(source),
            GpuPolicy((source.ca.root,), require_gpus=2),
            SESSION_NONCE,
            AGENT_KEY,
            NOW,
        )


def test_evidence_signed_by_another_key_is_refused() -> None:
    ca = FakeDeviceCa()
    key, chain = ca.device()
    other_key, _ = ca.device()
    nonce = gpu_nonce(SESSION_NONCE, AGENT_KEY)
    record = _record(spdm_report(other_key, nonce, measurement_values()), chain, nonce)
    with pytest.raises(GpuSignatureError):
        check_gpus(
            [record],
            GpuPolicy((ca.root,)),
            SESSION_NONCE,
            AGENT_KEY,
            datetime.datetime.now(datetime.UTC),
        )
    del key


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "must be an array"),
        ([{"model": "x"}], "must hold exactly"),
        ([{**SAMPLE.to_json(), "ccMode": "maybe"}], "ccMode"),
        ([SAMPLE.to_json(), SAMPLE.to_json()], "same UUID"),
        ([{**SAMPLE.to_json(), "attestation": {"nonce": "00"}}], "must hold nonce"),
        ([{**SAMPLE.to_json(), "model": "a\x00b"}], "control characters"),
    ],
)
def test_malformed_gpu_records_are_refused(raw: object, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_gpus(raw)


def test_malformed_rims_are_refused() -> None:
    with pytest.raises(FormatError, match="document type"):
        parse_rim(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "bad")
    with pytest.raises(FormatError, match="not a SWID tag"):
        parse_rim(b"<x/>", "bad")
    with pytest.raises(FormatError, match="SHA-384"):
        parse_rim(rim_xml([b"\x01" * 20], FakeRimSigner()), "short")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(NVIDIA_RIM) - 1), st.integers(0, 255), st.booleans())
def test_a_cut_or_changed_rim_fails_only_as_refused(at: int, byte: int, cut: bool) -> None:
    data = NVIDIA_RIM[:at] if cut else NVIDIA_RIM[:at] + bytes([byte]) + NVIDIA_RIM[at + 1 :]
    try:
        same = canonicalize(parse_document(data, "rim")) == canonicalize(
            parse_document(NVIDIA_RIM, "rim")
        )
    except FormatError:
        same = False
    if same:  # e.g. one space between attributes became a tab: the same document
        return
    with pytest.raises((FormatError, GpuMeasurementError)):
        parse_rim(data, "vbios")


def test_canonical_xml_is_idempotent_on_nvidias_rim() -> None:
    once = canonicalize(parse_document(NVIDIA_RIM, "rim"))
    assert canonicalize(parse_document(once, "rim")) == once
    assert once.startswith(b'<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/')


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)


@given(_JSON)
def test_any_json_is_a_gpu_list_or_a_format_error(raw: object) -> None:
    try:
        gpus = parse_gpus(raw)
    except FormatError:
        return
    assert isinstance(gpus, tuple)


@given(
    st.lists(
        st.tuples(_TEXT, _TEXT, _TEXT, _TEXT, st.sampled_from(["on", "devtools", "off"])),
        max_size=4,
        unique_by=lambda g: g[1],
    )
)
def test_gpu_records_survive_the_statement(fields: list[tuple[str, str, str, str, str]]) -> None:
    records = tuple(GpuRecord(*f) for f in fields)
    assert parse_gpus([r.to_json() for r in records] if records else None) == records
