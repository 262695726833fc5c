"""Verification of a certificate as a sequence of small, composable checks.

The checks run in a fixed order, each building on what the previous ones
established: AK chain → quote signature → binding → nonce → PCR digest →
firmware log → CEL log vs statement → GPUs → boot PCRs → platform profile → weights.
The first failure stops the run (fail closed); later checks are reported as not
run. A check the policy does not ask for is reported as skipped with the reason,
never as passed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from .aws.nitro_ak import check_nitro_boot, describe, is_aws_root, verify_nitro_ak
from .boot.boot_reference import BootReference
from .boot.firmware_replay import check_event_digests, verify_against_pcrs
from .boot.image_identity import check_image_identity
from .boot.platform_profile import PcrMatch, PlatformProfile, check_profile
from .boot.uki import PCRPHASE_WORDS
from .digest.file_subjects import file_subjects, plain_sha256s
from .digest.weights import tree_manifest_of
from .errors import (
    AicertError,
    AkChainError,
    BindingError,
    BootPcrError,
    EnvelopeSignatureError,
    EvaluationError,
    FirmwareLogError,
    FormatError,
    InputDigestError,
    NonceError,
    PcrDigestError,
    WeightsError,
)
from .gpu.nvidia_evidence import GpuPolicy, bundled_nvidia_roots, check_gpus
from .logs.cel import verify_cel
from .logs.tcg_events import EV_NO_ACTION
from .logs.tcg_log import parse_event_log
from .statement.certificate import Certificate, agent_key_id, load_certificate
from .statement.dsse import IN_TOTO_PAYLOAD_TYPE, verify_envelope
from .statement.provenance import TrainingProvenance, parse_statement
from .statement.statement_match import match_statement
from .tpm.ak_chain import bundled_roots, verify_ak_chain
from .tpm.pcr import QUOTED_PCRS, SHA256
from .tpm.quote import verify_pcr_digest, verify_quote_signature
from .tpm.tpm2_structures import Attest, TpmPublic, parse_tpm2b_public

# The quote must cover every PCR whose value the verifier relies on.
_T = TypeVar("_T")

REQUIRED_PCRS = QUOTED_PCRS
FIRMWARE_LOG_PCRS = tuple(range(8))
"""Measured by the firmware alone: the log must replay to every one of them."""
ZERO_PCRS = (12, 13)
QUOTED_ONLY = "quoted only"
UNLOGGED_EXTENDS = {11: tuple(SHA256.hash(word.encode()) for word in PCRPHASE_WORDS)}
"""Extends the booted OS makes after the firmware's and logs outside the firmware log:
systemd-pcrphase's boot phases in PCR 11 (``verifier/boot/uki.py``)."""


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_ESTABLISHED = "not established"
    """The check could not establish its claim and the auditor accepted that (never a pass)."""
    NOT_RUN = "not run"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Policy:
    """What the auditor asks the verifier to establish."""

    trust_roots: tuple[x509.Certificate, ...]
    expected_nonce: str | None = None
    boot_reference: BootReference | None = None
    accept_any_image: bool = False
    platform_profile: PlatformProfile | None = None
    weights_path: Path | None = None
    tree_digest: Callable[[Path], str] | None = None
    linked_certificates: tuple[Path, ...] = ()
    """The chain of certificates an evaluation-only one links, in link order."""
    require_training: bool = False
    """The chain of linked certificates must end in a training certificate."""
    input_paths: Mapping[str, Path] = field(default_factory=dict)
    results_paths: Mapping[str, Path] = field(default_factory=dict)
    gpu: GpuPolicy = field(default_factory=lambda: GpuPolicy(bundled_nvidia_roots()))
    accept_uncertified_ak: bool = False
    """Accept a certificate whose AK nothing vouches for (no AK certificate, or a Nitro
    document whose boot PCRs cannot be checked): ak-chain is then reported as not
    established, never as passed."""


@dataclass(frozen=True)
class RootOfTrust:
    hardware: bool
    """True only for a root bundled with the verifier: a cloud's vTPM root, or AWS's Nitro
    attestation root (which vouches for the measurements, not the AK)."""
    root: str
    """The root certificate's subject."""
    description: str


LOCAL_TEST_PLATFORM = "local test platform, no hardware root of trust"
UNCERTIFIED_AK = RootOfTrust(
    False,
    "none",
    "NOT ESTABLISHED: neither an AK certificate nor a checked Nitro attestation document "
    "ties the AK to a TPM (see docs/aws.md)",
)


