"""Boot UKIs in QEMU + OVMF + swtpm and compare the TPM with predict_boot_pcrs.

Each UKI holds Debian trixie's kernel, an initrd whose /init (tests/data/uki/pcr_init.c)
prints the SHA-256 PCRs 4, 9, 11, 12, 13 and the firmware event log, and a command line;
it is built by ukify with systemd-stub 252 (host), 254 (bookworm-backports) or 257
(trixie), and booted as \\EFI\\BOOT\\BOOTX64.EFI with Secure Boot off, and, for 257, on
(signed with Debian OVMF's snakeoil key, enrolled in OVMF_VARS_4M.snakeoil.fd).
No systemd runs in that initrd, so PCR 11 holds only the stub's events.

A second initrd (tests/data/uki/module_init.c) checks what the gpu profile's module
signatures rely on: with Secure Boot on, Debian's kernel locks itself down and loads a
module signed by a key in the UEFI db (image/mkosi.gpu/sign_modules.py, docs/gpu.md),
and refuses one unsigned or signed by another key.
"""

from __future__ import annotations

import lzma
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.boot.uki import BootPcrPrediction, ExpectedEvent, predict_boot_pcrs
from aicert.verifier.logs.tcg_log import events_for_pcr, parse_event_log
from aicert.verifier.tpm.pcr import SHA256, extend_all
from cryptography.hazmat.primitives import serialization
from signing_keys import write_self_signed

from aicert.process import require_tool, run

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parent.parent
INIT_SOURCE = REPO / "tests/data/uki/pcr_init.c"
MODULE_INIT_SOURCE = REPO / "tests/data/uki/module_init.c"
SIGN_MODULES = REPO / "image/mkosi.gpu/sign_modules.py"
OVMF = Path("/usr/share/OVMF")
SNAKEOIL_KEY = Path("/usr/share/ovmf/PkKek-1-snakeoil.key")
SNAKEOIL_CERT = Path("/usr/share/ovmf/PkKek-1-snakeoil.pem")
SNAKEOIL_PASSPHRASE = b"snakeoil"  # documented in Debian's ovmf README
CMDLINE = "console=ttyS0 panic=-1"


@pytest.fixture(scope="module")
def oracles(uki_oracles: Path) -> Path:
    pytest.importorskip("pefile", reason="ukify needs the 'pefile' Python package")
    return uki_oracles


def make_initrd(d: Path, init_source: Path, files: dict[str, bytes]) -> Path:
    """An initrd whose /init is ``init_source`` compiled statically, plus ``files``."""
    tree = d / "tree"
    for sub in ("dev", "sys"):
        (tree / sub).mkdir(parents=True)
    run([require_tool("gcc"), "-static", "-Os", "-o", tree / "init", init_source])
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    members = sorted(["."] + [f"./{p.relative_to(tree)}" for p in tree.rglob("*")])
    archive = run(
        [require_tool("cpio"), "-o", "-H", "newc", "--quiet"],
        cwd=tree,
        input="\n".join(members).encode() + b"\n",
    )
    out = d / "initrd.cpio"
    out.write_bytes(archive.stdout)
    return out


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_initrd(tmp_path_factory.mktemp("initrd"), INIT_SOURCE, {})


def build_uki(oracles: Path, stub: Path, initrd: Path, out: Path, *extra: str) -> bytes:
    run(
        [
            sys.executable,
            oracles / "root/usr/bin/ukify",
            "build",
            f"--linux={oracles / 'kernel/vmlinuz'}",
            f"--initrd={initrd}",
            f"--cmdline={CMDLINE}",
            "--os-release=ID=debian\nVERSION_ID=13\n",
            f"--stub={stub}",
            f"--output={out}",
            *extra,
        ]
    )
    return out.read_bytes()


@dataclass(frozen=True)
class BootReport:
    pcrs: dict[int, bytes]
    log: bytes
    console: str


def write_plain_snakeoil_key(work: Path) -> Path:
    """The snakeoil db key without its passphrase, as sbsign and the module signer take it."""
    key = serialization.load_pem_private_key(
        SNAKEOIL_KEY.read_bytes(), password=SNAKEOIL_PASSPHRASE
    )
    plain_key = work / "db.key"
    plain_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return plain_key


