"""Boot PCR prediction for UKIs, against systemd's own tools and a real boot's event log.

Oracles:
- the real OVMF + swtpm boot of a Debian 12 UKI (stub 252) in
  /work/shared/testdata/ovmf-qemu: its logged digests, fed through our formulas, give the
  PCR values read from the TPM;
- ukify (Debian trixie) builds UKIs with stub 252 (the host's) and 257 (trixie's);
  systemd-measure 252 (host) and 257 (fetched, called by ``ukify --measure``) compute
  PCR 11 independently;
- lief computes Authenticode digests independently;
- GNU cpio reads the archive the 257 stub generates from ``.osrel``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import lief
import pytest
from aicert.verifier.boot.authenticode import authenticode_digest
from aicert.verifier.boot.uki import BootDigests, expected_events, predict_boot_pcrs
from aicert.verifier.errors import FormatError
from aicert.verifier.logs.tcg_log import events_for_pcr, parse_event_log
from aicert.verifier.tpm.pcr import SHA256, SHA384, extend_all
from hypothesis import given, settings
from hypothesis import strategies as st
from pe_build import SectionSpec, build_pe

from aicert.process import run

REPO = Path(__file__).resolve().parent.parent
REAL_BOOT = Path("/work/shared/testdata/ovmf-qemu")
HOST_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
HOST_MEASURE = Path("/usr/lib/systemd/systemd-measure")
# Any small PE serves as the "kernel": PCR 4 needs only its Authenticode digest. It gets
# MajorImageVersion 1, the mark of a Linux EFI stub the systemd-stub starts with LoadImage.
KERNEL_PE = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")

ACTION_DIGEST = bytes.fromhex("3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba")
SEPARATOR_DIGEST = bytes.fromhex("df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- the real boot ------------------------------------------------------------------------


def _readme_pcr(pcr: int) -> bytes:
    text = (REAL_BOOT / "README.md").read_text()
    found = re.search(rf"^\| {pcr} \| ([0-9a-f]{{64}}) \|", text, re.MULTILINE)
    assert found is not None, f"PCR {pcr} not in the README table"
    return bytes.fromhex(found.group(1))


def test_real_boot_log_is_reproduced_by_the_formulas() -> None:
    """Digests that depend on the (absent) UKI bytes come from the log; everything else is
    our formula. The result must equal the PCR values read from the TPM after boot."""
    log = parse_event_log((REAL_BOOT / "binary_bios_measurements").read_bytes())
    alg = SHA256.tpm_id

    def digests(pcr: int) -> list[bytes]:
        return [e.digests[alg] for e in events_for_pcr(log, pcr)]

    pcr4, pcr9, pcr11 = digests(4), digests(9), digests(11)
    stub_252_sections = (".linux", ".osrel", ".cmdline", ".initrd")
    assert len(pcr11) == 2 * len(stub_252_sections)
    boot = BootDigests(
        uki_authenticode=pcr4[2],
        linux_authenticode=pcr4[3],
        sections=tuple(zip(stub_252_sections, pcr11[1::2], strict=True)),
        load_options=pcr9[0],
        initrd=pcr9[1],
    )
    events = expected_events(boot, secure_boot=False)  # the README: Secure Boot off
    # Every event digest we derive ourselves equals the logged one, in order.
    assert [e.digest for e in events[4]] == pcr4
    assert [e.digest for e in events[9]] == pcr9
    assert [e.digest for e in events[11][: len(pcr11)]] == pcr11
    assert pcr4[:2] == [ACTION_DIGEST, SEPARATOR_DIGEST]
    # The stub measured .initrd, and the kernel got exactly that initrd (stub 252, no extras).
    assert pcr11[-1] == pcr9[1]

    for pcr in (4, 9, 11):
        assert extend_all(SHA256, [e.digest for e in events[pcr]]) == _readme_pcr(pcr)
    # The log holds only the stub's part of PCR 11; userspace adds the four phases.
    assert extend_all(SHA256, pcr11).hex().startswith("82701c00")


def test_real_boot_log_sha384_bank_is_reproduced_by_the_same_formulas() -> None:
    """NitroTPM reports SHA-384 PCRs: the real log's SHA-384 bank must follow the same
    formulas with SHA-384, digests of the (absent) UKI bytes again taken from the log."""
    log = parse_event_log((REAL_BOOT / "binary_bios_measurements").read_bytes())

    def digests(pcr: int) -> list[bytes]:
        return [e.digests[SHA384.tpm_id] for e in events_for_pcr(log, pcr)]

    pcr4, pcr9, pcr11 = digests(4), digests(9), digests(11)
    sections = (".linux", ".osrel", ".cmdline", ".initrd")
    boot = BootDigests(
        uki_authenticode=pcr4[2],
        linux_authenticode=pcr4[3],
        sections=tuple(zip(sections, pcr11[1::2], strict=True)),
        load_options=pcr9[0],
        initrd=pcr9[1],
    )
    events = expected_events(boot, secure_boot=False, bank=SHA384)
    assert [e.digest for e in events[4]] == pcr4
    assert [e.digest for e in events[9]] == pcr9
    assert [e.digest for e in events[11][: len(pcr11)]] == pcr11
    assert pcr4[0] == hashlib.sha384(b"Calling EFI Application from Boot Option").digest()


def test_sha384_prediction_of_a_built_uki_uses_sha384_throughout() -> None:
    uki = small_uki()
    sha256, sha384 = predict_boot_pcrs(uki), predict_boot_pcrs(uki, bank=SHA384)
    assert sha384.bank is SHA384
    assert all(len(v) == 48 for v in sha384.pcrs.values())
    assert sha384.events[4][2].digest == authenticode_digest(uki, SHA384)
    assert [e.description for e in sha384.events[11]] == [e.description for e in sha256.events[11]]
    assert sha384.pcrs[12] == bytes(48)


# --- small built UKIs, no external tools --------------------------------------------------


def sdmagic(version: str) -> bytes:
    return f"#### LoaderInfo: systemd-stub {version} ####".encode() + b"\0"


KERNEL = build_pe([SectionSpec(b".text", b"\x90" * 300)])


def small_uki(
    version: str = "257.13-1~deb13u1", extra: list[SectionSpec] | None = None, **over: bytes
) -> bytes:
    parts = {
        ".sdmagic": sdmagic(version),
        ".osrel": b"ID=debian\n",
        ".cmdline": b"root=/dev/vda ro\n",
        ".linux": KERNEL,
        ".initrd": b"initrd-bytes-13",
    }
    parts.update({k.replace("_", "."): v for k, v in over.items()})
    specs = [SectionSpec(b".text", b"\xcc" * 64)]
    specs += [SectionSpec(name.encode(), data) for name, data in parts.items() if data]
    return build_pe(specs + (extra or []))


def test_small_uki_257_events_spelled_out() -> None:
    prediction = predict_boot_pcrs(small_uki())
    assert prediction.stub_version == "257.13-1~deb13u1"
    assert prediction.measured_sections == (".linux", ".osrel", ".cmdline", ".initrd")
    ev11 = [e.digest for e in prediction.events[11]]
    assert ev11 == [
        sha256(b".linux\0"),
        sha256(KERNEL),
        sha256(b".osrel\0"),
        sha256(b"ID=debian\n"),
        sha256(b".cmdline\0"),
        sha256(b"root=/dev/vda ro\n"),
        sha256(b".initrd\0"),
        sha256(b"initrd-bytes-13"),
        sha256(b"enter-initrd"),
        sha256(b"leave-initrd"),
        sha256(b"sysinit"),
        sha256(b"ready"),
    ]
    assert prediction.events[9][0].digest == sha256("root=/dev/vda ro\0".encode("utf-16-le"))
    assert [e.digest for e in prediction.events[4][:2]] == [ACTION_DIGEST, SEPARATOR_DIGEST]
    assert prediction.pcrs[12] == bytes(32)
    assert prediction.pcrs[13] == bytes(32)
    assert prediction.events[12] == prediction.events[13] == ()
    assert prediction.pcrs[11] == extend_all(SHA256, ev11)


# The os-release cpio systemd-stub 257 appends to the initrd (cpio.c pack_cpio_literal),
# written out field by field: newc magic, inode, mode, uid, gid, nlink, mtime, filesize,
# devmajor, devminor, rdevmajor, rdevminor, namesize, check; name; padding to 4 bytes.
OS_RELEASE_CPIO = (
    b"070701" b"00000001" b"0000416d" b"00000000" b"00000000" b"00000001" b"00000000"
    b"00000000" b"00000000" b"00000000" b"00000000" b"00000000" b"00000007" b"00000000"
    b".extra\0" b"\0\0\0"
    b"070701" b"00000002" b"00008124" b"00000000" b"00000000" b"00000001" b"00000000"
    b"0000000a" b"00000000" b"00000000" b"00000000" b"00000000" b"00000012" b"00000000"
    b".extra/os-release\0"
    b"ID=debian\n" b"\0\0"
    b"070701" b"00000000" b"00000000" b"00000000" b"00000000" b"00000001" b"00000000"
    b"00000000" b"00000000" b"00000000" b"00000000" b"00000000" b"0000000B" b"00000000"
    b"TRAILER!!!\0\0\0\0"
)  # fmt: skip


def test_stub_257_initrd_gets_the_os_release_cpio() -> None:
    prediction = predict_boot_pcrs(small_uki())
    initrd = b"initrd-bytes-13" + b"\0" + OS_RELEASE_CPIO
    assert prediction.events[9][1].digest == sha256(initrd)


def test_stub_257_initrd_order_with_ucode_and_pcrpkey() -> None:
    uki = small_uki(_ucode=b"UCODE", _pcrpkey=b"KEY")
    prediction = predict_boot_pcrs(uki)
    assert prediction.measured_sections == (
        ".linux",
        ".osrel",
        ".cmdline",
        ".initrd",
        ".ucode",
        ".pcrpkey",
    )
    pkey_cpio = _cpio(b"tpm2-pcr-public-key.pem", b"KEY")
    initrd = b"UCODE\0\0\0" + b"initrd-bytes-13\0" + pkey_cpio + OS_RELEASE_CPIO
    assert prediction.events[9][1].digest == sha256(initrd)


def _cpio(name: bytes, contents: bytes) -> bytes:
    """OS_RELEASE_CPIO with another file name and contents (lengths patched)."""
    path = b".extra/" + name + b"\0"
    file_header = (
        b"070701" b"00000002" b"00008124" + b"00000000" * 2 + b"00000001" b"00000000"
        + b"%08x" % len(contents) + b"00000000" * 4 + b"%08x" % len(path) + b"00000000"
    )  # fmt: skip
    head = OS_RELEASE_CPIO[:120] + file_header + path
    head += bytes(-len(head) % 4)
    body = contents + bytes(-len(contents) % 4)
    return head + body + OS_RELEASE_CPIO[-124:]


def test_stub_252_passes_the_initrd_unchanged() -> None:
    prediction = predict_boot_pcrs(small_uki("252.39-1~deb12u2"))
    assert prediction.events[9][1].digest == sha256(b"initrd-bytes-13")


def test_stub_252_ignores_uname_and_sbat_254_and_257_measure_them() -> None:
    extra = [SectionSpec(b".uname", b"6.1.0-test"), SectionSpec(b".sbat", b"sbat,1\n")]
    old = predict_boot_pcrs(small_uki("252.39-1~deb12u2", extra))
    assert old.measured_sections == (".linux", ".osrel", ".cmdline", ".initrd")
    for version in ("254.26-1~bpo12+1", "257.13-1~deb13u1"):
        new = predict_boot_pcrs(small_uki(version, extra))
        assert new.measured_sections[-2:] == (".uname", ".sbat")


def test_pcrsig_is_never_measured() -> None:
    prediction = predict_boot_pcrs(small_uki(_pcrsig=b"{}"))
    assert ".pcrsig" not in prediction.measured_sections
    names = [e.description for e in prediction.events[11]]
    assert not any(".pcrsig" in n for n in names)


def test_stub_252_section_lookup_is_a_prefix_match_and_last_wins() -> None:
    """252's locate_sections compares only strlen(name) bytes and keeps the last match."""
    extra = [SectionSpec(b".initrdX", b"later")]
    p252 = predict_boot_pcrs(small_uki("252.39-1~deb12u2", extra))
    p257 = predict_boot_pcrs(small_uki("257.13-1~deb13u1", extra))
    initrd_data_252 = [e.digest for e in p252.events[11] if e.description == ".initrd section data"]
    initrd_data_257 = [e.digest for e in p257.events[11] if e.description == ".initrd section data"]
    assert initrd_data_252 == [sha256(b"later")]
    assert initrd_data_257 == [sha256(b"initrd-bytes-13")]


