"""Which OS image ran the job, as the agent inside it can know it, and checking that claim.

The agent records two facts in the statement (``runDetails.builder.builderDependencies``):

* the **dm-verity root hash** of its root file system, read from ``roothash=`` on the
  kernel command line (``/proc/cmdline``), which the UKI's ``.cmdline`` section sets;
* the **Authenticode SHA-256 of the UKI**, read from the firmware event log: the first
  ``EV_EFI_BOOT_SERVICES_APPLICATION`` event of PCR 4 is the firmware's measurement of
  the UKI it started. Without a firmware log (some platforms expose none) it is unknown.

The recipe's own digest cannot be in the statement: the recipe names the UKI, which holds
the agent, so the image cannot know it. The verifier links the two instead: both facts must
equal the recipe's ``outputs`` (or what the given UKI yields), and the UKI digest must also
be the one in the replayed firmware log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..errors import FormatError, ImageIdentityError
from ..logs.tcg_events import EV_EFI_BOOT_SERVICES_APPLICATION
from ..logs.tcg_log import EventLog, events_for_pcr
from ..tpm.pcr import SHA256
from .authenticode import authenticode_digest
from .pe import find_section, parse_pe

_ROOTHASH: Final = re.compile(r"(?:^|\s)roothash=(\S*)")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
MAX_CMDLINE_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class ImageIdentity:
    """The booted image's dm-verity root hash and UKI Authenticode SHA-256 (hex; "" = unknown)."""

    roothash: str = ""
    uki_authenticode: str = ""

    def __post_init__(self) -> None:
        for name, value in (("roothash", self.roothash), ("UKI digest", self.uki_authenticode)):
            if value and not _HEX64.fullmatch(value):
                raise FormatError(f"image {name} must be 64 lowercase hex digits")


def roothash_from_cmdline(cmdline: str) -> str:
    """The ``roothash=`` value of a kernel command line; "" if it has none.

    A command line with two root hashes, or one that is not 64 lowercase hex digits, is
    refused: which one the kernel used would be ambiguous.
    """
    if len(cmdline.encode("utf-8", errors="replace")) > MAX_CMDLINE_BYTES:
        raise FormatError(f"kernel command line longer than {MAX_CMDLINE_BYTES} bytes")
    found = _ROOTHASH.findall(cmdline)
    if not found:
        return ""
    if len(found) > 1:
        raise FormatError("kernel command line has more than one roothash=")
    if not _HEX64.fullmatch(found[0]):
        raise FormatError("kernel command line roothash= is not 64 lowercase hex digits")
    return str(found[0])


def uki_cmdline(uki: bytes) -> str:
    """The command line in a UKI's ``.cmdline`` section (up to its first NUL)."""
    pe = parse_pe(uki)
    section = find_section(pe, b".cmdline")
    if section is None:
        raise FormatError("the UKI has no .cmdline section")
    raw = uki[section.raw_offset : section.raw_offset + min(section.virtual_size, section.raw_size)]
    try:
        return raw.split(b"\0", 1)[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FormatError("the UKI's .cmdline section is not UTF-8") from None


def identity_of_uki(uki: bytes) -> ImageIdentity:
    """What an agent booted from ``uki`` records: its root hash and Authenticode digest."""
    return ImageIdentity(roothash_from_cmdline(uki_cmdline(uki)), authenticode_digest(uki).hex())


def uki_authenticode_from_log(log: EventLog) -> str:
    """The SHA-256 digest of PCR 4's first boot application event (the UKI); "" if none."""
    for event in events_for_pcr(log, 4):
        if event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION:
            digest = event.digests.get(SHA256.tpm_id)
            return digest.hex() if digest is not None else ""
    return ""


def check_image_identity(
    claimed: ImageIdentity, reference: ImageIdentity, source: str, log: EventLog | None
) -> str:
    """Raise ImageIdentityError unless the statement's image is the reference image.

    Every fact the reference knows must be claimed and equal; the claimed UKI digest must
    also be the firmware log's (when there is a log, the agent must have claimed it).
    """
    if reference.roothash:
        if not claimed.roothash:
            raise ImageIdentityError(
                f"the statement names no root hash, but {source} has roothash {reference.roothash}"
            )
        if claimed.roothash != reference.roothash:
            raise ImageIdentityError(
                f"the statement's image root hash {claimed.roothash} is not "
                f"{source}'s {reference.roothash}"
            )
    logged = uki_authenticode_from_log(log) if log is not None else ""
    if logged and claimed.uki_authenticode != logged:
        raise ImageIdentityError(
            f"the statement's UKI digest {claimed.uki_authenticode or '(none)'} is not the "
            f"firmware log's {logged}"
        )
    # Without a firmware log (some platforms) the agent cannot know the UKI digest.
    if (
        reference.uki_authenticode
        and claimed.uki_authenticode
        and claimed.uki_authenticode != reference.uki_authenticode
    ):
        raise ImageIdentityError(
            f"the statement's UKI digest {claimed.uki_authenticode} is not "
            f"{source}'s {reference.uki_authenticode}"
        )
    parts = [f"root hash {claimed.roothash[:16]}…"] if claimed.roothash else []
    if claimed.uki_authenticode:
        parts.append(f"UKI {claimed.uki_authenticode[:16]}…")
    return " and ".join(parts) or "no image facts"