def snakeoil_sign_args(plain_key: Path) -> list[str]:
    """ukify's options to sign the UKI for OVMF_VARS_4M.snakeoil.fd's db."""
    return [
        f"--secureboot-private-key={plain_key}",
        f"--secureboot-certificate={SNAKEOIL_CERT}",
        "--signtool=sbsign",
    ]


def boot(uki: bytes, work: Path, *, secure_boot: bool) -> BootReport:
    """Boot ``uki`` once on a fresh TPM and variable store; what /init printed."""
    esp = work / "esp/EFI/BOOT"
    esp.mkdir(parents=True)
    (esp / "BOOTX64.EFI").write_bytes(uki)
    code = OVMF / ("OVMF_CODE_4M.secboot.fd" if secure_boot else "OVMF_CODE_4M.fd")
    variables = work / "vars.fd"
    shutil.copyfile(
        OVMF / ("OVMF_VARS_4M.snakeoil.fd" if secure_boot else "OVMF_VARS_4M.fd"), variables
    )
    machine = ["-machine", "q35,smm=on" if secure_boot else "q35"]
    if secure_boot:
        machine += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    with Swtpm.for_qemu(work / "tpm", work / "tpm.sock") as tpm:
        proc = run(
            [
                require_tool("qemu-system-x86_64"),
                # One disk, no NIC, no CD-ROM: other boot attempts would add PCR 4 events.
                "-nodefaults",
                *machine,
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={variables}",
                *tpm.qemu_args(),
                "-drive",
                f"if=virtio,format=raw,readonly=on,file=fat:{work / 'esp'}",
            ],
            timeout=600,
        )
    console = proc.stdout.decode(errors="replace")
    pcrs = {
        int(m.group(1)): bytes.fromhex(m.group(2))
        for m in re.finditer(r"^AICERT-PCR (\d+) ([0-9A-Fa-f]{64})\r?$", console, re.MULTILINE)
    }
    log = "".join(re.findall(r"^AICERT-LOG ([0-9a-f]+)\r?$", console, re.MULTILINE))
    assert "AICERT-END" in console, console[-3000:]
    return BootReport(pcrs, bytes.fromhex(log), console)


def stub_part(events: tuple[ExpectedEvent, ...]) -> list[bytes]:
    """PCR 11 events the stub makes (this initrd runs no systemd, so no boot phases)."""
    return [e.digest for e in events if e.event_type == "EV_IPL"]


def assert_boot_matches(prediction: BootPcrPrediction, report: BootReport) -> None:
    log = parse_event_log(report.log)
    for pcr in (4, 9, 11):
        logged = [e.digests[SHA256.tpm_id] for e in events_for_pcr(log, pcr)]
        expected = (
            stub_part(prediction.events[pcr])
            if pcr == 11
            else [e.digest for e in prediction.events[pcr]]
        )
        assert logged == expected, f"PCR {pcr} events differ"
    pcrs = prediction.pcrs
    assert report.pcrs[4] == pcrs[4]
    assert report.pcrs[9] == pcrs[9]
    assert report.pcrs[11] == extend_all(SHA256, stub_part(prediction.events[11]))
    assert report.pcrs[12] == pcrs[12] == bytes(32)
    assert report.pcrs[13] == pcrs[13] == bytes(32)


