"""Where the expected boot PCRs come from: a published recipe.json or a UKI's bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .canonical_json import parse_json
from .errors import FormatError, InputError
from .uki import BOOT_PCRS, predict_boot_pcrs
from .verify import BootReference

MAX_UKI_BYTES = 512 * 1024 * 1024


def reference_from_uki(path: Path) -> BootReference:
    """Predict PCRs 4, 9, 11, 12, 13 from the UKI itself (e.g. an auditor's rebuild)."""
    data = _read(path, "UKI", MAX_UKI_BYTES)
    prediction = predict_boot_pcrs(data)
    return BootReference(
        source=f"UKI {path.name} (systemd-stub {prediction.stub_version})",
        pcrs=prediction.pcrs,
    )


def reference_from_recipe(path: Path) -> BootReference:
    """The ``expected_pcrs`` that ``aicert-build image`` recorded in recipe.json."""
    doc = parse_json(_read(path, "recipe", 16 * 1024 * 1024), f"recipe {path}")
    if not isinstance(doc, Mapping):
        raise FormatError(f"recipe {path} must be a JSON object")
    raw = doc.get("expected_pcrs")
    if not isinstance(raw, Mapping):
        raise FormatError(f"recipe {path} has no expected_pcrs object")
    pcrs: dict[int, bytes] = {}
    for pcr in BOOT_PCRS:
        value = raw.get(str(pcr))
        if not isinstance(value, str) or len(value) != 64:
            raise FormatError(f"recipe {path}: expected_pcrs[{pcr}] must be 64 hex digits")
        try:
            pcrs[pcr] = bytes.fromhex(value)
        except ValueError:
            raise FormatError(f"recipe {path}: expected_pcrs[{pcr}] is not hex") from None
    profile = doc.get("profile", "")
    return BootReference(
        source=f"recipe {path.name}",
        pcrs=pcrs,
        profile=profile if isinstance(profile, str) else "",
    )


def _read(path: Path, what: str, limit: int) -> bytes:
    try:
        if path.stat().st_size > limit:
            raise InputError(f"{what} {path} is larger than {limit} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