def test_stub_257_profile_zero_overrides_base_sections() -> None:
    extra = [
        SectionSpec(b".profile", b"ID=main\n"),
        SectionSpec(b".cmdline", b"profile cmdline"),
        SectionSpec(b".profile", b"ID=second\n"),
        SectionSpec(b".cmdline", b"second cmdline"),
    ]
    prediction = predict_boot_pcrs(small_uki(extra=extra))
    assert prediction.measured_sections[-1] == ".profile"
    data = {
        e.description: e.digest
        for e in prediction.events[11]
        if e.description.endswith("section data")
    }
    assert data[".cmdline section data"] == sha256(b"profile cmdline")
    assert data[".profile section data"] == sha256(b"ID=main\n")
    assert prediction.events[9][0].digest == sha256("profile cmdline\0".encode("utf-16-le"))


@pytest.mark.parametrize(
    ("version", "raw", "expected"),
    [
        # 252: control characters → spaces, trailing spaces chopped, leading kept.
        ("252.39", b"  root=/dev/vda\tro quiet \n", "  root=/dev/vda ro quiet"),
        # 257: leading and trailing whitespace (incl. DEL) dropped, inner ones → spaces.
        ("257.13", b"  root=/dev/vda\tro\x7fquiet \n", "root=/dev/vda ro quiet"),
        # Both stop at the first NUL and decode UTF-8, skipping invalid bytes.
        ("257.13", b"a=\xc3\xa9\xff b\0ignored", "a=\u00e9 b"),
        ("252.39", b"x=\xf0\x9f\x98\x80y", "x=y"),
    ],
)
def test_command_line_clean_up(version: str, raw: bytes, expected: str) -> None:
    prediction = predict_boot_pcrs(small_uki(version, _cmdline=raw))
    assert prediction.events[9][0].digest == sha256((expected + "\0").encode("utf-16-le"))


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        st.characters(
            min_codepoint=0x21,
            max_codepoint=0xFFFF,
            exclude_categories=("Cs",),
            exclude_characters="\x7f",
        ),
        min_size=1,
        max_size=40,
    )
)
def test_command_line_utf8_is_decoded_as_the_stub_does(text: str) -> None:
    """Valid UTF-8 of BMP characters without whitespace reaches the kernel unchanged."""
    for version in ("252.39", "257.13"):
        prediction = predict_boot_pcrs(small_uki(version, _cmdline=text.encode()))
        assert prediction.events[9][0].digest == sha256((text + "\0").encode("utf-16-le"))


