"""Where the expected boot PCRs come from: a published recipe.json or a UKI's bytes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BootPcrError, FormatError
from ..input_file import MAX_RECIPE_BYTES, MAX_UKI_BYTES, read_input_file
from ..statement.canonical_json import parse_json
from ..tpm.pcr import SHA256, SHA384, HashAlgorithm
from .image_identity import ImageIdentity, identity_of_uki
from .uki import BOOT_PCRS, predict_boot_pcrs


@dataclass(frozen=True)
class BootReference:
    """Expected boot PCRs (4, 9, 11, 12, 13) and where they came from."""

    source: str
    pcrs: Mapping[int, bytes]
    profile: str = ""
    secure_boot_pcrs: Mapping[int, bytes] = field(default_factory=dict)
    """What some PCRs hold instead when the firmware booted with Secure Boot on.

    With Secure Boot on, systemd-stub has the firmware verify the kernel without a
    second LoadImage measurement, so PCR 4 lacks the kernel's Authenticode event.
    Accepting either is safe: the UKI's own Authenticode, in both, covers the kernel.
    """
    image: ImageIdentity = field(default_factory=ImageIdentity)
    """The image's root hash and UKI Authenticode digest, which the statement must name."""
    sha384: BankPrediction | None = None
    """The same PCRs in the SHA-384 bank, which NitroTPM's attestation document reports;
    None for a recipe written before they were predicted."""

    def check(self, quoted: Mapping[int, bytes]) -> None:
        """Raise BootPcrError at the first PCR that matches neither prediction."""
        for pcr, want in sorted(self.pcrs.items()):
            got = quoted.get(pcr)
            if got == want or (got is not None and got == self.secure_boot_pcrs.get(pcr)):
                continue
            raise BootPcrError(
                f"PCR {pcr} is {got.hex() if got else 'not quoted'}, "
                f"but {self.source} predicts {want.hex()}"
            )


@dataclass(frozen=True)
class BankPrediction:
    """Expected boot PCRs in one more bank, with their Secure Boot alternatives."""

    pcrs: Mapping[int, bytes]
    secure_boot_pcrs: Mapping[int, bytes]

    def mismatch(self, values: Mapping[int, bytes]) -> str | None:
        """The first PCR of ``values`` that matches neither prediction, described."""
        for pcr, want in sorted(self.pcrs.items()):
            got = values.get(pcr)
            if got != want and (got is None or got != self.secure_boot_pcrs.get(pcr)):
                return f"PCR {pcr} is {got.hex() if got else 'absent'}, predicted {want.hex()}"
        return None


def reference_from_uki(path: Path) -> BootReference:
    """Predict PCRs 4, 9, 11, 12, 13 from the UKI itself (e.g. an auditor's rebuild)."""
    data = read_input_file(path, "UKI", MAX_UKI_BYTES)
    try:
        prediction = predict_boot_pcrs(data)
        secure = predict_boot_pcrs(data, secure_boot=True)
        sha384 = predict_boot_pcrs(data, bank=SHA384).pcrs
        secure_sha384 = predict_boot_pcrs(data, secure_boot=True, bank=SHA384).pcrs
    except FormatError as exc:
        raise FormatError(f"UKI {path}: {exc.message}") from None
    return BootReference(
        source=f"UKI {path.name} (systemd-stub {prediction.stub_version})",
        pcrs=prediction.pcrs,
        secure_boot_pcrs=_differing(secure.pcrs, prediction.pcrs),
        image=identity_of_uki(data),
        sha384=BankPrediction(sha384, _differing(secure_sha384, sha384)),
    )


def _differing(pcrs: Mapping[int, bytes], base: Mapping[int, bytes]) -> dict[int, bytes]:
    return {p: v for p, v in pcrs.items() if v != base[p]}


def reference_from_recipe(path: Path) -> BootReference:
    """The PCRs that ``aicert-build image`` predicted into recipe.json's ``expected_pcrs``."""
    return reference_from_recipe_bytes(
        read_input_file(path, "recipe", MAX_RECIPE_BYTES), str(path), path.name
    )


def reference_from_recipe_bytes(data: bytes, path: str, name: str | None = None) -> BootReference:
    """:func:`reference_from_recipe` of bytes already read (e.g. from a reference bundle)."""
    doc = parse_json(data, f"recipe {path}")
    if not isinstance(doc, Mapping):
        raise FormatError(f"recipe {path} must be a JSON object")
    expected = doc.get("expected_pcrs")
    if not isinstance(expected, Mapping):
        raise FormatError(f"recipe {path} has no expected_pcrs object")
    where = f"recipe {path}: expected_pcrs"
    secure = expected.get("secure_boot_pcrs", {})
    inputs = doc.get("inputs")
    profile = inputs.get("profile", "") if isinstance(inputs, Mapping) else ""
    return BootReference(
        source=f"recipe {name or path}",
        pcrs=_hex_pcrs(expected.get("pcrs"), BOOT_PCRS, f"{where}.pcrs"),
        profile=profile if isinstance(profile, str) else "",
        secure_boot_pcrs=_hex_pcrs(secure, tuple(secure), f"{where}.secure_boot_pcrs")
        if isinstance(secure, Mapping)
        else _hex_pcrs(None, (), f"{where}.secure_boot_pcrs"),
        image=_recipe_image(doc.get("outputs"), f"recipe {path}: outputs"),
        sha384=_bank_prediction(expected.get("sha384"), SHA384, f"{where}.sha384"),
    )


def _bank_prediction(raw: object, bank: HashAlgorithm, where: str) -> BankPrediction | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be an object")
    secure = raw.get("secure_boot_pcrs")
    return BankPrediction(
        pcrs=_hex_pcrs(raw.get("pcrs"), BOOT_PCRS, f"{where}.pcrs", bank.digest_size),
        secure_boot_pcrs=_hex_pcrs(
            secure,
            tuple(secure) if isinstance(secure, Mapping) else (),
            f"{where}.secure_boot_pcrs",
            bank.digest_size,
        ),
    )


def _recipe_image(outputs: object, where: str) -> ImageIdentity:
    """``outputs.roothash`` and ``outputs.uki.authenticode_sha256``, both required."""
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("uki"), Mapping):
        raise FormatError(f"{where} must name the image's roothash and uki")
    roothash, uki = outputs.get("roothash"), outputs["uki"].get("authenticode_sha256")
    if not isinstance(roothash, str) or not isinstance(uki, str):
        raise FormatError(f"{where}: roothash and uki.authenticode_sha256 must be strings")
    return ImageIdentity(roothash, uki)


def _hex_pcrs(
    raw: object, required: tuple[object, ...], where: str, size: int = SHA256.digest_size
) -> dict[int, bytes]:
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be an object")
    pcrs: dict[int, bytes] = {}
    for key in required:
        value = raw.get(str(key))
        if not isinstance(value, str) or len(value) != 2 * size or not str(key).isdigit():
            raise FormatError(f"{where}[{key}] must be {2 * size} hex digits")
        try:
            pcrs[int(str(key))] = bytes.fromhex(value)
        except ValueError:
            raise FormatError(f"{where}[{key}] is not hex") from None
    return pcrs
