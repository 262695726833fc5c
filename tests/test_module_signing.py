"""image/mkosi.gpu/sign_modules.py: the gpu image's kernel module signatures.

The kernel's acceptance of these signatures under Secure Boot is in
tests/test_uki_boot.py (test_db_signed_module_loads_under_lockdown); here: the bytes,
their reproducibility, the graft of published signatures, and every refusal."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from aicert.builder.mkosi import IMAGE_DIR
from aicert.builder.module_signing import (
    PublishedSignatures,
    SigningKey,
    check_module_signing,
    module_signing_from_options,
    recipe_entry,
    stage_module_signing,
)
from aicert.verifier.errors import InputError, ToolError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from signing_keys import write_self_signed

from aicert.process import require_tool, run

SIGN_MODULES = Path(__file__).resolve().parent.parent / "image/mkosi.gpu/sign_modules.py"
MAGIC = b"~Module signature appended~\n"
# An ELF header and some bytes: the signer reads a module as opaque bytes.
MODULE = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("signer")
    return write_self_signed(tmp, "project")


def _sign_modules(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SIGN_MODULES, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def _module(tmp: Path, name: str = "nvidia.ko", data: bytes = MODULE) -> Path:
    tmp.mkdir(exist_ok=True)
    path = tmp / name
    path.write_bytes(data)
    return path


def test_the_signature_is_sign_files_trailer_and_verifies(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    module = _module(tmp_path)
    proc = _sign_modules("sign", key, cert, tmp_path / "sigs.json", module)
    assert proc.returncode == 0, proc.stderr
    signed = module.read_bytes()
    assert signed.startswith(MODULE)
    assert signed.endswith(MAGIC)
    algo, hash_, id_type, signer_len, key_id_len, sig_len = struct.unpack(
        ">BBBBB3xI", signed[-len(MAGIC) - 12 : -len(MAGIC)]
    )
    assert (algo, hash_, id_type, signer_len, key_id_len) == (0, 0, 2, 0, 0)
    assert len(signed) == len(MODULE) + sig_len + 12 + len(MAGIC)
    pkcs7 = tmp_path / "sig.p7"
    pkcs7.write_bytes(signed[len(MODULE) : len(MODULE) + sig_len])
    content = tmp_path / "unsigned.ko"
    content.write_bytes(MODULE)
    # OpenSSL, independently: a detached PKCS #7 signature by the certificate's key.
    openssl = require_tool("openssl")
    common = ["-binary", "-inform", "DER", "-in", pkcs7, "-content", content, "-noverify"]
    run([openssl, "smime", "-verify", *common, "-certfile", cert, "-nointern"])
    content.write_bytes(MODULE + b"x")
    with pytest.raises(ToolError):
        run([openssl, "smime", "-verify", *common, "-certfile", cert, "-nointern"])
    record = json.loads((tmp_path / "sigs.json").read_text())
    assert record["format"] == "aicert-module-signatures/1"
    assert set(record["modules"]) == {"nvidia.ko"}
    assert x509.load_pem_x509_certificate(record["certificate"].encode()) == (
        x509.load_pem_x509_certificate(cert.read_bytes())
    )


def test_two_signings_give_the_same_bytes_and_a_graft_gives_them_again(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    first = _module(tmp_path / "a")
    second = _module(tmp_path / "b")
    for module in (first, second):
        assert _sign_modules("sign", key, cert, module.parent / "s.json", module).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    assert (first.parent / "s.json").read_bytes() == (second.parent / "s.json").read_bytes()
    grafted = _module(tmp_path / "c")
    proc = _sign_modules("apply", first.parent / "s.json", grafted)
    assert proc.returncode == 0, proc.stderr
    assert grafted.read_bytes() == first.read_bytes()


def test_a_graft_onto_another_module_is_refused(signer: tuple[Path, Path], tmp_path: Path) -> None:
    key, cert = signer
    module = _module(tmp_path / "a")
    assert _sign_modules("sign", key, cert, tmp_path / "s.json", module).returncode == 0
    other = _module(tmp_path / "b", data=MODULE + b"\0")
    proc = _sign_modules("apply", tmp_path / "s.json", other)
    assert proc.returncode == 1
    assert "differs from the module" in proc.stderr
    assert other.read_bytes() == MODULE + b"\0"
    missing = _module(tmp_path / "c", name="nvidia-uvm.ko")
    proc = _sign_modules("apply", tmp_path / "s.json", missing)
    assert proc.returncode == 1
    assert "no signature for nvidia-uvm.ko" in proc.stderr


def test_an_ecdsa_key_is_refused_because_its_signatures_vary(tmp_path: Path) -> None:
    key, cert = write_self_signed(tmp_path, "ec", ec.generate_private_key(ec.SECP256R1()))
    for args in (("check", key, cert), ("sign", key, cert, tmp_path / "s.json", _module(tmp_path))):
        proc = _sign_modules(*args)
        assert proc.returncode == 1
        assert "is not an RSA key" in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_a_certificate_of_another_key_is_refused(signer: tuple[Path, Path], tmp_path: Path) -> None:
    key, _ = signer
    _, other_cert = write_self_signed(tmp_path, "other", rsa.generate_private_key(65537, 2048))
    proc = _sign_modules("check", key, other_cert)
    assert proc.returncode == 1
    assert "is not the certificate of" in proc.stderr


def test_an_encrypted_key_is_refused_with_how_to_decrypt(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    _, cert = write_self_signed(tmp_path, "enc", key)
    encrypted = tmp_path / "enc-locked.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    proc = _sign_modules("check", encrypted, cert)
    assert proc.returncode == 1
    assert "openssl pkey" in proc.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [(MODULE + b"sig" + MAGIC, "is already signed"), (b"MZ" + MODULE, "no ELF header")],
    ids=["signed", "not-elf"],
)
def test_a_module_that_cannot_be_signed_is_refused(
    signer: tuple[Path, Path], tmp_path: Path, data: bytes, message: str
) -> None:
    key, cert = signer
    module = _module(tmp_path, data=data)
    proc = _sign_modules("sign", key, cert, tmp_path / "s.json", module)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert module.read_bytes() == data


def test_usage_errors_exit_2() -> None:
    assert _sign_modules().returncode == 2
    assert _sign_modules("sign", "k", "c", "out").returncode == 2


# builder/module_signing.py: what aicert-build checks before a build and records after it.


def test_the_options_give_a_key_signatures_or_nothing(tmp_path: Path) -> None:
    key, cert, sigs = tmp_path / "k", tmp_path / "c", tmp_path / "s"
    assert module_signing_from_options(None, None, None) is None
    assert module_signing_from_options(key, cert, None) == SigningKey(key, cert)
    assert module_signing_from_options(None, None, sigs) == PublishedSignatures(sigs)
    with pytest.raises(InputError, match="go together"):
        module_signing_from_options(key, None, None)
    with pytest.raises(InputError, match="exclude each other"):
        module_signing_from_options(key, cert, sigs)


def test_a_good_key_is_accepted_with_its_certificates_digest(signer: tuple[Path, Path]) -> None:
    key, cert = signer
    digest = check_module_signing(SigningKey(key, cert), "azure+gpu", IMAGE_DIR)
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert digest == hashlib.sha256(der).hexdigest()


def test_a_profile_without_modules_or_an_ecdsa_key_is_refused_before_the_build(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    with pytest.raises(InputError, match="builds no kernel modules"):
        check_module_signing(SigningKey(key, cert), "azure", IMAGE_DIR)
    ec_key, ec_cert = write_self_signed(tmp_path, "ec", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InputError, match="is not an RSA key"):
        check_module_signing(SigningKey(ec_key, ec_cert), "gpu", IMAGE_DIR)
    with pytest.raises(InputError, match=r"does not exist|cannot read|no such"):
        check_module_signing(SigningKey(tmp_path / "nope", cert), "gpu", IMAGE_DIR)


def test_published_signatures_are_read_for_their_certificate(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    module = _module(tmp_path / "m")
    sigs = tmp_path / "module-signatures.json"
    assert _sign_modules("sign", key, cert, sigs, module).returncode == 0
    digest = check_module_signing(PublishedSignatures(sigs), "gpu", IMAGE_DIR)
    assert digest == json.loads(sigs.read_text())["certificate_sha256"]
    entry = recipe_entry(digest, PublishedSignatures(sigs), sigs)
    assert entry == {
        "certificate_sha256": digest,
        "source": "published signatures",
        "signatures_sha256": hashlib.sha256(sigs.read_bytes()).hexdigest(),
    }
    garbage = tmp_path / "garbage.json"
    for text in ("{not json", '{"format": "other"}', '{"format": "aicert-module-signatures/1"}'):
        garbage.write_text(text)
        with pytest.raises(InputError, match="module signatures"):
            check_module_signing(PublishedSignatures(garbage), "gpu", IMAGE_DIR)


def test_a_build_that_did_not_sign_fails_instead_of_recording_signatures(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    with pytest.raises(ToolError, match="did not sign"):
        recipe_entry("00" * 32, SigningKey(key, cert), tmp_path / "absent.json")
    module = _module(tmp_path / "m")
    sigs = tmp_path / "module-signatures.json"
    assert _sign_modules("sign", key, cert, sigs, module).returncode == 0
    with pytest.raises(ToolError, match="another certificate"):
        recipe_entry("00" * 32, SigningKey(key, cert), sigs)


def test_the_key_is_staged_readable_by_its_owner_only(
    signer: tuple[Path, Path], tmp_path: Path
) -> None:
    key, cert = signer
    stage_module_signing(SigningKey(key, cert), tmp_path)
    staged = tmp_path / "module-signing"
    assert stat.S_IMODE(staged.stat().st_mode) == 0o700
    assert sorted(p.name for p in staged.iterdir()) == ["cert.pem", "key.pem"]
    assert stat.S_IMODE((staged / "key.pem").stat().st_mode) == 0o600
    assert (staged / "key.pem").read_bytes() == key.read_bytes()