@pytest.mark.parametrize(
    ("uki", "message"),
    [
        (lambda: small_uki("255.4-1"), "not supported"),
        (lambda: small_uki(_sdmagic=b""), "sdmagic"),
        (lambda: small_uki(_sdmagic=b"hello"), "does not name"),
        (lambda: small_uki(_linux=b""), r"no \.linux"),
        (lambda: small_uki(_cmdline=b""), r"no \.cmdline"),
        (lambda: small_uki(_cmdline=b" \n"), "empty"),
        (lambda: small_uki(_initrd=b""), r"no \.initrd"),
        (lambda: small_uki(extra=[SectionSpec(b".dtbauto", b"dt")]), "dtbauto"),
        (lambda: small_uki(_linux=b"not a PE"), "MZ"),
        (
            lambda: small_uki(_linux=build_pe([SectionSpec(b".t", b"k")], major_image_version=0)),
            "too old",
        ),
        (
            lambda: small_uki(_linux=build_pe([SectionSpec(b".t", b"k")], machine=0xAA64)),
            "not x86-64",
        ),
    ],
)
def test_unpredictable_ukis_are_refused(uki, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FormatError, match=message):
        predict_boot_pcrs(uki())


def test_secure_boot_drops_the_kernel_event_from_pcr4() -> None:
    uki = small_uki()
    off = predict_boot_pcrs(uki)
    on = predict_boot_pcrs(uki, secure_boot=True)
    assert [e.digest for e in on.events[4]] == [e.digest for e in off.events[4][:3]]
    assert off.events[4][3].digest == authenticode_digest(KERNEL)
    assert on.pcrs[4] != off.pcrs[4]
    assert (on.pcrs[9], on.pcrs[11]) == (off.pcrs[9], off.pcrs[11])
    assert on.to_json()["secure_boot"] is True


