"""Record a firmware reference profile from a certificate's verified quote.

Cloud firmware PCRs (Azure's Hyper-V UEFI) are not published, so the first
certificate from a platform, verified up to its quoted PCR values, becomes the
reference for later ones; a capture on another VM size, region or host after a
firmware update adds its values as further variants (``--add``). The values
come from the quote, not from the log: the log may be missing on some
platforms; where it is present it must replay to them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aicert.verifier.boot.firmware_replay import check_event_digests, verify_against_pcrs
from aicert.verifier.boot.platform_profile import (
    FIRMWARE_PCRS,
    PlatformProfile,
    Provenance,
    parse_profile,
    single_variant_profile,
)
from aicert.verifier.errors import InputError
from aicert.verifier.logs.tcg_log import parse_event_log
from aicert.verifier.statement.certificate import Certificate
from aicert.verifier.tpm.pcr import SHA256
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
) -> PlatformProfile:
    """The firmware PCRs of ``cert``'s platform, once its quote is proven genuine."""
    report = verify_certificate(cert, Policy(trust_roots=trust_roots), only=QUOTE_CHECKS)
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


def write_profile(profile: PlatformProfile, out: Path) -> None:
    # What is written must be what the verifier reads back.
    text = json.dumps(profile.to_json(), indent=2) + "\n"
    parse_profile(text.encode(), str(out))
    try:
        out.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write the profile to {out}: {exc.strerror}") from None
