#!/usr/bin/python3
"""Sign Linux kernel modules as the kernel's scripts/sign-file does, reproducibly.

  sign_modules.py check KEY CERT
      refuse a key or certificate the image build cannot use, before the build starts
  sign_modules.py sign KEY CERT SIGNATURES MODULE...
      sign each unsigned MODULE in place and write the detached signatures to SIGNATURES
  sign_modules.py apply SIGNATURES MODULE...
      append signatures made by an earlier build to the same unsigned modules, so that an
      image rebuilt without the private key has the same bytes and roothash

The signature is what sign-file appends (linux/module_signature.h): a detached PKCS #7
SignedData over the whole module, SHA-256, without certificates or signed attributes, then
struct module_signature (id_type PKEY_ID_PKCS7, the signature's length) and the magic
string. Without signed attributes there is no signing time, and RSA PKCS #1 v1.5 is
deterministic, so the same key gives the same bytes in every build. ECDSA signatures are
randomised and would make two builds differ: only RSA keys are accepted.

Runs in the image's build overlay (Debian's python3 and python3-cryptography) and on the
build host; it needs nothing else, and it says what is wrong in one line, exit status 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
FORMAT = "aicert-module-signatures/1"


class SigningError(Exception):
    """What is wrong, in one line."""


def module_signature_trailer(signature: bytes) -> bytes:
    """struct module_signature for a PKCS #7 signature, then the magic string."""
    return struct.pack(">BBBBB3xI", 0, 0, PKEY_ID_PKCS7, 0, 0, len(signature)) + MAGIC


def load_signer(key_path: Path, cert_path: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(
            f"module signing key {key_path}: not an unencrypted PEM private key ({exc}); "
            "decrypt it with: openssl pkey -in KEY -out PLAIN.pem"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError(
            f"module signing key {key_path} is not an RSA key: ECDSA signatures are "
            "randomised, so two builds of the image would differ"
        )
    try:
        data = cert_path.read_bytes()
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except (OSError, ValueError) as exc:
        raise SigningError(f"module signing certificate {cert_path}: {exc}") from None
    if cert.public_key() != key.public_key():
        raise SigningError(
            f"module signing certificate {cert_path} is not the certificate of {key_path}"
        )
    return key, cert


def unsigned_module(path: Path) -> bytes:
    data = path.read_bytes()
    if data.endswith(MAGIC):
        raise SigningError(f"{path} is already signed")
    if not data.startswith(b"\x7fELF"):
        raise SigningError(f"{path} is not a kernel module (no ELF header)")
    return data


def sign(key_path: Path, cert_path: Path, out: Path, modules: list[Path]) -> None:
    key, cert = load_signer(key_path, cert_path)
    record: dict[str, dict[str, str]] = {}
    for path in modules:
        data = unsigned_module(path)
        signature = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(cert, key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [
                    pkcs7.PKCS7Options.Binary,
                    pkcs7.PKCS7Options.DetachedSignature,
                    pkcs7.PKCS7Options.NoAttributes,
                    pkcs7.PKCS7Options.NoCerts,
                ],
            )
        )
        if path.name in record:
            raise SigningError(f"two modules named {path.name}")
        record[path.name] = {
            "unsigned_sha256": hashlib.sha256(data).hexdigest(),
            "pkcs7": base64.b64encode(signature).decode(),
        }
        path.write_bytes(data + signature + module_signature_trailer(signature))
    certificate = cert.public_bytes(serialization.Encoding.PEM).decode()
    document = {
        "format": FORMAT,
        "certificate": certificate,
        "certificate_sha256": hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        "modules": record,
    }
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def apply(signatures: Path, modules: list[Path]) -> None:
    try:
        document = json.loads(signatures.read_text())
        if document["format"] != FORMAT:
            raise SigningError(f"{signatures}: format {document['format']!r}, not {FORMAT}")
        record = document["modules"]
        for path in modules:
            data = unsigned_module(path)
            entry = record.get(path.name)
            if entry is None:
                raise SigningError(f"{signatures} has no signature for {path.name}")
            if hashlib.sha256(data).hexdigest() != entry["unsigned_sha256"]:
                raise SigningError(
                    f"{path.name} built here differs from the module {signatures} signed: "
                    "another source or toolchain"
                )
            signature = base64.b64decode(entry["pkcs7"], validate=True)
            path.write_bytes(data + signature + module_signature_trailer(signature))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SigningError(f"module signatures {signatures}: {exc!r}") from None


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["check", key, cert]:
                load_signer(Path(key), Path(cert))
            case ["sign", key, cert, out, *modules] if modules:
                sign(Path(key), Path(cert), Path(out), [Path(m) for m in modules])
            case ["apply", signatures, *modules] if modules:
                apply(Path(signatures), [Path(m) for m in modules])
            case _:
                print(__doc__.strip().splitlines()[0], file=sys.stderr)
                return 2
    except SigningError as exc:
        print(f"sign_modules: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