def test_to_json_has_hex_values() -> None:
    prediction = predict_boot_pcrs(small_uki())
    doc = json.loads(json.dumps(prediction.to_json()))
    assert doc["stub_version"] == "257.13-1~deb13u1"
    assert set(doc["pcrs"]) == {"4", "9", "11", "12", "13"}
    assert doc["pcrs"]["11"] == prediction.pcrs[11].hex()
    assert doc["events"]["4"][0] == {
        "pcr": 4,
        "type": "EV_EFI_ACTION",
        "description": "Calling EFI Application from Boot Option",
        "digest": ACTION_DIGEST.hex(),
    }


_SEED = small_uki()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(_SEED)),
)
def test_mutated_ukis_raise_only_format_error(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SEED)
    for offset, value in edits:
        data[offset] = value
    with contextlib.suppress(FormatError):
        predict_boot_pcrs(bytes(data[:cut]))


# --- UKIs built by ukify, PCR 11 by systemd-measure ----------------------------------------


@dataclass(frozen=True)
class UkiInputs:
    kernel: Path
    initrd: Path
    cmdline: Path
    osrel: Path
    ucode: Path
    pcrpkey: Path


@pytest.fixture(scope="module")
def trixie_tools(uki_oracles: Path) -> Path:
    """Debian trixie's ukify, stub 257 and systemd-measure 257 (scripts/fetch-ukify.sh)."""
    pytest.importorskip("pefile", reason="ukify needs the 'pefile' Python package")
    return uki_oracles


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> UkiInputs:
    if not KERNEL_PE.exists():
        pytest.skip(f"{KERNEL_PE} missing: run scripts/install-host-deps.sh")
    d = tmp_path_factory.mktemp("uki-inputs")
    kernel = d / "vmlinuz.efi"
    image = bytearray(KERNEL_PE.read_bytes())
    major_image_version_at = int.from_bytes(image[0x3C:0x40], "little") + 24 + 44
    image[major_image_version_at : major_image_version_at + 2] = (1).to_bytes(2, "little")
    kernel.write_bytes(bytes(image))
    (d / "initrd").write_bytes(
        b"".join(sha256(i.to_bytes(2, "little")) for i in range(3000)) + b"odd"
    )
    (d / "cmdline").write_bytes(b"  root=/dev/vda\tro quiet \n")
    (d / "os-release").write_bytes(b'ID=debian\nVERSION_ID="13"\n')
    (d / "ucode").write_bytes(b"GenuineIntel microcode " * 40)
    (d / "pcrpkey.pem").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n"
        b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4xXd8m5HX5CwB5J6U3Q2fKJbTq3C\n"
        b"lXhl1xj1yf7F8bmA0XkXGQh7a1o6ZqX2rj6r0z2QkW8f5Lx0yYV7mHnA9g==\n"
        b"-----END PUBLIC KEY-----\n"
    )
    return UkiInputs(
        kernel,
        d / "initrd",
        d / "cmdline",
        d / "os-release",
        d / "ucode",
        d / "pcrpkey.pem",
    )


