"""Signatures for the kernel modules an image build compiles (the gpu profile's nvidia).

With Secure Boot on, Debian's kernel locks itself down and loads only modules signed by
Debian's key or by a certificate in the UEFI db (docs/gpu.md). A build therefore either:

- signs them with the project's Secure Boot key (``--module-signing-key`` and
  ``--module-signing-cert``): the certificate whose db entry lets the signed UKI boot
  lets these modules load too; or
- grafts the signatures an earlier build published (``--module-signatures``), so anyone
  can rebuild a signed image, byte for byte, without the private key.

Either way the build script (``image/mkosi.gpu/nvidia-modules.build.chroot``) runs
``image/mkosi.gpu/sign_modules.py``, the one implementation, and puts the signatures
file next to the modules in the measured root; the build publishes a copy of it as
``module-signatures.json`` beside disk.raw. The key reaches mkosi's build sources (a
directory of the rendered configuration, readable by its owner only) and nothing else:
build sources are not copied into the image, and the rendered configuration is deleted
when the build ends.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aicert.builder.mkosi import profile_parts
from aicert.verifier.errors import InputError, ToolError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from cryptography import x509
from cryptography.hazmat.primitives import serialization

SIGNER = Path("mkosi.gpu/sign_modules.py")
"""The signer, relative to the image directory (and to the rendered configuration)."""
BUILD_SOURCE = "module-signing"
"""The directory of the rendered configuration the build script finds the key in."""
SIGNATURES_FILE = "module-signatures.json"
SIGNATURES_FORMAT = "aicert-module-signatures/1"
MAX_SIGNATURES_BYTES = 1 << 20


@dataclass(frozen=True)
class SigningKey:
    """Sign with this key (an unencrypted RSA PEM) and its certificate."""

    key: Path
    certificate: Path


@dataclass(frozen=True)
class PublishedSignatures:
    """Graft the signatures of this ``module-signatures.json``."""

    path: Path


ModuleSigning = SigningKey | PublishedSignatures


def module_signing_from_options(
    key: Path | None, certificate: Path | None, signatures: Path | None
) -> ModuleSigning | None:
    """The signing the command line asked for, if any; refuses half or both of it."""
    if signatures is not None:
        if key is not None or certificate is not None:
            raise InputError(
                "--module-signatures and --module-signing-key/--module-signing-cert exclude "
                "each other: sign with a key, or graft published signatures"
            )
        return PublishedSignatures(signatures)
    if key is None and certificate is None:
        return None
    if key is None or certificate is None:
        raise InputError("--module-signing-key and --module-signing-cert go together")
    return SigningKey(key, certificate)


def require_module_profile(profile: str) -> None:
    """Only the gpu profiles compile modules of their own; the others have none to sign."""
    if "gpu" not in profile_parts(profile):
        raise InputError(
            f"profile {profile!r} builds no kernel modules to sign; module signing is for "
            "the gpu profiles (gpu, azure+gpu)"
        )


def check_module_signing(signing: ModuleSigning, profile: str, image_dir: Path) -> str:
    """Refuse what the build could not use, before it starts; the certificate's SHA-256."""
    require_module_profile(profile)
    if isinstance(signing, PublishedSignatures):
        return _signatures_certificate(signing.path)
    read_input_file(signing.key, "module signing key", MAX_PEM_BYTES)
    signer = _load_signer(image_dir / SIGNER)
    try:
        signer.load_signer(signing.key, signing.certificate)
    except signer.SigningError as exc:
        raise InputError(str(exc)) from None
    return _certificate_sha256(signing.certificate)


def stage_module_signing(signing: ModuleSigning, config: Path) -> None:
    """Put the key (or the signatures) where the build script looks for them."""
    staged = config / BUILD_SOURCE
    staged.mkdir(mode=0o700)
    if isinstance(signing, PublishedSignatures):
        _copy_private(signing.path, staged / SIGNATURES_FILE)
    else:
        _copy_private(signing.key, staged / "key.pem")
        _copy_private(signing.certificate, staged / "cert.pem")


def recipe_entry(
    certificate_sha256: str, signing: ModuleSigning, published: Path
) -> dict[str, Any]:
    """The recipe's record of the signatures the build put into the image."""
    if not published.is_file():
        raise ToolError("the image build did not sign its kernel modules (no signatures file)")
    if _signatures_certificate(published) != certificate_sha256:
        raise ToolError("the image build's module signatures name another certificate")
    return {
        "certificate_sha256": certificate_sha256,
        "source": "key" if isinstance(signing, SigningKey) else "published signatures",
        "signatures_sha256": hashlib.sha256(published.read_bytes()).hexdigest(),
    }


def _load_signer(path: Path) -> ModuleType:
    """The build's own signer (a script of the image directory, not a package module), so
    that the key is checked here exactly as the build will use it."""
    spec = importlib.util.spec_from_file_location("aicert_image_sign_modules", path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot load the module signer {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_private(source: Path, target: Path) -> None:
    target.touch(mode=0o600)
    shutil.copyfile(source, target)


def _certificate_sha256(path: Path) -> str:
    data = read_input_file(path, "certificate", MAX_PEM_BYTES)
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise InputError(f"certificate {path}: {exc}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _signatures_certificate(path: Path) -> str:
    data = read_input_file(path, "module signatures", MAX_SIGNATURES_BYTES)
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"module signatures {path}: not JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != SIGNATURES_FORMAT:
        raise InputError(f"module signatures {path}: not a {SIGNATURES_FORMAT} file")
    digest = body.get("certificate_sha256")
    if not isinstance(digest, str) or not isinstance(body.get("modules"), dict):
        raise InputError(f"module signatures {path}: no certificate_sha256 or modules")
    return digest
