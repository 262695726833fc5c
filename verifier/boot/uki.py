"""Predict the boot PCRs (4, 9, 11, 12, 13) of a direct UKI boot from the UKI's bytes.

Each PCR comes with its ordered expected events, so a verifier can say which event of a
replayed log differs, not only that the final value does.

- PCR 4 (firmware, edk2 Tcg2Dxe/BDS): EV_EFI_ACTION "Calling EFI Application from Boot
  Option", EV_SEPARATOR, the Authenticode digest of the UKI, and -- with Secure Boot off
  only -- the Authenticode digest of the ``.linux`` section, which systemd-stub starts
  with LoadImage. With Secure Boot on, the stub (252, 254 and 257, secure-boot.c
  install_security_override) replaces the firmware's Security2 FileAuthentication hook
  for that LoadImage and approves the embedded kernel itself, so the firmware's
  measure-boot handler never sees it (systemd issue #36076). Both cases are reproduced
  on OVMF + swtpm by tests/test_uki_boot.py. Firmware without the Security2 protocol
  would measure the kernel anyway; such a platform needs secure_boot=False.
- PCR 11 (systemd-stub): for each measured section in the stub's canonical order,
  the digest of the name with its NUL, then of the loaded contents; then systemd-pcrphase's
  "enter-initrd", "leave-initrd", "sysinit", "ready" (userspace, not in the firmware log).
- PCR 9 (the kernel's EFI stub): the digest of the LoadOptions (UTF-16LE command line with
  its NUL), then of the initrd the stub hands over.
- PCR 12 and 13 stay zero: no command-line override, credentials, add-ons or sysexts.

Every formula is the same in each PCR bank with that bank's hash (the firmware and
the stub measure into all active banks), so ``bank`` picks SHA-384 for NitroTPM,
whose attestation document reports that bank only.

See :mod:`.systemd_stub` for the per-version stub behaviour and its assumptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..tpm.pcr import SHA256, HashAlgorithm, extend_all
from .authenticode import authenticode_digest, authenticode_digest_of
from .pe import parse_pe
from .systemd_stub import simulate_stub, stub_version

BOOT_PCRS = (4, 9, 11, 12, 13)
BOOT_OPTION_ACTION = b"Calling EFI Application from Boot Option"
PCRPHASE_WORDS = ("enter-initrd", "leave-initrd", "sysinit", "ready")


@dataclass(frozen=True)
class ExpectedEvent:
    """One measurement the boot is expected to make."""

    pcr: int
    event_type: str
    description: str
    digest: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "pcr": self.pcr,
            "type": self.event_type,
            "description": self.description,
            "digest": self.digest.hex(),
        }


@dataclass(frozen=True)
class BootPcrPrediction:
    """Predicted boot PCRs of one UKI in one bank, with their expected events."""

    stub_version: str
    secure_boot: bool
    measured_sections: tuple[str, ...]
    events: Mapping[int, tuple[ExpectedEvent, ...]] = field(hash=False)
    bank: HashAlgorithm = SHA256

    @property
    def pcrs(self) -> dict[int, bytes]:
        return {
            pcr: extend_all(self.bank, [e.digest for e in self.events[pcr]]) for pcr in BOOT_PCRS
        }

    def to_json(self) -> dict[str, Any]:
        pcrs = self.pcrs
        return {
            "stub_version": self.stub_version,
            "secure_boot": self.secure_boot,
            "measured_sections": list(self.measured_sections),
            "pcrs": {str(pcr): pcrs[pcr].hex() for pcr in BOOT_PCRS},
            "events": {str(pcr): [e.to_json() for e in self.events[pcr]] for pcr in BOOT_PCRS},
        }


@dataclass(frozen=True)
class BootDigests:
    """The digests the boot PCR formulas combine, however they were obtained (computed
    from a UKI, or read from a real boot's event log)."""

    uki_authenticode: bytes
    linux_authenticode: bytes
    sections: tuple[tuple[str, bytes], ...]
    """(section name, digest of its loaded contents) in the stub's measurement order."""
    load_options: bytes
    """Digest of the LoadOptions the kernel receives (UTF-16LE command line and NUL)."""
    initrd: bytes
    """Digest of the initrd the kernel receives."""


def expected_events(
    digests: BootDigests, *, secure_boot: bool, bank: HashAlgorithm = SHA256
) -> dict[int, tuple[ExpectedEvent, ...]]:
    """The ordered events of PCRs 4, 9, 11, 12 and 13 on a direct UKI boot, in ``bank``
    (which ``digests`` must be of)."""
    h = bank.hash
    pcr4: tuple[ExpectedEvent, ...] = (
        ExpectedEvent(4, "EV_EFI_ACTION", BOOT_OPTION_ACTION.decode(), h(BOOT_OPTION_ACTION)),
        ExpectedEvent(4, "EV_SEPARATOR", "separator", h(bytes(4))),
        ExpectedEvent(
            4,
            "EV_EFI_BOOT_SERVICES_APPLICATION",
            "Authenticode of the UKI",
            digests.uki_authenticode,
        ),
    )
    if not secure_boot:
        pcr4 += (
            ExpectedEvent(
                4,
                "EV_EFI_BOOT_SERVICES_APPLICATION",
                "Authenticode of the .linux section (kernel)",
                digests.linux_authenticode,
            ),
        )
    pcr11: list[ExpectedEvent] = []
    for name, data_digest in digests.sections:
        pcr11.append(ExpectedEvent(11, "EV_IPL", f"{name} section name", h(name.encode() + b"\0")))
        pcr11.append(ExpectedEvent(11, "EV_IPL", f"{name} section data", data_digest))
    for word in PCRPHASE_WORDS:
        pcr11.append(ExpectedEvent(11, "systemd-pcrphase", f"boot phase {word}", h(word.encode())))
    pcr9 = (
        ExpectedEvent(9, "EV_EVENT_TAG", "kernel command line", digests.load_options),
        ExpectedEvent(9, "EV_EVENT_TAG", "initrd", digests.initrd),
    )
    return {4: pcr4, 9: pcr9, 11: tuple(pcr11), 12: (), 13: ()}


def predict_boot_pcrs(
    uki: bytes, *, secure_boot: bool = False, bank: HashAlgorithm = SHA256
) -> BootPcrPrediction:
    """Predict PCRs 4, 9, 11, 12 and 13 in ``bank`` of booting ``uki`` from the firmware.

    ``secure_boot`` is the platform's UEFI Secure Boot state: it decides whether the
    kernel's Authenticode digest appears in PCR 4 (see the module docstring). The
    QEMU/OVMF test platform boots with it off; Azure Trusted Launch usually has it on.
    """
    pe = parse_pe(uki)
    version = stub_version(pe, uki)
    boot = simulate_stub(pe, uki, version)
    h = bank.hash
    digests = BootDigests(
        uki_authenticode=authenticode_digest_of(pe, uki, bank),
        # The stub starts the kernel with LoadImage on the loaded bytes it measured, and
        # the firmware measures that buffer's Authenticode digest.
        linux_authenticode=authenticode_digest(boot.sections[".linux"], bank),
        sections=tuple((name, h(boot.sections[name])) for name in boot.measured_sections),
        load_options=h((boot.cmdline + "\0").encode("utf-16-le")),
        initrd=h(boot.initrd),
    )
    return BootPcrPrediction(
        stub_version=version,
        secure_boot=secure_boot,
        measured_sections=boot.measured_sections,
        events=MappingProxyType(expected_events(digests, secure_boot=secure_boot, bank=bank)),
        bank=bank,
    )