def ukify(
    tools: Path, stub: Path, out: Path, inp: UkiInputs, *extra: str, measure_bin: str = "bin"
) -> str:
    """Build ``out`` with ukify; returns its stdout (systemd-measure output with --measure,
    by the systemd-measure in ``tools/measure_bin``)."""
    proc = run(
        [
            sys.executable,
            tools / "root/usr/bin/ukify",
            "build",
            f"--linux={inp.kernel}",
            f"--initrd={inp.initrd}",
            f"--cmdline=@{inp.cmdline}",
            f"--os-release=@{inp.osrel}",
            f"--stub={stub}",
            f"--output={out}",
            f"--tools={tools / measure_bin}",
            *extra,
        ]
    )
    return proc.stdout.decode()


def measured_pcr11(text: str) -> bytes:
    """The last (all phases) sha256 value of PCR 11 in systemd-measure's text output."""
    values = re.findall(r"^11:sha256=([0-9a-f]{64})$", text, re.MULTILINE)
    assert values, text
    return bytes.fromhex(values[-1])


def lief_authentihash(path: Path) -> bytes:
    binary = lief.PE.parse(str(path))
    assert binary is not None
    return bytes(binary.authentihash(lief.PE.ALGORITHMS.SHA_256))


def test_stub_252_uki_matches_systemd_measure_252(
    trixie_tools: Path, inputs: UkiInputs, tmp_path: Path
) -> None:
    if not HOST_STUB.exists() or not HOST_MEASURE.exists():
        pytest.skip("host systemd-boot-efi / systemd-measure missing")
    version = run([HOST_MEASURE, "--version"]).stdout.decode()
    if not version.startswith("systemd 252 "):
        pytest.skip(f"host systemd is not 252 (bookworm): {version.splitlines()[0]}")
    uki = tmp_path / "uki.efi"
    ukify(trixie_tools, HOST_STUB, uki, inputs, "--uname=6.1.0-test")
    prediction = predict_boot_pcrs(uki.read_bytes())
    assert prediction.stub_version.startswith("252.")
    # .uname and .sbat are in the UKI but stub 252 does not measure them.
    assert prediction.measured_sections == (".linux", ".osrel", ".cmdline", ".initrd")

    measured = run(
        [
            HOST_MEASURE,
            "calculate",
            f"--linux={inputs.kernel}",
            f"--osrel={inputs.osrel}",
            f"--cmdline={inputs.cmdline}",
            f"--initrd={inputs.initrd}",
            "--bank=sha256",
        ]
    ).stdout.decode()
    assert prediction.pcrs[11] == measured_pcr11(measured)

    assert prediction.events[4][2].digest == lief_authentihash(uki)
    assert prediction.events[4][3].digest == lief_authentihash(inputs.kernel)
    assert prediction.events[9][0].digest == sha256(
        "  root=/dev/vda ro quiet\0".encode("utf-16-le")
    )
    assert prediction.events[9][1].digest == sha256(inputs.initrd.read_bytes())


