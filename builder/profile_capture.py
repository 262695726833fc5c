"""Record a firmware reference profile from a certificate's verified quote.

Cloud firmware PCRs (Azure's Hyper-V UEFI) are not published, so the first
certificate from a platform, verified up to its quoted PCR values, becomes the
reference for later ones; a capture on another VM size, region or host after a
firmware update adds its values as further variants (``--add``). The values
come from the quote, not from the log: the log may be missing on some
platforms; where it is present it must replay to them.

Evidence in go-attestation's JSON form (``attest.PlatformParameters``: an AK, a quote
of the SHA-1 bank, the PCRs and the firmware log) is the only real evidence some
platforms offer (GCP's Shielded VM in go-attestation's test data). Its SHA-256
values are derived (:func:`capture_from_go_attestation`) where the log allows:
every event in the firmware PCRs must be determined by its data, so that the
digest a firmware extends into the SHA-256 bank follows from what it logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.boot.boot_reference import BootReference
from aicert.verifier.boot.firmware_replay import (
    check_event_digests,
    data_digest,
    initial_value,
    verify_against_pcrs,
)
from aicert.verifier.boot.platform_profile import (
    FIRMWARE_PCRS,
    PlatformProfile,
    Provenance,
    parse_profile,
    single_variant_profile,
)
from aicert.verifier.errors import FormatError, InputError
from aicert.verifier.json_fields import b64decode, exact_members
from aicert.verifier.logs.tcg_events import EV_NO_ACTION, event_type_name
from aicert.verifier.logs.tcg_log import EventLog, events_for_pcr, parse_event_log
from aicert.verifier.statement.canonical_json import parse_json
from aicert.verifier.statement.certificate import Certificate
from aicert.verifier.tpm.pcr import SHA1, SHA256, extend
from aicert.verifier.tpm.quote import verify_pcr_digest, verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import parse_tpmt_public
from aicert.verifier.verify import QUOTE_CHECKS, Policy, verify_certificate
from cryptography import x509


@dataclass(frozen=True)
class PlatformFacts:
    """What the certificate cannot tell about where it ran: given by whoever captures."""

    vm_size: str | None = None
    region: str | None = None
    host_version: str | None = None
    per_vm: Sequence[tuple[int, str]] = ()
    """PCRs whose value is per-VM, each with the reason."""


def capture_profile(
    cert: Certificate,
    source: str,
    name: str,
    trust_roots: tuple[x509.Certificate, ...],
    *,
    platform: PlatformFacts = PlatformFacts(),
    boot_reference: BootReference | None = None,
) -> PlatformProfile:
    """The firmware PCRs of ``cert``'s platform, once its quote is proven genuine.

    ``boot_reference`` is what a NitroTPM certificate's AK needs: its Nitro document
    vouches for the AK only with the image's SHA-384 boot PCRs.
    """
    report = verify_certificate(
        cert, Policy(trust_roots=trust_roots, boot_reference=boot_reference), only=QUOTE_CHECKS
    )
    if report.error is not None:
        raise report.error
    pcrs = {pcr: cert.tpm.pcrs[pcr] for pcr in FIRMWARE_PCRS}
    if cert.tpm.firmware_event_log:
        log = parse_event_log(cert.tpm.firmware_event_log)
        check_event_digests(log)
        verify_against_pcrs(log, SHA256, cert.tpm.pcrs, FIRMWARE_PCRS)
        how = "quoted values, and the firmware event log replays to them"
    else:
        how = "quoted values (the certificate carries no firmware event log)"
    assert report.provenance is not None  # noqa: S101 - a passed statement check sets it
    provenance = Provenance(
        captured=report.provenance.finished_on,
        source=(
            f"aicert-build profile capture from {source} (boot {report.provenance.boot_id}): {how}"
        ),
        vm_size=platform.vm_size,
        region=platform.region,
        host_version=platform.host_version,
    )
    return single_variant_profile(
        name,
        f"firmware PCRs of platform {name}",
        pcrs,
        provenance,
        # A platform whose first certificate has a log must keep giving one.
        firmware_log=bool(cert.tpm.firmware_event_log),
        per_vm=platform.per_vm,
    )


# go-attestation's crypto.Hash number for SHA-1 (Go's crypto package), as Log.PCRs uses it.
_GO_SHA1 = 3


def capture_from_go_attestation(
    data: bytes, where: str, name: str, description: str, source: str
) -> PlatformProfile:
    """The SHA-256 firmware PCRs of go-attestation evidence whose quote and log hold up.

    Checked first: the quote's signature under its AK (SHA-1 is accepted here: the
    evidence's quote is a SHA-1 one, and this only proves where reference values came
    from; certificates are never verified so), its pcrDigest over the logged SHA-1
    PCRs, every event's digest against its data, and the log's SHA-1 replay against
    the quoted PCRs 0-3 and 7. The AK itself is not certified by such evidence, and
    the source says so.
    """
    doc = parse_json(data, where)
    if not isinstance(doc, dict):
        raise FormatError(f"{where} must be a JSON object")
    exact_members(doc, ("Static", "AK", "Quote", "Log"), where)
    ak_doc, quote_doc, log_doc = doc["AK"], doc["Quote"], doc["Log"]
    if not all(isinstance(d, dict) for d in (ak_doc, quote_doc, log_doc)):
        raise FormatError(f"{where}: AK, Quote and Log must be objects")
    ak = parse_tpmt_public(b64decode(ak_doc.get("Public"), f"{where} AK.Public"))
    attest = verify_quote_signature(
        b64decode(quote_doc.get("Quote"), f"{where} Quote.Quote"),
        b64decode(quote_doc.get("Signature"), f"{where} Quote.Signature"),
        ak,
        allow_sha1=True,
    )
    banks = attest.pcr_selection.banks
    if len(banks) != 1 or banks[0].alg != SHA1:
        raise InputError(f"{where}: the quote must cover the SHA-1 bank alone")
    entries = log_doc.get("PCRs")
    if not isinstance(entries, list):
        raise FormatError(f"{where}: Log.PCRs must be a list")
    sha1_pcrs: dict[int, bytes] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("DigestAlg") != _GO_SHA1:
            raise FormatError(f"{where}: Log.PCRs[{n}] is not a SHA-1 PCR entry")
        index = entry.get("Index")
        if not isinstance(index, int) or index in sha1_pcrs:
            raise FormatError(f"{where}: Log.PCRs[{n}] has a bad or repeated Index")
        sha1_pcrs[index] = b64decode(entry.get("Digest"), f"{where} Log.PCRs[{n}]")
    quoted = {pcr: v for pcr, v in sha1_pcrs.items() if pcr in banks[0].pcrs}
    verify_pcr_digest(attest, quoted, alg=SHA1)
    log = parse_event_log(b64decode(log_doc.get("Raw"), f"{where} Log.Raw"))
    check_event_digests(log)
    verify_against_pcrs(log, SHA1, quoted, FIRMWARE_PCRS)
    values = {pcr: _derived_sha256(log, pcr, where) for pcr in FIRMWARE_PCRS}
    how = (
        "SHA-256 values recomputed from the event data of its SHA-1 firmware log; "
        "checked: the quote's signature under its AK (an AK this evidence does not "
        "certify), its pcrDigest over the logged SHA-1 PCRs, each event's digests "
        f"against its data, the log's replay to the quoted PCRs "
        f"{', '.join(map(str, FIRMWARE_PCRS))}"
    )
    return single_variant_profile(
        name,
        description,
        values,
        Provenance(captured=None, source=f"{source}: {how}"),
        firmware_log=True,
    )


def _derived_sha256(log: EventLog, pcr: int, where: str) -> bytes:
    value = initial_value(SHA256, pcr)
    for event in events_for_pcr(log, pcr):
        if event.event_type == EV_NO_ACTION:
            # A StartupLocality event would set PCR 0's start; none has been seen in
            # such evidence, and guessing it would make up a value.
            if pcr == 0:
                raise InputError(f"{where}: PCR 0 has an EV_NO_ACTION event; cannot derive it")
            continue
        digest = data_digest(event, SHA256)
        if digest is None:
            raise InputError(
                f"{where}: PCR {pcr} event {event.index} "
                f"({event_type_name(event.event_type)}) is not determined by its data: "
                "its SHA-256 digest cannot be derived; capture this platform from a "
                "certificate instead"
            )
        value = extend(SHA256, value, digest)
    return value


def write_profile(profile: PlatformProfile, out: Path) -> None:
    # What is written must be what the verifier reads back.
    text = json.dumps(profile.to_json(), indent=2) + "\n"
    parse_profile(text.encode(), str(out))
    try:
        out.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write the profile to {out}: {exc.strerror}") from None
