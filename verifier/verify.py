"""Verification of a certificate as a sequence of small, composable checks.

The checks run in a fixed order, each building on what the previous ones
established: AK chain → quote signature → binding → nonce → PCR digest →
firmware log → CEL log vs statement → boot PCRs → platform profile → weights.
The first failure stops the run (fail closed); later checks are reported as not
run. A check the policy does not ask for is reported as skipped with the reason,
never as passed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from .ak_chain import verify_ak_chain
from .cel import verify_cel
from .certificate import Certificate, agent_key_id
from .dsse import IN_TOTO_PAYLOAD_TYPE, verify_envelope
from .errors import (
    AicertError,
    BindingError,
    BootPcrError,
    EnvelopeSignatureError,
    FormatError,
    NonceError,
    PcrDigestError,
    WeightsError,
)
from .firmware_replay import check_event_digests, verify_against_pcrs
from .pcr import SHA256
from .platform_profile import PlatformProfile, check_profile
from .provenance import TrainingProvenance, parse_statement
from .quote import verify_pcr_digest, verify_quote_signature
from .statement_match import match_statement
from .tcg_log import parse_event_log
from .tpm2_structures import Attest, TpmPublic, parse_tpm2b_public

# The quote must cover every PCR whose value the verifier relies on.
REQUIRED_PCRS = tuple(range(16))
FIRMWARE_LOG_PCRS = tuple(range(8))
ZERO_PCRS = (12, 13)


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str


@dataclass(frozen=True)
class BootReference:
    """Expected boot PCRs (4, 9, 11, 12, 13) and where they came from."""

    source: str
    pcrs: Mapping[int, bytes]
    profile: str = ""


@dataclass(frozen=True)
class Policy:
    """What the auditor asks the verifier to establish."""

    trust_roots: tuple[x509.Certificate, ...]
    expected_nonce: str | None = None
    boot_reference: BootReference | None = None
    accept_any_image: bool = False
    platform_profile: PlatformProfile | None = None
    weights_path: Path | None = None
    weights_digest: Callable[[Path], str] | None = None


@dataclass(frozen=True)
class Report:
    results: tuple[CheckResult, ...]
    provenance: TrainingProvenance | None
    error: AicertError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _State:
    """What earlier checks established, for later ones."""

    cert: Certificate
    policy: Policy
    ak: TpmPublic | None = None
    attest: Attest | None = None
    provenance: TrainingProvenance | None = None
    enforced: dict[int, str] = field(default_factory=dict)


def verify_certificate(cert: Certificate, policy: Policy) -> Report:
    state = _State(cert, policy)
    results: list[CheckResult] = []
    for name, check in _CHECKS:
        try:
            outcome = check(state)
        except AicertError as exc:
            results.append(CheckResult(name, Status.FAILED, exc.message))
            results.extend(CheckResult(n, Status.NOT_RUN, "") for n, _ in _CHECKS[len(results) :])
            return Report(tuple(results), state.provenance, exc)
        status, detail = outcome if isinstance(outcome, tuple) else (Status.PASSED, outcome)
        results.append(CheckResult(name, status, detail))
    return Report(tuple(results), state.provenance)


def _statement(state: _State) -> str:
    env = state.cert.envelope
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"envelope payloadType is {env.payload_type!r}, not in-toto")
    state.provenance = parse_statement(env.payload)
    return "in-toto Statement v1 with SLSA Provenance v1 predicate"


def _ak_chain(state: _State) -> str:
    tpm = state.cert.tpm
    state.ak = parse_tpm2b_public(tpm.ak_public)
    at = _attestation_time(state)
    result = verify_ak_chain(
        tpm.ak_certificates[0], tpm.ak_certificates[1:], state.policy.trust_roots, at, state.ak
    )
    return f"AK certificate valid at {at.isoformat()} under {result.root.subject.rfc4514_string()}"


def _attestation_time(state: _State) -> datetime:
    # The statement's finishedOn, bound to the quote by the binding check below.
    assert state.provenance is not None  # noqa: S101 - set by the statement check
    raw = state.provenance.finished_on
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FormatError(f"statement finishedOn {raw!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise FormatError(f"statement finishedOn {raw!r} has no time zone")
    return at.astimezone(UTC)


def _quote_signature(state: _State) -> str:
    assert state.ak is not None  # noqa: S101 - set by the AK chain check
    state.attest = verify_quote_signature(state.cert.tpm.attest, state.cert.tpm.signature, state.ak)
    return "quote signed by the certified AK"


def _binding(state: _State) -> str:
    assert state.attest is not None  # noqa: S101
    want = state.cert.envelope.pae_sha256()
    if state.attest.extra_data != want:
        raise BindingError(
            "the quote's extraData is not SHA-256 of the statement's DSSE encoding: "
            "statement and quote do not belong together"
        )
    return "quote extraData = SHA-256(DSSE PAE of the statement)"


def _envelope_signature(state: _State) -> str:
    assert state.provenance is not None  # noqa: S101
    key_id = agent_key_id(state.cert.agent_public_key)
    if key_id != state.provenance.agent_key_sha256:
        raise EnvelopeSignatureError(
            "the certificate's agent key is not the one the statement names"
        )
    try:
        key = load_der_public_key(state.cert.agent_public_key)
    except ValueError:
        raise FormatError("agentPublicKey is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise EnvelopeSignatureError("the agent key is not an EC key")
    verify_envelope(state.cert.envelope, key, key_id)
    return f"signed by agent key {key_id[:16]}…"


def _nonce(state: _State) -> str | tuple[Status, str]:
    assert state.provenance is not None  # noqa: S101
    expected = state.policy.expected_nonce
    if expected is None:
        return Status.SKIPPED, "no --nonce given: freshness not established"
    if state.provenance.nonce.lower() != expected.lower():
        raise NonceError(
            f"the statement's nonce {state.provenance.nonce} is not the expected {expected}"
        )
    return "statement carries the expected nonce"


def _pcr_digest(state: _State) -> str:
    assert state.attest is not None  # noqa: S101
    pcrs = state.cert.tpm.pcrs
    selection = state.attest.pcr_selection
    if len(selection.banks) != 1 or selection.banks[0].alg != SHA256:
        raise PcrDigestError("the quote must select exactly the SHA-256 bank")
    missing = sorted(set(REQUIRED_PCRS) - set(selection.banks[0].pcrs))
    if missing:
        raise PcrDigestError(f"the quote does not cover PCRs {missing}")
    verify_pcr_digest(state.attest, pcrs, alg=SHA256)
    for pcr in ZERO_PCRS:
        if pcrs[pcr] != bytes(32):
            raise BootPcrError(
                f"PCR {pcr} is not zero: the boot loaded a command-line override, add-on, "
                "credential or system extension"
            )
    return f"PCRs {_ranges(selection.banks[0].pcrs)} hash to the quoted digest"


def _firmware_log(state: _State) -> str:
    log = parse_event_log(state.cert.tpm.firmware_event_log)
    check_event_digests(log)
    verify_against_pcrs(log, SHA256, state.cert.tpm.pcrs, FIRMWARE_LOG_PCRS)
    return f"{len(log.events)} events replay to PCRs 0-7; data-derived digests recomputed"


def _cel_log(state: _State) -> str:
    assert state.provenance is not None  # noqa: S101
    records = state.cert.tpm.cel_log
    verify_cel(records, state.cert.tpm.pcrs[15])
    match_statement(records, state.provenance)
    return f"{len(records)} records replay to PCR 15 and match the statement event by event"


def _boot_pcrs(state: _State) -> str | tuple[Status, str]:
    reference = state.policy.boot_reference
    if reference is None and state.policy.accept_any_image:
        return Status.SKIPPED, "--any-image: which OS image booted was NOT checked"
    if reference is None:
        raise BootPcrError(
            "no reference image: pass --recipe RECIPE.json or --uki UKI.efi "
            "to check which OS image booted"
        )
    quoted = state.cert.tpm.pcrs
    for pcr, want in sorted(reference.pcrs.items()):
        if quoted[pcr] != want:
            raise BootPcrError(
                f"PCR {pcr} is {quoted[pcr].hex()}, but {reference.source} predicts {want.hex()}"
            )
        state.enforced[pcr] = reference.source
    note = f" (profile {reference.profile})" if reference.profile else ""
    return f"PCRs {_ranges(sorted(reference.pcrs))} equal {reference.source}{note}"


def _platform(state: _State) -> str | tuple[Status, str]:
    profile = state.policy.platform_profile
    if profile is None:
        return Status.SKIPPED, "no --platform-profile: firmware PCRs only replayed from the log"
    check_profile(profile, state.cert.tpm.pcrs)
    return f"PCRs {_ranges(sorted(profile.pcrs))} equal platform profile {profile.name!r}"


def _weights(state: _State) -> str | tuple[Status, str]:
    assert state.provenance is not None  # noqa: S101
    path, digest = state.policy.weights_path, state.policy.weights_digest
    if path is None or digest is None:
        return Status.SKIPPED, "no --weights given: files on disk not compared"
    subjects = state.provenance.subjects
    if len(subjects) != 1:
        raise WeightsError(f"the statement has {len(subjects)} subjects; expected one")
    got = digest(path)
    if got != subjects[0].sha256:
        raise WeightsError(
            f"{path} has tree digest {got}, but the certificate's subject is {subjects[0].sha256}"
        )
    return f"{path} matches subject {subjects[0].name!r}"


def _ranges(pcrs: Iterable[int]) -> str:
    """PCR lists as compact ranges for reports: 0-7,9,11-15."""
    groups: list[list[int]] = []
    for p in sorted(pcrs):
        if groups and groups[-1][-1] == p - 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    return ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


_CHECKS: tuple[tuple[str, Callable[[_State], str | tuple[Status, str]]], ...] = (
    ("statement", _statement),
    ("ak-chain", _ak_chain),
    ("quote-signature", _quote_signature),
    ("binding", _binding),
    ("envelope-signature", _envelope_signature),
    ("nonce", _nonce),
    ("pcr-digest", _pcr_digest),
    ("firmware-log", _firmware_log),
    ("cel-log", _cel_log),
    ("boot-pcrs", _boot_pcrs),
    ("platform-profile", _platform),
    ("weights", _weights),
)