@pytest.mark.parametrize(
    "extra",
    [
        ("--uname=6.12.0-test",),
        ("--uname=6.12.0-test", "--microcode=@ucode", "--pcrpkey=@pcrpkey"),
    ],
    ids=["plain", "ucode-pcrpkey"],
)
def test_stub_257_uki_matches_ukify_measure_257(
    trixie_tools: Path, inputs: UkiInputs, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    args = [
        a.replace("@ucode", str(inputs.ucode)).replace("@pcrpkey", str(inputs.pcrpkey))
        for a in extra
    ]
    stub = trixie_tools / "root/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    uki = tmp_path / "uki.efi"
    measured = ukify(trixie_tools, stub, uki, inputs, "--measure", *args)
    prediction = predict_boot_pcrs(uki.read_bytes())
    assert prediction.stub_version.startswith("257.")
    assert prediction.pcrs[11] == measured_pcr11(measured)
    assert prediction.events[4][2].digest == lief_authentihash(uki)
    assert prediction.events[4][3].digest == lief_authentihash(inputs.kernel)
    assert prediction.events[9][0].digest == sha256("root=/dev/vda ro quiet\0".encode("utf-16-le"))
    if len(extra) == 1:
        assert prediction.measured_sections == (
            ".linux",
            ".osrel",
            ".cmdline",
            ".initrd",
            ".uname",
            ".sbat",
        )
    else:
        assert prediction.measured_sections == (
            ".linux",
            ".osrel",
            ".cmdline",
            ".initrd",
            ".ucode",
            ".uname",
            ".sbat",
            ".pcrpkey",
        )


def test_stub_254_uki_matches_ukify_measure_254(
    trixie_tools: Path, inputs: UkiInputs, tmp_path: Path
) -> None:
    stub = trixie_tools / "bpo/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    uki = tmp_path / "uki.efi"
    measured = ukify(
        trixie_tools,
        stub,
        uki,
        inputs,
        "--measure",
        "--uname=6.1.0-test",
        f"--pcrpkey={inputs.pcrpkey}",
        measure_bin="bpo/bin",
    )
    prediction = predict_boot_pcrs(uki.read_bytes())
    assert prediction.stub_version.startswith("254.")
    assert prediction.measured_sections == (
        ".linux",
        ".osrel",
        ".cmdline",
        ".initrd",
        ".uname",
        ".sbat",
        ".pcrpkey",
    )
    assert prediction.pcrs[11] == measured_pcr11(measured)
    # 254 cleans the command line as 252 does; it appends the .pcrpkey cpio to the initrd.
    assert prediction.events[9][0].digest == sha256(
        "  root=/dev/vda ro quiet\0".encode("utf-16-le")
    )
    initrd = inputs.initrd.read_bytes()
    pkey = inputs.pcrpkey.read_bytes()
    assert prediction.events[9][1].digest == sha256(
        initrd + bytes(-len(initrd) % 4) + _cpio(b"tpm2-pcr-public-key.pem", pkey)
    )


def test_stub_257_os_release_cpio_unpacks_with_gnu_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio not installed (scripts/install-host-deps.sh installs it)")
    # The kernel unpacks this archive after the padded initrd (see the test above).
    archive = OS_RELEASE_CPIO
    run(["cpio", "-id", "--quiet"], cwd=tmp_path, input=archive)
    assert (tmp_path / ".extra/os-release").read_bytes() == b"ID=debian\n"
    assert (tmp_path / ".extra").stat().st_mode & 0o777 == 0o555
    assert (tmp_path / ".extra/os-release").stat().st_mode & 0o777 == 0o444
