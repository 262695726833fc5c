"""Firmware reference profiles: the accepted values of the firmware PCRs per platform.

PCRs 0-3, 6 and 7 depend on the firmware, not on aicert's image. A cloud changes
them without notice (Azure's PCR 0 moves with each Hyper-V firmware update), so a
profile holds, per PCR, a set of accepted *variants*, each with its provenance
(when, on which VM size, region, host version it was captured), or declares the
PCR per-VM: a value no reference can predict (Azure's PCR 6), which the verifier
reports as skipped with the profile's reason, never as passed. A profile may also
declare a PCR *not captured yet*: the platform is known (its event-log policy is
stated) but no value of that PCR has been seen on it. Such a PCR is reported as
skipped, never passed, until a capture (``profile capture --add``) gives it
variants. PCRs 4 and 5 are never part of a profile: they hold the image's own boot
and its disk's GPT.

``firmwareLog`` is the platform's event-log policy: true, the firmware gives a TCG
log, so a certificate without one is refused (the log was removed) and the log is
replayed against the quoted PCRs 0-7; false, it gives none, and the PCRs that
neither the profile nor the boot reference check are reported as checked against
nothing.

A profile is a JSON file (docs/certificate-format.md, "Platform profiles")::

    {"format": "aicert-platform-profile/2", "name", "description", "firmwareLog",
     "pcrs": {"0": {"variants": [{"value", "captured", "source", "vmSize",
                                  "region", "hostVersion"}, ...]},
              "6": {"perVm": "why"}, "7": {"notCaptured": "how to capture it"}}}

Bundled ones live in ``verifier/data/platform-<name>.json``. A profile of the
first format (one value per PCR, no ``format`` member) is refused with the
command that converts it: ``aicert-build profile migrate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from ..errors import FormatError, InputError, PlatformProfileError
from ..input_file import MAX_PROFILE_BYTES, read_input_file
from ..json_fields import exact_members, lower_hex, pcr_index
from ..statement.canonical_json import parse_json

FORMAT = "aicert-platform-profile/2"
FIRMWARE_PCRS = (0, 1, 2, 3, 7)
"""What a capture records by default: the firmware PCRs of every platform seen so far."""
PROFILE_PCRS = (0, 1, 2, 3, 6, 7)
"""What a profile may name: the firmware PCRs, and PCR 6 (resume and platform events)."""
MAX_VARIANTS = 64


@dataclass(frozen=True)
class Provenance:
    """Where an accepted value was seen."""

    captured: str | None
    """RFC 3339 time of the evidence it came from; None when not recorded."""
    source: str
    """How it was obtained (the command, the certificate, how the value was proven)."""
    vm_size: str | None = None
    region: str | None = None
    host_version: str | None = None

    def describe(self) -> str:
        where = [v for v in (self.vm_size, self.region) if v]
        if self.host_version:
            where.append(f"host {self.host_version}")
        at = f"captured {self.captured}" if self.captured else "capture time not recorded"
        return f"{at}{', ' + ', '.join(where) if where else ''}"

    def to_json(self) -> dict[str, object]:
        return {
            "captured": self.captured,
            "source": self.source,
            "vmSize": self.vm_size,
            "region": self.region,
            "hostVersion": self.host_version,
        }


@dataclass(frozen=True)
class Variant:
    value: bytes
    provenance: Provenance

    def to_json(self) -> dict[str, object]:
        return {"value": self.value.hex(), **self.provenance.to_json()}


@dataclass(frozen=True)
class PcrRule:
    """One PCR of a profile: accepted variants, per-VM with the reason, or not captured
    yet with how to capture it."""

    variants: tuple[Variant, ...] = ()
    per_vm: str | None = None
    not_captured: str | None = None

    @property
    def unchecked(self) -> str | None:
        """Why this PCR is never compared (its report label and reason), or None."""
        if self.per_vm is not None:
            return f"per-VM ({self.per_vm})"
        if self.not_captured is not None:
            return f"not captured yet ({self.not_captured})"
        return None

    def to_json(self) -> dict[str, object]:
        if self.per_vm is not None:
            return {"perVm": self.per_vm}
        if self.not_captured is not None:
            return {"notCaptured": self.not_captured}
        return {"variants": [v.to_json() for v in self.variants]}


@dataclass(frozen=True)
class PcrMatch:
    """How one quoted PCR compared to its rule: the variant (1-based), or why it was not
    compared (per-VM, not captured yet) with the profile's reason."""

    pcr: int
    variant: int | None
    provenance: Provenance | None
    skipped: str | None
    skipped_as: str = "per-VM"
    """What kind of unchecked PCR it is: ``per-VM`` or ``not captured yet``."""

    def describe(self) -> str:
        if self.skipped is not None:
            return f"PCR {self.pcr} SKIPPED: {self.skipped_as} ({self.skipped})"
        assert self.provenance is not None  # noqa: S101 - set whenever variant is
        return f"PCR {self.pcr} variant {self.variant} ({self.provenance.describe()})"