@dataclass(frozen=True)
class Link:
    """One certificate of a chain of linked certificates."""

    certificate: str
    """"this certificate", or the path the auditor gave with --linked-certificate."""
    kind: str
    """"training run", "evaluation only", or "evaluation only, of uploaded weights"."""
    root_of_trust: RootOfTrust | None = None
    """For a linked certificate: what its own AK chain ends in."""

    def __str__(self) -> str:
        local = self.root_of_trust is not None and not self.root_of_trust.hardware
        return f"{self.certificate} ({self.kind}{'; ' + LOCAL_TEST_PLATFORM if local else ''})"


THIS = "this certificate"


@dataclass(frozen=True)
class Report:
    results: tuple[CheckResult, ...]
    provenance: TrainingProvenance | None
    error: AicertError | None = None
    pcr_sources: Mapping[int, str] = field(default_factory=dict)
    """For each quoted PCR, what its value was checked against."""
    root_of_trust: RootOfTrust | None = None
    """What the AK chain ends in, once the ak-chain check passed."""
    lineage: tuple[Link, ...] = ()
    """This certificate and those it links, to where the chain ends (evaluations check)."""
    reaches_training: bool | None = None
    """Whether that chain ends in a training run; None until the evaluations check ran."""
    profile_matches: tuple[PcrMatch, ...] = ()
    """Per profile PCR: the variant that matched, or SKIPPED as per-VM (platform-profile check)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _State:
    """What earlier checks established, for later ones."""

    cert: Certificate
    policy: Policy
    provenance: TrainingProvenance | None = None
    pcr_sources: dict[int, str] = field(default_factory=dict)
    root_of_trust: RootOfTrust | None = None
    lineage: tuple[Link, ...] = ()
    reaches_training: bool | None = None
    profile_matches: tuple[PcrMatch, ...] = ()
    _ak: TpmPublic | None = None
    _attest: Attest | None = None

    @property
    def prov(self) -> TrainingProvenance:
        return _established(self.provenance, "statement")

    @property
    def ak(self) -> TpmPublic:
        return _established(self._ak, "ak-chain")

    @property
    def attest(self) -> Attest:
        return _established(self._attest, "quote-signature")

    def enforce(self, pcrs: Iterable[int], how: str) -> None:
        """Record one more thing ``pcrs`` were checked against."""
        for pcr in pcrs:
            before = self.pcr_sources.get(pcr, QUOTED_ONLY)
            self.pcr_sources[pcr] = how if before == QUOTED_ONLY else f"{before}; {how}"

    def report(self, results: list[CheckResult], error: AicertError | None) -> Report:
        return Report(
            tuple(results),
            self.provenance,
            error,
            self.pcr_sources,
            self.root_of_trust,
            self.lineage,
            self.reaches_training,
            self.profile_matches,
        )


def _established(value: _T | None, check: str) -> _T:
    # The checks run in a fixed order; a later one never runs before the one it needs.
    if value is None:
        raise RuntimeError(f"the {check} check has not established its result")
    return value


QUOTE_CHECKS = frozenset({"statement", "ak-chain", "quote-signature", "binding", "pcr-digest"})
"""The checks that establish the quoted PCR values alone (e.g. to record a platform profile)."""


def verify_certificate(
    cert: Certificate, policy: Policy, *, only: frozenset[str] | None = None
) -> Report:
    """Run the checks in order (all, or those named in ``only``); stop at the first failure."""
    state = _State(cert, policy)
    results: list[CheckResult] = []
    checks = _CHECKS if only is None else tuple(c for c in _CHECKS if c[0] in only)
    for name, check in checks:
        try:
            outcome = check(state)
        except AicertError as exc:
            results.append(CheckResult(name, Status.FAILED, exc.message))
            results.extend(CheckResult(n, Status.NOT_RUN, "") for n, _ in checks[len(results) :])
            return state.report(results, exc)
        status, detail = outcome if isinstance(outcome, tuple) else (Status.PASSED, outcome)
        results.append(CheckResult(name, status, detail))
    return state.report(results, None)


def _statement(state: _State) -> str:
    env = state.cert.envelope
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"envelope payloadType is {env.payload_type!r}, not in-toto")
    state.provenance = parse_statement(env.payload)
    return "in-toto Statement v1 with SLSA Provenance v1 predicate"


def _ak_chain(state: _State) -> str | tuple[Status, str]:
    tpm = state.cert.tpm
    state._ak = parse_tpm2b_public(tpm.ak_public)
    if tpm.nitro_document:
        return _nitro_ak(state)
    if not tpm.ak_certificates:
        if not state.policy.accept_uncertified_ak:
            raise AkChainError(
                "the certificate carries neither an AK certificate nor a Nitro attestation "
                "document: nothing ties its AK to a TPM; such a certificate verifies only "
                "with --accept-uncertified-ak, see docs/aws.md"
            )
        state.root_of_trust = UNCERTIFIED_AK
        return Status.NOT_ESTABLISHED, (
            "no AK certificate (accepted with --accept-uncertified-ak): the quote is signed "
            "by a key no one vouches for, so the checks below prove consistency, not a TPM"
        )
    at = _attestation_time(state)
    result = verify_ak_chain(
        tpm.ak_certificates[0], tpm.ak_certificates[1:], state.policy.trust_roots, at, state.ak
    )
    state.root_of_trust = root_of_trust(result.root)
    return (
        f"AK certificate valid at {at.isoformat()} under {state.root_of_trust.root}: "
        f"{state.root_of_trust.description}"
    )


def _nitro_ak(state: _State) -> str | tuple[Status, str]:
    """The AK vouched for by a NitroTPM attestation document (:mod:`.aws.nitro_ak`)."""
    verified = verify_nitro_ak(
        state.cert.tpm.nitro_document,
        state.ak,
        state.cert.agent_key_id,
        state.policy.trust_roots,
    )
    reference = state.policy.boot_reference
    if reference is None:
        if not state.policy.accept_uncertified_ak:
            raise AkChainError(
                f"the {describe(verified)} names this AK, but without a recipe (or --uki) "
                "nothing shows the instance booted this image; give --recipe, or "
                "--accept-uncertified-ak to go on without it"
            )
        state.root_of_trust = UNCERTIFIED_AK
        return Status.NOT_ESTABLISHED, (
            f"the {describe(verified)} names this AK, but with no recipe its SHA-384 boot "
            "PCRs could not be checked: nothing shows which image asked for it"
        )
    check_nitro_boot(verified, reference)
    root = verified.root
    state.root_of_trust = (
        RootOfTrust(
            True,
            root.subject.rfc4514_string(),
            "AWS Nitro attestation PKI (bundled with aicert-verify); AWS signs the "
            "NitroTPM's PCRs, not the AK, so the AK rests on the measured agent that named it",
        )
        if is_aws_root(root)
        else RootOfTrust(
            False,
            root.subject.rfc4514_string(),
            f"{LOCAL_TEST_PLATFORM} (root given with --trust-root)",
        )
    )
    return (
        f"AK named by the {describe(verified)}, signed under {state.root_of_trust.root}; "
        f"its SHA-384 boot PCRs match {reference.source}: {state.root_of_trust.description}"
    )


def root_of_trust(root: x509.Certificate) -> RootOfTrust:
    """What a chain ending in ``root`` proves about the TPM.

    Only the roots bundled with the verifier (Azure's vTPM root) are hardware roots of
    trust. Any root given with --trust-root is taken to be a local CA such as
    ``aicert-build``'s, whose keys lie unencrypted on the host that runs the tests:
    whoever holds that host can mint AK certificates, so the wording says so. The
    decision rests on the root itself, not on a marker the root could carry.
    """
    subject = root.subject.rfc4514_string()
    if any(root == bundled for bundled in bundled_roots()):
        return RootOfTrust(True, subject, "hardware root of trust (bundled with aicert-verify)")
    return RootOfTrust(False, subject, f"{LOCAL_TEST_PLATFORM} (root given with --trust-root)")


def _attestation_time(state: _State) -> datetime:
    # The statement's finishedOn, bound to the quote by the binding check below.
    raw = state.prov.finished_on
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FormatError(f"statement finishedOn {raw!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise FormatError(f"statement finishedOn {raw!r} has no time zone")
    return at.astimezone(UTC)


def _quote_signature(state: _State) -> str:
    state._attest = verify_quote_signature(
        state.cert.tpm.attest, state.cert.tpm.signature, state.ak
    )
    return "quote signed by the certified AK"


def _binding(state: _State) -> str:
    want = state.cert.envelope.pae_sha256()
    if state.attest.extra_data != want:
        raise BindingError(
            "the quote's extraData is not SHA-256 of the statement's DSSE encoding: "
            "statement and quote do not belong together"
        )
    return "quote extraData = SHA-256(DSSE PAE of the statement)"


def _envelope_signature(state: _State) -> str:
    key_id = agent_key_id(state.cert.agent_public_key)
    if key_id != state.prov.agent_key_sha256:
        raise EnvelopeSignatureError(
            "the certificate's agent key is not the one the statement names"
        )
    try:
        key = load_der_public_key(state.cert.agent_public_key)
    except (ValueError, UnsupportedAlgorithm):
        raise FormatError("agentPublicKey is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise EnvelopeSignatureError("the agent key is not an EC key")
    verify_envelope(state.cert.envelope, key, key_id)
    return f"signed by agent key {key_id[:16]}…"


def _nonce(state: _State) -> str | tuple[Status, str]:
    expected = state.policy.expected_nonce
    if expected is None:
        return Status.SKIPPED, "no --nonce given: freshness not established"
    if state.prov.nonce.lower() != expected.lower():
        raise NonceError(f"the statement's nonce {state.prov.nonce} is not the expected {expected}")
    return "statement carries the expected nonce"


def _pcr_digest(state: _State) -> str:
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
    state.pcr_sources.update(dict.fromkeys(selection.banks[0].pcrs, QUOTED_ONLY))
    state.enforce(ZERO_PCRS, "must be zero")
    return f"PCRs {_ranges(selection.banks[0].pcrs)} hash to the quoted digest"


def _firmware_log(state: _State) -> str | tuple[Status, str]:
    profile = state.policy.platform_profile
    if not state.cert.tpm.firmware_event_log:
        if profile is None:
            raise FirmwareLogError(
                "the certificate carries no firmware event log: if its platform gives none, "
                "pass the --platform-profile that says so"
            )
        if profile.firmware_log:
            raise FirmwareLogError(
                f"the certificate carries no firmware event log, but platform profile "
                f"{profile.name!r} gives one: the log was removed"
            )
        unchecked = _unchecked_without_log(state, profile.checked_pcrs)
        return Status.SKIPPED, (
            f"platform profile {profile.name!r} declares no firmware event log: "
            f"PCRs {_ranges(unchecked)} are checked against nothing"
        )
    log = parse_event_log(state.cert.tpm.firmware_event_log)
    check_event_digests(log)
    quoted = state.cert.tpm.pcrs
    logged = {e.pcr for e in log.events if e.event_type != EV_NO_ACTION}
    unquoted = sorted(logged - set(quoted))
    if unquoted:
        raise FirmwareLogError(
            f"the firmware log has events for PCRs {_ranges(unquoted)}, which the quote does "
            "not cover: nothing vouches for them"
        )
    covered = sorted(set(FIRMWARE_LOG_PCRS) | logged)
    verify_against_pcrs(log, SHA256, quoted, covered, unlogged=UNLOGGED_EXTENDS)
    state.enforce(FIRMWARE_LOG_PCRS, "replayed from the firmware log")
    os_pcrs = [pcr for pcr in covered if pcr not in FIRMWARE_LOG_PCRS]
    for pcr in os_pcrs:
        later = " + boot phases" if pcr in UNLOGGED_EXTENDS else ""
        state.enforce([pcr], f"replayed from the firmware log{later}")
    return (
        f"{len(log.events)} events replay to PCRs {_ranges(covered)}; "
        "data-derived digests recomputed"
    )


def _unchecked_without_log(state: _State, profile_pcrs: Iterable[int]) -> list[int]:
    """The firmware PCRs that neither the profile nor the boot reference will check."""
    reference = state.policy.boot_reference
    checked = set(profile_pcrs) | (set(reference.pcrs) if reference is not None else set())
    return [pcr for pcr in FIRMWARE_LOG_PCRS if pcr not in checked]


def _cel_log(state: _State) -> str:
    records = state.cert.tpm.cel_log
    verify_cel(records, state.cert.tpm.pcrs[15])
    match_statement(records, state.prov)
    state.enforce([15], "CEL log, matched to the statement")
    return f"{len(records)} records replay to PCR 15 and match the statement event by event"


def _gpus(state: _State) -> str | tuple[Status, str]:
    prov = state.prov
    policy = state.policy.gpu
    if not prov.gpus and not policy.require_gpus:
        return Status.SKIPPED, "no GPU recorded, and the policy requires none"
    return check_gpus(
        prov.gpus, policy, prov.nonce, prov.agent_key_sha256, _attestation_time(state)
    )


def _evaluations(state: _State) -> str | tuple[Status, str]:
    prov = state.prov
    if not prov.evaluation_only:
        if state.policy.linked_certificates:
            raise EvaluationError(
                "--linked-certificate given, but this is a training certificate, which links "
                "no other certificate"
            )
        state.lineage, state.reaches_training = (Link(THIS, "training run"),), True
    if not prov.evaluations:
        return Status.SKIPPED, "no evaluations in this certificate"
    subjects = {s.sha256 for s in prov.subjects}
    for ev in prov.evaluations:
        if ev.exit_status != 0:
            raise EvaluationError(f"evaluation {ev.name!r} exited with status {ev.exit_status}")
        if ev.weights_sha256 not in subjects:
            raise EvaluationError(
                f"evaluation {ev.name!r} ran on weights {ev.weights_sha256}, "
                "which are not this certificate's subject"
            )
    names = ", ".join(repr(ev.name) for ev in prov.evaluations)
    done = f"{len(prov.evaluations)} evaluation(s) ({names}) ran on the subject weights"
    if not prov.evaluation_only:
        return done
    weights = {d.sha256 for d in prov.dependencies if d.role == "weights"}
    if subjects != weights:
        raise EvaluationError("the subject of an evaluation-only job must be its weights input")
    _follow_links(state)
    reach = (
        "a training run"
        if state.reaches_training
        else "weights uploaded for evaluation, which no training certificate links"
    )
    return f"{done}; the chain of {len(state.lineage)} certificate(s) ends in {reach}"


def _follow_links(state: _State) -> None:
    """Verify the certificate this evaluation-only one links, and so on to the chain's end."""
    linked = [d for d in state.prov.dependencies if d.role == "certificate"]
    paths = state.policy.linked_certificates
    if not linked:
        if paths:
            raise EvaluationError("--linked-certificate given, but this certificate links none")
        if state.policy.require_training:
            raise EvaluationError(
                "--require-training: the chain of linked certificates ends in an "
                "evaluation-only certificate of uploaded weights; no training run certifies them"
            )
        state.lineage = (Link(THIS, "evaluation only, of uploaded weights"),)
        state.reaches_training = False
        return
    if not paths:
        raise EvaluationError(
            "this certificate links the certificate of its weights' origin: "
            "pass it with --linked-certificate"
        )
    if len(linked) != 1:
        raise EvaluationError(f"this certificate links {len(linked)} certificates; expected one")
    path = paths[0]
    if state.policy.tree_digest is None or state.policy.tree_digest(path) != linked[0].sha256:
        raise EvaluationError(f"{path} is not the certificate this one links")
    inner = verify_certificate(
        load_certificate(path),
        # Only the chain of evidence is re-checked; the files given belong to this certificate.
        replace(
            state.policy,
            expected_nonce=None,
            weights_path=None,
            linked_certificates=paths[1:],
            input_paths={},
            results_paths={},
        ),
    )
    if inner.error is not None:
        raise EvaluationError(
            f"the linked certificate {path} does not verify: {inner.error.message}"
        )
    inner_subjects = {s.sha256 for s in inner.provenance.subjects} if inner.provenance else set()
    if inner_subjects != {s.sha256 for s in state.prov.subjects}:
        raise EvaluationError(f"the linked certificate {path} certifies other weights")
    first, *rest = inner.lineage
    linked_link = replace(first, certificate=str(path), root_of_trust=inner.root_of_trust)
    state.lineage = (Link(THIS, "evaluation only"), linked_link, *rest)
    state.reaches_training = inner.reaches_training


def _boot_pcrs(state: _State) -> str | tuple[Status, str]:
    reference = state.policy.boot_reference
    if reference is None and state.policy.accept_any_image:
        return Status.SKIPPED, "--any-image: which OS image booted was NOT checked"
    if reference is None:
        raise BootPcrError(
            "no reference image: pass --recipe RECIPE.json or --uki UKI.efi "
            "to check which OS image booted"
        )
    reference.check(state.cert.tpm.pcrs)
    raw_log = state.cert.tpm.firmware_event_log
    image = check_image_identity(
        state.prov.image,
        reference.image,
        reference.source,
        parse_event_log(raw_log) if raw_log else None,
    )
    state.enforce(reference.pcrs, f"predicted by {reference.source}")
    note = f" (profile {reference.profile})" if reference.profile else ""
    return (
        f"PCRs {_ranges(sorted(reference.pcrs))} equal {reference.source}{note}; "
        f"the statement names its image ({image})"
    )


def _platform(state: _State) -> str | tuple[Status, str]:
    profile = state.policy.platform_profile
    if profile is None:
        return Status.SKIPPED, "no --platform-profile: firmware PCRs only replayed from the log"
    matches = check_profile(profile, state.cert.tpm.pcrs)
    state.profile_matches = tuple(matches)
    for match in matches:
        if match.skipped is None:
            state.enforce([match.pcr], f"platform profile {profile.name!r} variant {match.variant}")
        else:
            state.enforce(
                [match.pcr], f"SKIPPED by platform profile {profile.name!r}: {match.skipped_as}"
            )
    checked = [m for m in matches if m.skipped is None]
    unchecked = [m.describe() for m in matches if m.skipped is not None]
    if not checked:  # e.g. a profile whose values are not captured yet: never a pass
        return Status.SKIPPED, f"platform profile {profile.name!r}: " + "; ".join(unchecked)
    variants = ", ".join(f"PCR {m.pcr} #{m.variant}" for m in checked)
    detail = (
        f"PCRs {_ranges(m.pcr for m in checked)} match platform profile {profile.name!r} "
        f"(variants: {variants})"
    )
    return "; ".join([detail, *unchecked])


def _weights(state: _State) -> str | tuple[Status, str]:
    path = state.policy.weights_path
    if path is None or state.policy.tree_digest is None:
        return Status.SKIPPED, "no --weights given: files on disk not compared"
    trees = state.prov.subjects
    if len(trees) != 1:
        raise WeightsError(f"the statement certifies {len(trees)} weights trees; expected one")
    tree = trees[0]
    manifest = tree_manifest_of(path)
    if manifest.digest != tree.sha256:
        raise WeightsError(
            f"{path} has tree digest {manifest.digest}, but the certificate's weights "
            f"{tree.name!r} have {tree.sha256}"
        )
    # The tree digest binds every file; the subjects must also be exactly its files.
    expected = file_subjects(tree.name, manifest, plain_sha256s(path, manifest))
    claimed = {f.name: f.sha256 for f in state.prov.file_subjects}
    for subject in expected:
        if claimed.get(subject.name) != subject.sha256:
            raise WeightsError(
                f"subject {subject.name!r} does not carry the SHA-256 {subject.sha256} "
                f"of that file in {path}"
            )
    if len(claimed) != len(expected):
        raise WeightsError("the statement's subjects are not exactly the files of the weights")
    return (
        f"{path} matches weights {tree.name!r}: tree digest and the SHA-256 of "
        f"{len(expected)} file subject(s)"
    )


def _files(state: _State) -> str | tuple[Status, str]:
    """Inputs and evaluation results the auditor holds must be the ones measured."""
    inputs, results = state.policy.input_paths, state.policy.results_paths
    digest = state.policy.tree_digest
    if not (inputs or results) or digest is None:
        return Status.SKIPPED, "no --input or --results given"
    measured = {d.name: d.sha256 for d in state.prov.dependencies}
    measured |= {i.name: i.sha256 for ev in state.prov.evaluations for i in ev.inputs}
    for name, path in sorted(inputs.items()):
        if name not in measured:
            raise InputDigestError(f"the certificate measured no input named {name!r}")
        if digest(path) != measured[name]:
            raise InputDigestError(f"{path} is not the input {name!r} the certificate measured")
    by_eval = {ev.name: ev.results_sha256 for ev in state.prov.evaluations}
    for name, path in sorted(results.items()):
        if name not in by_eval:
            raise EvaluationError(f"the certificate has no evaluation named {name!r}")
        if digest(path) != by_eval[name]:
            raise EvaluationError(
                f"{path} is not the results file of evaluation {name!r}: it was altered"
            )
    return f"{len(inputs)} input(s) and {len(results)} results file(s) match their measurements"


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
    ("gpus", _gpus),
    ("evaluations", _evaluations),
    ("boot-pcrs", _boot_pcrs),
    ("platform-profile", _platform),
    ("weights", _weights),
    ("files", _files),
)
