"""Firmware reference profiles: expected values of the firmware PCRs per platform.

PCRs 0-3 and 7 depend on the firmware, not on aicert's image: QEMU/OVMF and
Azure Trusted Launch each get a profile recorded from a reference boot. PCR 5 is
not part of a profile: it holds the boot disk's GPT, which changes with the image,
so it is only replayed from the firmware log. A profile
is a JSON file ``{"name", "description", "obtained", "firmwareLog", "pcrs": {"0": hex, ...}}``
(``firmwareLog``: whether the platform gives a firmware event log);
bundled ones live in ``verifier/data/platform-<name>.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .canonical_json import parse_json
from .errors import FormatError, InputError, PlatformProfileError
from .input_file import MAX_PROFILE_BYTES, read_input_file
from .json_fields import exact_members, lower_hex, pcr_index

FIRMWARE_PCRS = (0, 1, 2, 3, 7)


@dataclass(frozen=True)
class PlatformProfile:
    name: str
    description: str
    obtained: str
    pcrs: Mapping[int, bytes]
    firmware_log: bool
    """Whether the platform's firmware hands the OS an event log (QEMU/OVMF, GCP do).

    Only a profile that says it does not lets a certificate without one verify.
    """

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "obtained": self.obtained,
            "firmwareLog": self.firmware_log,
            "pcrs": {str(pcr): value.hex() for pcr, value in sorted(self.pcrs.items())},
        }


def bundled_profile_names() -> list[str]:
    data = resources.files(__package__).joinpath("data")
    return sorted(
        p.name.removeprefix("platform-").removesuffix(".json")
        for p in data.iterdir()
        if p.name.startswith("platform-") and p.name.endswith(".json")
    )


def load_profile(name_or_path: str) -> PlatformProfile:
    """A bundled profile by name (e.g. ``qemu``) or a profile JSON file by path."""
    if name_or_path in bundled_profile_names():
        res = resources.files(__package__).joinpath("data", f"platform-{name_or_path}.json")
        return parse_profile(res.read_bytes(), name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(bundled_profile_names()) or "none"
        raise InputError(
            f"platform profile {name_or_path!r} is neither a bundled profile ({known}) nor a file"
        )
    return parse_profile(read_input_file(path, "platform profile", MAX_PROFILE_BYTES), str(path))


_MEMBERS = ("name", "description", "obtained", "firmwareLog", "pcrs")


def parse_profile(data: bytes, where: str) -> PlatformProfile:
    doc = parse_json(data, f"platform profile {where}")
    if not isinstance(doc, Mapping):
        raise FormatError(f"platform profile {where} must be a JSON object")
    if not isinstance(doc.get("firmwareLog"), bool):
        raise FormatError(
            f'platform profile {where} needs "firmwareLog": true or false (whether the '
            "platform gives a firmware event log); add it, or capture the profile again"
        )
    exact_members(doc, _MEMBERS, f"platform profile {where}")
    raw_pcrs = doc["pcrs"]
    if not isinstance(raw_pcrs, Mapping) or not raw_pcrs:
        raise FormatError(f"platform profile {where} has no pcrs object")
    pcrs: dict[int, bytes] = {}
    for key, value in raw_pcrs.items():
        index = pcr_index(key)
        if index not in FIRMWARE_PCRS:
            raise FormatError(f"platform profile {where}: PCR {key!r} is not a firmware PCR")
        pcrs[index] = lower_hex(value, 32, f"platform profile {where}: PCR {key}")
    name, description, obtained = doc["name"], doc["description"], doc["obtained"]
    if not all(isinstance(v, str) for v in (name, description, obtained)):
        raise FormatError(f"platform profile {where}: name, description, obtained must be strings")
    return PlatformProfile(
        str(name), str(description), str(obtained), pcrs, firmware_log=doc["firmwareLog"]
    )


def check_profile(profile: PlatformProfile, quoted: Mapping[int, bytes]) -> None:
    for pcr, want in sorted(profile.pcrs.items()):
        got = quoted.get(pcr)
        if got != want:
            raise PlatformProfileError(
                f"PCR {pcr} is {got.hex() if got else 'not quoted'}, but platform profile "
                f"{profile.name!r} expects {want.hex()}"
            )