@dataclass(frozen=True)
class PlatformProfile:
    name: str
    description: str
    pcrs: Mapping[int, PcrRule]
    firmware_log: bool
    """Whether the platform's firmware hands the OS an event log (QEMU/OVMF, GCP do).

    Only a profile that says it does not lets a certificate without one verify.
    """

    @property
    def checked_pcrs(self) -> list[int]:
        """The PCRs whose value the profile vouches for (not per-VM, not uncaptured)."""
        return sorted(p for p, rule in self.pcrs.items() if rule.unchecked is None)

    @property
    def per_vm_pcrs(self) -> list[int]:
        return sorted(p for p, rule in self.pcrs.items() if rule.per_vm is not None)

    @property
    def uncaptured_pcrs(self) -> list[int]:
        return sorted(p for p, rule in self.pcrs.items() if rule.not_captured is not None)

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "firmwareLog": self.firmware_log,
            "pcrs": {str(pcr): rule.to_json() for pcr, rule in sorted(self.pcrs.items())},
        }


def bundled_profile_names() -> list[str]:
    data = resources.files("aicert.verifier").joinpath("data")
    return sorted(
        p.name.removeprefix("platform-").removesuffix(".json")
        for p in data.iterdir()
        if p.name.startswith("platform-") and p.name.endswith(".json")
    )


