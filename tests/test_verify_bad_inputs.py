"""Bad input to ``aicert-verify``: one line on stderr and the documented exit code, always.

Each case runs the installed console script in its own process, so a traceback, a
warning or a second message would show on stderr exactly as a user would see it.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import provision_like_azure
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.logs.cel import make_record
from certgen import IssuedCertificate, issue_certificate
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nitro_documents import real_document

pytestmark = pytest.mark.swtpm

VERIFY = Path(sys.executable).with_name("aicert-verify")
HUGE_INT = "7" * 5000  # beyond Python's 4,300-digit int conversion limit


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCa) -> IssuedCertificate:
    work = tmp_path_factory.mktemp("bad-inputs")
    with Swtpm.tcp(work / "tpm") as tpm:
        provision_like_azure(tpm.tcti, local_ca, "bad-inputs-vm")
        intermediate = local_ca.intermediate_certificate.public_bytes(serialization.Encoding.DER)
        return issue_certificate(tpm.tcti, (intermediate,), work / "job")


def _doc(issued: IssuedCertificate) -> dict[str, Any]:
    return copy.deepcopy(issued.certificate.to_json())


def _write(tmp: Path, doc: dict[str, Any] | str | bytes) -> Path:
    path = tmp / "edited.aicert.json"
    if isinstance(doc, dict):
        doc = json.dumps(doc)
    path.write_bytes(doc.encode() if isinstance(doc, str) else doc)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _payload(doc: dict[str, Any], payload: bytes) -> dict[str, Any]:
    doc["envelope"]["payload"] = _b64(payload)
    return doc


# Each case: (what it builds from the honest certificate, the extra arguments, exit code).
Case = Callable[[IssuedCertificate, Path], list[str]]


def _cert(edit: Callable[[dict[str, Any]], object]) -> Case:
    def build(issued: IssuedCertificate, tmp: Path) -> list[str]:
        doc = _doc(issued)
        edited = edit(doc)
        return [str(_write(tmp, edited if isinstance(edited, (dict, str, bytes)) else doc))]

    return build


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _huge_int_in_certificate(doc: dict[str, Any]) -> str:
    return json.dumps(doc)[:-1] + f', "x": {HUGE_INT}}}'


def _rsa_agent_key(doc: dict[str, Any]) -> None:
    key = rsa.generate_private_key(65537, 2048).public_key()
    doc["agentPublicKey"] = _b64(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _unencodable_cel_content(doc: dict[str, Any]) -> None:
    doc["tpm"]["celLog"][2] = make_record(2, {"event": "input"}).to_json() | {
        "content": {"event": "x", "n": 2**60}
    }


def _nitro_document(
    data: bytes, *, keep_ak_certificates: bool = False
) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        if not keep_ak_certificates:
            doc["tpm"]["akCertificates"] = []
        doc["tpm"]["nitroDocument"] = _b64(data)

    return edit


def _with_cert_args(*extra: str) -> Case:
    def build(issued: IssuedCertificate, tmp: Path) -> list[str]:
        return [str(issued.path), *extra]

    return build


def _weights(make: Callable[[Path], Path]) -> Case:
    def build(issued: IssuedCertificate, tmp: Path) -> list[str]:
        return [str(issued.path), "--weights", str(make(tmp))]

    return build


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo"
    os.mkfifo(path)
    return path


def _symlink_out(tmp: Path) -> Path:
    weights = tmp / "weights"
    weights.mkdir()
    outside = tmp / "outside.bin"
    outside.write_bytes(b"secret")
    (weights / "model.bin").symlink_to(outside)
    return weights


def _hard_link(tmp: Path) -> Path:
    weights = tmp / "weights"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"weights")
    os.link(weights / "model.bin", tmp / "other-name")
    return weights


def _file_with(name: str, text: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_text(text)
        return path

    return make


def _option_file(option: str, make: Callable[[Path], Path]) -> Case:
    def build(issued: IssuedCertificate, tmp: Path) -> list[str]:
        return [str(issued.path), option, str(make(tmp))]

    return build


def _certificate_path(make: Callable[[Path], Path]) -> Case:
    def build(issued: IssuedCertificate, tmp: Path) -> list[str]:
        return [str(make(tmp))]

    return build


def _directory(tmp: Path) -> Path:
    (tmp / "dir").mkdir()
    return tmp / "dir"


CASES: dict[str, tuple[Case, int]] = {
    "huge integer in the certificate": (_cert(_huge_int_in_certificate), 3),
    "huge integer in the recipe": (
        _option_file("--recipe", _file_with("recipe.json", f'{{"expected_pcrs": {HUGE_INT}}}')),
        3,
    ),
    "huge integer in a platform profile": (
        _option_file(
            "--platform-profile", _file_with("profile.json", f'{{"firmwareLog": {HUGE_INT}}}')
        ),
        3,
    ),
    "huge float in the certificate": (
        _cert(lambda d: json.dumps(d)[:-1] + ', "x": 1e999}'),
        3,
    ),
    "certificate not JSON": (_cert(lambda d: "{not json"), 3),
    "certificate is a JSON array": (_cert(lambda d: "[]"), 3),
    "certificate missing": (_certificate_path(lambda t: t / "missing.json"), 3),
    "certificate is a directory": (_certificate_path(_directory), 3),
    "certificate is a FIFO": (_certificate_path(_fifo), 3),
    "certificate not UTF-8": (_cert(lambda d: b"\xff{}"), 3),
    "malformed AK public key": (_cert(_set(("tpm", "akPublic"), _b64(b"\x00\x10garbage"))), 3),
    "AK public key of random bytes": (_cert(_set(("tpm", "akPublic"), _b64(os.urandom(300)))), 3),
    "malformed AK certificate": (_cert(_set(("tpm", "akCertificates", 0), _b64(b"0\x82"))), 3),
    "AK certificate of random bytes": (
        _cert(_set(("tpm", "akCertificates", 0), _b64(os.urandom(500)))),
        3,
    ),
    "malformed intermediate": (_cert(_set(("tpm", "akCertificates", 1), _b64(b"\x30\x03"))), 3),
    "malformed firmware log": (_cert(_set(("tpm", "firmwareEventLog"), _b64(b"\x00" * 40))), 3),
    "firmware log of random bytes": (
        _cert(_set(("tpm", "firmwareEventLog"), _b64(os.urandom(4096)))),
        3,
    ),
    "Nitro document of random bytes": (_cert(_nitro_document(os.urandom(600))), 3),
    "truncated real Nitro document": (_cert(_nitro_document(real_document()[:3000])), 3),
    "Nitro document beside AK certificates": (
        _cert(_nitro_document(real_document(), keep_ak_certificates=True)),
        3,
    ),
    "empty Nitro document": (_cert(_nitro_document(b"")), 3),
    "payload not JSON": (_cert(lambda d: _payload(d, b"not json")), 3),
    "payload not UTF-8": (_cert(lambda d: _payload(d, b"\xff\xfe")), 3),
    # verifier/tpm/quote.py reports a malformed signature as a failed quote-signature check.
    "malformed quote signature": (_cert(_set(("tpm", "quote", "signature"), _b64(b"\x00"))), 1),
    "malformed agent key": (_cert(_set(("agentPublicKey",), _b64(b"\x30\x00"))), 1),
    "agent key of another type": (_cert(_rsa_agent_key), 1),
    "CEL content beyond JSON's exact integers": (_cert(_unencodable_cel_content), 3),
    "weights missing": (_weights(lambda t: t / "missing"), 3),
    "weights a FIFO": (_weights(_fifo), 3),
    "weights with a symlink out": (_weights(_symlink_out), 3),
    "weights with a hard link": (_weights(_hard_link), 3),
    "recipe not JSON": (_option_file("--recipe", _file_with("recipe.json", "{")), 3),
    "recipe missing": (_option_file("--recipe", lambda t: t / "none.json"), 3),
    "UKI not a PE file": (_option_file("--uki", _file_with("uki.efi", "MZ")), 3),
    "platform profile not JSON": (
        _option_file("--platform-profile", _file_with("profile.json", "{")),
        3,
    ),
    "trust root not PEM": (_option_file("--trust-root", _file_with("root.pem", "x")), 3),
    "trust root a directory": (_option_file("--trust-root", _directory), 3),
    "linked certificate missing": (
        _option_file("--linked-certificate", lambda t: t / "none.json"),
        1,
    ),
    "input missing": (_with_cert_args("--any-image", "--input", "code=/nonexistent/x"), 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_its_exit_code(
    case: str, issued: IssuedCertificate, local_ca: LocalCa, tmp_path: Path
) -> None:
    build, code = CASES[case]
    args = [*build(issued, tmp_path), "--trust-root", str(local_ca.root_path)]
    if not {"--recipe", "--uki", "--any-image"} & set(args):
        args.append("--any-image")
    proc = subprocess.run(
        [str(VERIFY), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("aicert-verify: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if code == 3:  # bad input is no verdict: no report either
        assert proc.stdout == ""


def test_bad_input_in_json_mode_still_gives_a_json_report(
    issued: IssuedCertificate, local_ca: LocalCa, tmp_path: Path
) -> None:
    doc = _doc(issued)
    doc["tpm"]["akPublic"] = _b64(b"\x00\x10garbage")
    args = [str(_write(tmp_path, doc)), "--trust-root", str(local_ca.root_path), "--any-image"]
    proc = subprocess.run(
        [str(VERIFY), *args, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1
    report = json.loads(proc.stdout)
    assert report["verified"] is False
    assert report["error"]["exit_code"] == 3
    assert report["error"]["type"] == "FormatError"
