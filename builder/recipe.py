"""recipe.json: every input of an image build and every output, with the predicted PCRs.

An auditor rebuilds from the inputs and compares the outputs; the verifier checks
a boot's PCRs 4, 9, 11, 12 and 13 against ``expected_pcrs``, which verifier code
computed from the final UKI bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.verifier.boot.authenticode import authenticode_digest
from aicert.verifier.boot.image_identity import roothash_from_cmdline, uki_cmdline
from aicert.verifier.boot.uki import predict_boot_pcrs
from aicert.verifier.errors import FormatError, InputError
from aicert.verifier.input_file import MAX_RECIPE_BYTES, read_input_file
from aicert.verifier.tpm.pcr import SHA384

RECIPE_FORMAT = 1
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def roothash_of(uki: bytes) -> str:
    roothash = roothash_from_cmdline(uki_cmdline(uki))
    if not roothash:
        raise FormatError("the UKI's command line has no roothash= (the root is not verity)")
    return roothash


@dataclass(frozen=True)
class BuildInputs:
    """What went into a build (the ``inputs`` object of recipe.json)."""

    profile: str
    mkosi_version: str
    tools_tree: dict[str, str]
    mirror: str
    security_mirror: str | None
    source_date_epoch: int
    seed: str
    config_sha256: str
    source: dict[str, Any]
    locked: bool
    packages: dict[str, dict[str, str]]
    # builder/module_signing.py's record; None: the image's own modules (if any) are unsigned.
    module_signing: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "mkosi_version": self.mkosi_version,
            "tools_tree": self.tools_tree,
            "mirror": self.mirror,
            "security_mirror": self.security_mirror,
            "source_date_epoch": self.source_date_epoch,
            "seed": self.seed,
            "config_sha256": self.config_sha256,
            "source": self.source,
            "package_lock_enforced": self.locked,
            "packages": self.packages,
            "module_signing": self.module_signing,
        }


def describe_outputs(disk: Path, uki_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``outputs`` and ``expected_pcrs`` objects for a finished disk and UKI."""
    uki = uki_path.read_bytes()
    prediction = predict_boot_pcrs(uki)
    secure_boot = predict_boot_pcrs(uki, secure_boot=True).pcrs
    outputs = {
        "disk": {"file": disk.name, "sha256": sha256_file(disk), "size": disk.stat().st_size},
        "uki": {
            "file": uki_path.name,
            "sha256": hashlib.sha256(uki).hexdigest(),
            "authenticode_sha256": authenticode_digest(uki).hex(),
            "size": len(uki),
            "cmdline": uki_cmdline(uki),
        },
        "roothash": roothash_of(uki),
    }
    expected = prediction.to_json()
    # Under Secure Boot (Azure), the firmware verifies the kernel instead of measuring it.
    expected["secure_boot_pcrs"] = _differing(secure_boot, prediction.pcrs)
    # NitroTPM's attestation document reports the SHA-384 bank only (docs/aws.md).
    sha384 = predict_boot_pcrs(uki, bank=SHA384).pcrs
    expected["sha384"] = {
        "pcrs": {str(pcr): value.hex() for pcr, value in sha384.items()},
        "secure_boot_pcrs": _differing(
            predict_boot_pcrs(uki, secure_boot=True, bank=SHA384).pcrs, sha384
        ),
    }
    return outputs, expected


def _differing(pcrs: dict[int, bytes], base: dict[int, bytes]) -> dict[str, str]:
    return {str(pcr): value.hex() for pcr, value in pcrs.items() if value != base[pcr]}


def recipe_json(inputs: BuildInputs, outputs: dict[str, Any], pcrs: dict[str, Any]) -> str:
    body = {
        "format": RECIPE_FORMAT,
        "inputs": inputs.to_json(),
        "outputs": outputs,
        "expected_pcrs": pcrs,
    }
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def load_recipe(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path} does not exist (not an aicert-build image directory?)")
    data = read_input_file(path, "recipe", MAX_RECIPE_BYTES)
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read recipe {path}: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != RECIPE_FORMAT:
        raise FormatError(f"{path} is not a format-{RECIPE_FORMAT} aicert recipe")
    return body