def load_profile(name_or_path: str) -> PlatformProfile:
    """A bundled profile by name (e.g. ``qemu``) or a profile JSON file by path."""
    if name_or_path in bundled_profile_names():
        res = resources.files("aicert.verifier").joinpath("data", f"platform-{name_or_path}.json")
        return parse_profile(res.read_bytes(), name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(bundled_profile_names()) or "none"
        raise InputError(
            f"platform profile {name_or_path!r} is neither a bundled profile ({known}) nor a file"
        )
    return parse_profile(read_input_file(path, "platform profile", MAX_PROFILE_BYTES), str(path))


_MEMBERS = ("format", "name", "description", "firmwareLog", "pcrs")
_VARIANT_MEMBERS = ("value", "captured", "source", "vmSize", "region", "hostVersion")
_OLD_MEMBERS = frozenset({"name", "description", "obtained", "firmwareLog", "pcrs"})


def parse_profile(data: bytes, where: str) -> PlatformProfile:
    doc = parse_json(data, f"platform profile {where}")
    if not isinstance(doc, Mapping):
        raise FormatError(f"platform profile {where} must be a JSON object")
    if "format" not in doc and "obtained" in doc:
        raise FormatError(
            f"platform profile {where} has the old one-value-per-PCR format: convert it "
            f"with 'aicert-build profile migrate {where}' (each value becomes one variant)"
        )
    if doc.get("format") != FORMAT:
        raise FormatError(f'platform profile {where} must have "format": "{FORMAT}"')
    if not isinstance(doc.get("firmwareLog"), bool):
        raise FormatError(
            f'platform profile {where} needs "firmwareLog": true or false (whether the '
            "platform gives a firmware event log); add it, or capture the profile again"
        )
    exact_members(doc, _MEMBERS, f"platform profile {where}")
    name, description = doc["name"], doc["description"]
    if not isinstance(name, str) or not isinstance(description, str) or not name:
        raise FormatError(f"platform profile {where}: name and description must be strings")
    raw_pcrs = doc["pcrs"]
    if not isinstance(raw_pcrs, Mapping) or not raw_pcrs:
        raise FormatError(f"platform profile {where} has no pcrs object")
    pcrs: dict[int, PcrRule] = {}
    for key, raw in raw_pcrs.items():
        index = pcr_index(key)
        if index not in PROFILE_PCRS:
            raise FormatError(
                f"platform profile {where}: PCR {key!r} is not one a profile may name "
                f"({', '.join(map(str, PROFILE_PCRS))})"
            )
        pcrs[index] = _parse_rule(raw, f"platform profile {where}: PCR {key}")
    if all(rule.per_vm is not None for rule in pcrs.values()):
        raise FormatError(f"platform profile {where} declares every PCR per-VM: it checks nothing")
    return PlatformProfile(name, description, pcrs, firmware_log=doc["firmwareLog"])


def _parse_rule(raw: object, where: str) -> PcrRule:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise FormatError(
            f'{where} must be an object with one member, "variants", "perVm" or "notCaptured"'
        )
    if "perVm" in raw:
        reason = raw["perVm"]
        if not isinstance(reason, str) or not reason.strip():
            raise FormatError(f"{where}: perVm must say why the value is per-VM")
        return PcrRule(per_vm=reason)
    if "notCaptured" in raw:
        how = raw["notCaptured"]
        if not isinstance(how, str) or not how.strip():
            raise FormatError(f"{where}: notCaptured must say how the value is captured")
        return PcrRule(not_captured=how)
    exact_members(raw, ("variants",), where)
    raw_variants = raw["variants"]
    if not isinstance(raw_variants, list) or not 1 <= len(raw_variants) <= MAX_VARIANTS:
        raise FormatError(f"{where}: variants must be a list of 1 to {MAX_VARIANTS}")
    variants = tuple(
        _parse_variant(v, f"{where} variant {n}") for n, v in enumerate(raw_variants, 1)
    )
    if len({v.value for v in variants}) != len(variants):
        raise FormatError(f"{where}: the same value is listed as two variants")
    return PcrRule(variants=variants)


def _parse_variant(raw: object, where: str) -> Variant:
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be an object")
    exact_members(raw, _VARIANT_MEMBERS, where)
    value = lower_hex(raw["value"], 32, f"{where} value")
    source = raw["source"]
    if not isinstance(source, str) or not source:
        raise FormatError(f"{where}: source must be a non-empty string")
    optional = {}
    for member in ("captured", "vmSize", "region", "hostVersion"):
        item = raw[member]
        if item is not None and (not isinstance(item, str) or not item):
            raise FormatError(f"{where}: {member} must be a non-empty string or null")
        optional[member] = item
    captured = optional["captured"]
    if captured is not None:
        _check_time(captured, f"{where} captured")
    return Variant(
        value,
        Provenance(
            captured, source, optional["vmSize"], optional["region"], optional["hostVersion"]
        ),
    )


def _check_time(text: str, where: str) -> None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormatError(f"{where} {text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise FormatError(f"{where} {text!r} has no time zone")


def check_profile(profile: PlatformProfile, quoted: Mapping[int, bytes]) -> list[PcrMatch]:
    """Which variant each profile PCR matched; per-VM PCRs come back skipped, not matched."""
    matches: list[PcrMatch] = []
    for pcr, rule in sorted(profile.pcrs.items()):
        if rule.per_vm is not None:
            matches.append(PcrMatch(pcr, None, None, rule.per_vm))
            continue
        if rule.not_captured is not None:
            matches.append(PcrMatch(pcr, None, None, rule.not_captured, "not captured yet"))
            continue
        got = quoted.get(pcr)
        for n, variant in enumerate(rule.variants, 1):
            if got == variant.value:
                matches.append(PcrMatch(pcr, n, variant.provenance, None))
                break
        else:
            accepted = ", ".join(v.value.hex()[:16] + "…" for v in rule.variants)
            raise PlatformProfileError(
                f"PCR {pcr} is {got.hex() if got else 'not quoted'}, which is none of the "
                f"{len(rule.variants)} variant(s) platform profile {profile.name!r} accepts "
                f"({accepted}): a firmware the profile has not seen; if the platform's "
                "firmware was updated, get a current profile (docs/azure.md)"
            )
    return matches


# --------------------------------------------------------------------------- building


def merge_capture(
    profile: PlatformProfile, captured: PlatformProfile
) -> tuple[PlatformProfile, list[str]]:
    """``profile`` with the variants of ``captured`` added, and one line per change.

    A value already accepted stays as it is (its first provenance is kept); a PCR the
    profile declares per-VM stays per-VM; a PCR not captured yet gets its first variant.
    Both must agree on the firmware log, which is a property of the platform, not of
    one boot.
    """
    if profile.firmware_log != captured.firmware_log:
        raise InputError(
            f"platform profile {profile.name!r} says the platform "
            f"{'gives' if profile.firmware_log else 'gives no'} firmware event log, but this "
            f"certificate {'has' if captured.firmware_log else 'has none'}: another platform?"
        )
    pcrs = dict(profile.pcrs)
    changes: list[str] = []
    for pcr, new in sorted(captured.pcrs.items()):
        old = pcrs.get(pcr)
        if old is not None and old.per_vm is not None:
            continue
        have = old.variants if old is not None else ()
        added = tuple(v for v in new.variants if all(v.value != h.value for h in have))
        if len(have) + len(added) > MAX_VARIANTS:
            raise InputError(f"PCR {pcr} would have more than {MAX_VARIANTS} variants")
        if added:
            pcrs[pcr] = PcrRule(variants=have + added)
            changes.extend(
                f"PCR {pcr}: new variant {len(have) + i} {v.value.hex()}"
                for i, v in enumerate(added, 1)
            )
    return PlatformProfile(profile.name, profile.description, pcrs, profile.firmware_log), changes


def declare_per_vm(profile: PlatformProfile, reasons: Mapping[int, str]) -> PlatformProfile:
    pcrs = dict(profile.pcrs)
    for pcr, reason in reasons.items():
        if pcr not in PROFILE_PCRS:
            raise InputError(f"PCR {pcr} is not one a profile may name")
        if not reason.strip():
            raise InputError(f"say why PCR {pcr} is per-VM")
        pcrs[pcr] = PcrRule(per_vm=reason)
    return PlatformProfile(profile.name, profile.description, pcrs, profile.firmware_log)


def single_variant_profile(
    name: str,
    description: str,
    values: Mapping[int, bytes],
    provenance: Provenance,
    *,
    firmware_log: bool,
    per_vm: Sequence[tuple[int, str]] = (),
) -> PlatformProfile:
    """A profile of one capture: each value the one accepted variant."""
    rules = {pcr: PcrRule(variants=(Variant(v, provenance),)) for pcr, v in values.items()}
    profile = PlatformProfile(name, description, rules, firmware_log)
    return declare_per_vm(profile, dict(per_vm))


def migrate_old_profile(data: bytes, where: str) -> PlatformProfile:
    """A profile of the first format (one value per PCR) as one variant per PCR."""
    doc = parse_json(data, f"platform profile {where}")
    if not isinstance(doc, Mapping) or "format" in doc:
        raise FormatError(f"platform profile {where} is not in the old format")
    exact_members(doc, sorted(_OLD_MEMBERS), f"platform profile {where}")
    obtained, raw_pcrs = doc["obtained"], doc["pcrs"]
    if not isinstance(obtained, str) or not isinstance(raw_pcrs, Mapping):
        raise FormatError(f"platform profile {where}: obtained and pcrs are malformed")
    values: dict[int, bytes] = {}
    for key, value in raw_pcrs.items():
        index = pcr_index(key)
        if index not in FIRMWARE_PCRS:
            raise FormatError(f"platform profile {where}: PCR {key!r} is not a firmware PCR")
        values[index] = lower_hex(value, 32, f"platform profile {where}: PCR {key}")
    if not isinstance(doc["firmwareLog"], bool):
        raise FormatError(f'platform profile {where} needs "firmwareLog": true or false')
    profile = single_variant_profile(
        str(doc["name"]),
        str(doc["description"]),
        values,
        Provenance(None, obtained),
        firmware_log=doc["firmwareLog"],
    )
    # What is written must be what the verifier reads back.
    return parse_profile(_dumps(profile), where)


def _dumps(profile: PlatformProfile) -> bytes:
    return json.dumps(profile.to_json()).encode()
