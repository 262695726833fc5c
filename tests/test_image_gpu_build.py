"""System test of the gpu profile's build: NVIDIA's open modules compiled for the image's
kernel in the build overlay, signed with the project's key inside the measured root, the
GSP firmware kept, and the same image rebuilt from the published signatures without the
key (docs/gpu.md). That the kernel loads such modules under Secure Boot
is tests/test_uki_boot.py::test_db_signed_module_loads_under_lockdown."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from aicert.builder.image import ImageRequest, build_image
from aicert.builder.module_signing import PublishedSignatures, SigningKey
from aicert.builder.reproducibility import read_gpt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from signing_keys import write_self_signed

from aicert.process import require_tool, run

pytestmark = pytest.mark.system

MAGIC = b"~Module signature appended~\n"
MODULES = {"nvidia.ko", "nvidia-modeset.ko", "nvidia-uvm.ko"}


def _signing_key(tmp: Path) -> SigningKey:
    return SigningKey(*write_self_signed(tmp, "db"))


def _extract_root(disk: Path, dest: Path) -> Path:
    """The erofs root partition of ``disk``, extracted with erofs-utils' fsck.erofs."""
    (root,) = [
        p for p in read_gpt(disk) if p["name"].startswith("root-") and "verity" not in p["name"]
    ]
    image = dest / "root.erofs"
    with disk.open("rb") as src, image.open("wb") as out:
        src.seek(root["start"])
        remaining = root["size"]
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            out.write(chunk)
            remaining -= len(chunk)
    tree = dest / "root"
    run([require_tool("fsck.erofs", hint="install erofs-utils"), f"--extract={tree}", image])
    image.unlink()
    return tree


def test_the_gpu_build_signs_its_modules_and_a_graft_rebuilds_it_without_the_key(
    tmp_path: Path,
) -> None:
    signing = _signing_key(tmp_path)
    output = tmp_path / "gpu"
    result = build_image(
        ImageRequest(output=output, profile="gpu", module_signing=signing),
        on_line=lambda _line: None,
    )
    print(f"gpu build with module signing: {result.seconds:.0f} s")
    cert = x509.load_pem_x509_certificate(signing.certificate.read_bytes())
    cert_sha256 = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    published = output / "module-signatures.json"
    assert result.recipe["inputs"]["module_signing"] == {
        "certificate_sha256": cert_sha256,
        "source": "key",
        "signatures_sha256": hashlib.sha256(published.read_bytes()).hexdigest(),
    }
    assert result.recipe["outputs"]["disk"]["size"] <= 2 << 30
    signatures = json.loads(published.read_text())
    assert set(signatures["modules"]) == MODULES

    tree = _extract_root(output / "disk.raw", tmp_path)
    (modules,) = list(tree.glob("usr/lib/modules/*/updates/nvidia"))
    assert (modules / "module-signatures.json").read_bytes() == published.read_bytes()
    assert "signed: module-signatures.json" in (modules / "build.txt").read_text()
    assert "compiler: GCC: (Debian " in (modules / "build.txt").read_text()
    assert list(tree.glob("usr/lib/firmware/nvidia/*/gsp_*.bin"))
    openssl = require_tool("openssl")
    for name, entry in signatures["modules"].items():
        data = (modules / name).read_bytes()
        assert data.endswith(MAGIC)
        (sig_len,) = struct.unpack(">I", data[-len(MAGIC) - 4 : -len(MAGIC)])
        unsigned = data[: -len(MAGIC) - 12 - sig_len]
        pkcs7 = data[-len(MAGIC) - 12 - sig_len : -len(MAGIC) - 12]
        assert hashlib.sha256(unsigned).hexdigest() == entry["unsigned_sha256"]
        assert pkcs7 == base64.b64decode(entry["pkcs7"])
        (tmp_path / "module").write_bytes(unsigned)
        (tmp_path / "sig.p7").write_bytes(pkcs7)
        run(
            [
                *(openssl, "smime", "-verify", "-binary", "-inform", "DER"),
                *("-in", tmp_path / "sig.p7", "-content", tmp_path / "module"),
                *("-certfile", signing.certificate, "-nointern", "-noverify", "-out", "/dev/null"),
            ]
        )

    # Anyone can rebuild the signed image from its published signatures, without the key.
    grafted = build_image(
        ImageRequest(
            output=tmp_path / "gpu-grafted",
            profile="gpu",
            module_signing=PublishedSignatures(published),
        ),
        on_line=lambda _line: None,
    )
    print(f"gpu build with grafted signatures: {grafted.seconds:.0f} s")
    assert grafted.recipe["inputs"]["module_signing"] == {
        **result.recipe["inputs"]["module_signing"],
        "source": "published signatures",
    }
    for name in ("uki", "disk"):
        assert grafted.recipe["outputs"][name]["sha256"] == result.recipe["outputs"][name]["sha256"]
    assert grafted.recipe["outputs"]["roothash"] == result.recipe["outputs"]["roothash"]