@pytest.mark.parametrize(
    ("stub", "version"),
    [
        ("root/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "257."),
        ("bpo/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "254."),
        ("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "252."),
    ],
    ids=["stub-257", "stub-254", "stub-252"],
)
def test_boot_without_secure_boot_matches_prediction(
    oracles: Path, initrd: Path, tmp_path: Path, stub: str, version: str
) -> None:
    stub_path = oracles / stub
    if not stub_path.exists():
        pytest.skip(f"{stub_path} missing")
    uki = build_uki(oracles, stub_path, initrd, tmp_path / "uki.efi", "--uname=6.12-test")
    prediction = predict_boot_pcrs(uki)
    assert prediction.stub_version.startswith(version)
    report = boot(uki, tmp_path, secure_boot=False)
    assert_boot_matches(prediction, report)


def test_boot_with_secure_boot_matches_prediction(
    oracles: Path, initrd: Path, tmp_path: Path
) -> None:
    for path in (OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.snakeoil.fd"):
        if not path.exists():
            pytest.skip(f"{path} missing (Debian's ovmf package ships it)")
    require_tool("sbsign", hint="install sbsigntool (scripts/install-host-deps.sh)")
    plain_key = write_plain_snakeoil_key(tmp_path)
    uki = build_uki(
        oracles,
        oracles / "root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        initrd,
        tmp_path / "uki.efi",
        *snakeoil_sign_args(plain_key),
    )
    report = boot(uki, tmp_path, secure_boot=True)
    assert "Secure Boot is enabled" in report.console
    # The kernel's Authenticode digest is missing from PCR 4: the stub approved it itself.
    assert_boot_matches(predict_boot_pcrs(uki, secure_boot=True), report)
    assert report.pcrs[4] != predict_boot_pcrs(uki, secure_boot=False).pcrs[4]


MODULE_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(module: bytes) -> bytes:
    """The module without its appended signature (struct module_signature ends in the
    signature's length, big-endian, before the magic string)."""
    assert module.endswith(MODULE_MAGIC)
    (sig_len,) = struct.unpack(">I", module[-len(MODULE_MAGIC) - 4 : -len(MODULE_MAGIC)])
    return module[: -len(MODULE_MAGIC) - 12 - sig_len]


def signed_copy(unsigned: bytes, key: Path, cert: Path, work: Path) -> bytes:
    """``unsigned`` signed by the project's signer, exactly as the gpu image build signs."""
    work.mkdir()
    module = work / "michael_mic.ko"
    module.write_bytes(unsigned)
    run([sys.executable, SIGN_MODULES, "sign", key, cert, work / "signatures.json", module])
    return module.read_bytes()


@pytest.mark.parametrize("secure_boot", [True, False], ids=["secure-boot", "no-secure-boot"])
def test_db_signed_module_loads_under_lockdown(
    oracles: Path, tmp_path: Path, secure_boot: bool
) -> None:
    for path in (OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.snakeoil.fd"):
        if not path.exists():
            pytest.skip(f"{path} missing (Debian's ovmf package ships it)")
    require_tool("sbsign", hint="install sbsigntool (scripts/install-host-deps.sh)")
    plain_key = write_plain_snakeoil_key(tmp_path)
    debian = lzma.decompress((oracles / "kernel/michael_mic.ko.xz").read_bytes())
    unsigned = strip_module_signature(debian)
    other_key, other_cert = write_self_signed(tmp_path, "not-in-db")
    modules = {
        "modules/debian.ko": debian,
        "modules/unsigned.ko": unsigned,
        "modules/project.ko": signed_copy(unsigned, plain_key, SNAKEOIL_CERT, tmp_path / "p"),
        "modules/other.ko": signed_copy(unsigned, other_key, other_cert, tmp_path / "o"),
    }
    (tmp_path / "initrd").mkdir()
    module_initrd = make_initrd(tmp_path / "initrd", MODULE_INIT_SOURCE, modules)
    sign = snakeoil_sign_args(plain_key) if secure_boot else []
    uki = build_uki(
        oracles,
        oracles / "root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        module_initrd,
        tmp_path / "uki.efi",
        *sign,
    )
    console = boot(uki, tmp_path / "vm", secure_boot=secure_boot).console
    results = dict(re.findall(r"^AICERT-MODULE (\w+) (.+?)\r?$", console, re.MULTILINE))
    lockdown = re.search(r"^AICERT-LOCKDOWN (.*?)\r?$", console, re.MULTILINE)
    assert lockdown is not None, console[-3000:]
    if secure_boot:
        # Debian's kernel locks down (integrity) when booted with Secure Boot on ...
        assert "[integrity]" in lockdown.group(1)
        # ... enforces module signatures, and takes Debian's own key and the db keys (the
        # platform keyring, a Debian patch) only.
        assert results == {
            "debian": "loaded",
            "unsigned": "refused EKEYREJECTED",
            "project": "loaded",
            "other": "refused EKEYREJECTED",
        }
    else:
        # Not locked down: every copy loads (the unsigned ones taint the kernel).
        assert "[none]" in lockdown.group(1)
        assert set(results.values()) == {"loaded"}, results
