"""Unit tests of the image builder: readiness line, package lock, config rendering,
recipe fields, build-directory atomicity, bad input, and build comparison."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from aicert.agent import readiness
from aicert.builder import image as image_mod
from aicert.builder import mkosi as mkosi_mod
from aicert.builder.image import ImageRequest, build_image, lock_from_builds
from aicert.builder.mkosi import BuildParameters, render_config, tree_digest
from aicert.builder.package_lock import (
    LockMismatchError,
    PackageLock,
    dpkg_status_packages,
    load_lock,
    manifest_packages,
)
from aicert.builder.platforms.local import qemu
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.builder.recipe import roothash_of, uki_cmdline
from aicert.builder.reproducibility import partition_differences, read_gpt, uki_differences
from aicert.verifier.errors import FormatError, InputError, ToolError
from aicert.verifier.input_file import MAX_FIRMWARE_LOG_BYTES
from hypothesis import given, settings
from hypothesis import strategies as st
from pe_build import SectionSpec, build_pe

from aicert import readiness_line

ROOTHASH = "ab" * 32


def _params(
    tmp_profile: str = "qemu", mirror: str = "http://mirror.example/debian"
) -> BuildParameters:
    return BuildParameters(
        profile=tmp_profile,
        mirror=mirror,
        security_mirror=None,
        source_date_epoch=1764028800,
        seed="5b0f3a57-6a3c-4e0e-9f1a-3e9d6f1c2a11",
        lock=PackageLock({"image": {"python3": "3.13.5-1"}}),
    )


# ------------------------------------------------------------------- readiness line


def _report() -> readiness_line.ReadinessReport:
    return readiness_line.ReadinessReport(
        pcrs={i: bytes([i]) * 32 for i in range(24)},
        event_log=b"\x00\x01log bytes",
        boot_id="6f1c2a11-aaaa-bbbb-cccc-3e9d6f1c2a11",
        agent_version="0.1.0",
    )


def test_ready_line_round_trips_through_console_noise() -> None:
    line = _report().to_line()
    assert line.startswith("AICERT-READY {")
    assert "\n" not in line
    console = f"[  3.1] kernel says hi\r\n{line}\r\nDebian GNU/Linux 13\n"
    assert readiness_line.parse_ready_line(console) == _report()


def test_read_report_from_sysfs_layout(tmp_path: Path) -> None:
    pcr_dir = tmp_path / "pcr-sha256"
    pcr_dir.mkdir()
    for i in range(24):
        (pcr_dir / str(i)).write_text((bytes([i]) * 32).hex().upper() + "\n")
    (tmp_path / "log").write_bytes(b"\x00\x01log bytes")
    (tmp_path / "boot_id").write_text("6f1c2a11-aaaa-bbbb-cccc-3e9d6f1c2a11\n")
    report = readiness.read_report(
        pcr_dir=pcr_dir, event_log=tmp_path / "log", boot_id=tmp_path / "boot_id"
    )
    assert report.pcrs == _report().pcrs
    assert report.event_log == b"\x00\x01log bytes"


def test_read_report_missing_pcr_is_one_line_input_error(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"x")
    (tmp_path / "boot_id").write_text("id")
    with pytest.raises(InputError, match="cannot read PCR 0"):
        readiness.read_report(
            pcr_dir=tmp_path, event_log=tmp_path / "log", boot_id=tmp_path / "boot_id"
        )


def test_read_report_refuses_a_firmware_log_without_end(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("wb") as f:
        f.truncate(MAX_FIRMWARE_LOG_BYTES + 1)
    (tmp_path / "boot_id").write_text("id")
    with pytest.raises(InputError, match=r"firmware event log .* larger than"):
        readiness.read_report(pcr_dir=tmp_path, event_log=log, boot_id=tmp_path / "boot_id")


def test_write_line_to_console_file(tmp_path: Path) -> None:
    console = tmp_path / "console"
    console.touch()
    readiness.write_line(_report().to_line(), console)
    assert readiness_line.parse_ready_line(console.read_text()) == _report()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no line here", "no AICERT-READY line"),
        ("AICERT-READY {not json", "not valid JSON"),
        ("AICERT-READY []", "not a JSON object"),
        ('AICERT-READY {"pcrs": {}}', "lacks field"),
    ],
)
def test_parse_ready_line_rejects(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        readiness_line.parse_ready_line(text)


def test_parse_ready_line_rejects_short_pcr_and_bad_base64() -> None:
    body = json.loads(_report().to_line().split(" ", 1)[1])
    body["pcrs"]["7"] = "00" * 20
    with pytest.raises(FormatError, match="holds 20 bytes"):
        readiness_line.parse_ready_line("AICERT-READY " + json.dumps(body))
    body = json.loads(_report().to_line().split(" ", 1)[1])
    body["event_log"] = "***"
    with pytest.raises(FormatError, match="base64"):
        readiness_line.parse_ready_line("AICERT-READY " + json.dumps(body))
    body = json.loads(_report().to_line().split(" ", 1)[1])
    del body["pcrs"]["23"]
    with pytest.raises(FormatError, match="all 24 PCRs"):
        readiness_line.parse_ready_line("AICERT-READY " + json.dumps(body))


@pytest.mark.parametrize("spelling", ["09", "+9", " 9", "9.0", "\u00b29"])
def test_parse_ready_line_knows_one_spelling_per_pcr(spelling: str) -> None:
    body = json.loads(_report().to_line().split(" ", 1)[1])
    body["pcrs"][spelling] = body["pcrs"].pop("9")
    with pytest.raises(FormatError, match="invalid PCR"):
        readiness_line.parse_ready_line("AICERT-READY " + json.dumps(body))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_ready_line_random_text_raises_only_format_error(tail: str) -> None:
    with contextlib.suppress(FormatError):
        readiness_line.parse_ready_line("AICERT-READY " + tail)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=4))
def test_parse_ready_line_mutated_raises_only_format_error(pos: int, junk: bytes) -> None:
    line = _report().to_line()
    pos = pos % len(line)
    mutated = line[:pos] + junk.decode("latin-1") + line[pos + 1 :]
    with contextlib.suppress(FormatError):
        readiness_line.parse_ready_line(mutated)


# ------------------------------------------------------------------- package lock


def test_lock_round_trip_and_preferences(tmp_path: Path) -> None:
    lock = PackageLock({"image": {"python3": "3.13.5-1", "systemd": "257.13-1~deb13u1"}})
    path = tmp_path / "lock.json"
    path.write_text(lock.to_json())
    loaded = load_lock(path)
    assert loaded.parts["image"] == lock.parts["image"]
    prefs = loaded.apt_preferences()
    assert "Package: systemd\nPin: version 257.13-1~deb13u1\nPin-Priority: 1001\n" in prefs


def test_missing_lock_file_is_empty_lock(tmp_path: Path) -> None:
    assert load_lock(tmp_path / "none.json").is_empty


def test_unavailable_locked_version_names_package_and_snapshot_hint() -> None:
    lock = PackageLock({"image": {"python3": "3.13.5-1", "systemd": "257.13-1~deb13u1"}})
    with pytest.raises(LockMismatchError) as info:
        lock.check_manifest("image", {"python3": "3.13.5-1", "systemd": "257.14-1"})
    message = info.value.message
    assert "systemd 257.13-1~deb13u1" in message
    assert "257.14-1" in message
    assert "--mirror http://snapshot.debian.org/" in message
    assert "\n" not in message


def test_package_missing_from_lock_is_an_error() -> None:
    lock = PackageLock({"image": {"python3": "3.13.5-1"}})
    with pytest.raises(LockMismatchError, match=r"package zsh .* not in the package lock"):
        lock.check_manifest("image", {"python3": "3.13.5-1", "zsh": "5.9-8"})


def test_lock_conflicting_parts_and_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="both"):
        PackageLock({"image": {"a1": "1"}, "initrd": {"a1": "2"}}).pinned()
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({"format": 1, "image": {"bad name!": "1"}}))
    with pytest.raises(FormatError, match="invalid package name"):
        load_lock(path)
    path.write_text(json.dumps({"format": 1, "image": {"ok": "1\nPin-Priority: 1"}}))
    with pytest.raises(FormatError, match="invalid version"):
        load_lock(path)
    path.write_text("{")
    with pytest.raises(FormatError, match="cannot read package lock"):
        load_lock(path)


def test_manifest_and_dpkg_status_parsing(tmp_path: Path) -> None:
    manifest = tmp_path / "image.manifest"
    manifest.write_text(
        json.dumps(
            {
                "manifest_version": 1,
                "packages": [
                    {"type": "deb", "name": "zlib1g", "version": "1:1.3.dfsg+really1.3.1-1+b1"},
                    {"type": "deb", "name": "bash", "version": "5.2.37-2+b5"},
                ],
            }
        )
    )
    assert list(manifest_packages(manifest)) == ["bash", "zlib1g"]
    status = tmp_path / "status"
    status.write_text(
        "Package: erofs-utils\nStatus: install ok installed\nVersion: 1.8.6-1\n"
        "Description: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\n"
        "Version: 1\n"
    )
    assert dpkg_status_packages(status) == {"erofs-utils": "1.8.6-1"}
    manifest.write_text("{}")
    with pytest.raises(FormatError, match="mkosi manifest"):
        manifest_packages(manifest)


def test_lock_from_builds_merges_profiles(tmp_path: Path) -> None:
    for name, extra in (("qemu", {}), ("debug", {"less": "668-1"})):
        build = tmp_path / name
        build.mkdir()
        recipe = {
            "format": 1,
            "inputs": {"packages": {"image": {"bash": "5.2", **extra}, "initrd": {"bash": "5.2"}}},
        }
        (build / "recipe.json").write_text(json.dumps(recipe))
    lock = lock_from_builds([tmp_path / "qemu", tmp_path / "debug"])
    assert lock.parts["image"] == {"bash": "5.2", "less": "668-1"}


# ------------------------------------------------------------------- config rendering


def test_render_config_is_deterministic_and_complete(tmp_path: Path) -> None:
    digest_a = render_config(_params(), tmp_path / "a")
    digest_b = render_config(_params(), tmp_path / "b")
    assert digest_a == digest_b == tree_digest(tmp_path / "a")
    conf = (tmp_path / "a" / "mkosi.conf").read_text()
    assert "SourceDateEpoch=1764028800" in conf
    assert "Seed=5b0f3a57" in conf
    assert "ToolsTreeMirror=http://mirror.example/debian" in conf
    sources = (tmp_path / "a" / "mkosi.sandbox/etc/apt/sources.list.d/mkosi.sources").read_text()
    assert "URIs: http://mirror.example/debian" in sources
    assert "Suites: trixie trixie-updates" in sources
    assert "Pin: version 3.13.5-1" in (tmp_path / "a" / mkosi_mod.LOCK_PREFERENCES).read_text()
    assert (tmp_path / "a" / "mkosi.conf.d" / "50-qemu.conf").is_file()
    assert not list((tmp_path / "a").rglob("*.j2"))
    site = tmp_path / "a" / mkosi_mod.AICERT_TREE / mkosi_mod.SITE_PACKAGES / "aicert"
    module = site / "agent" / "readiness.py"
    assert module.read_bytes() == (mkosi_mod.REPO_ROOT / "agent" / "readiness.py").read_bytes()
    assert (site / "verifier" / "boot" / "uki.py").is_file()
    assert (site / "__init__.py").is_file()
    assert int(module.stat().st_mtime) == 1764028800
    assert not list(site.rglob("*.pyc"))


def test_render_config_digest_follows_inputs(tmp_path: Path) -> None:
    base = render_config(_params(), tmp_path / "a")
    other_mirror = render_config(_params(mirror="http://other.example/debian"), tmp_path / "b")
    other_profile = render_config(_params(tmp_profile="debug"), tmp_path / "c")
    assert len({base, other_mirror, other_profile}) == 3


def test_unknown_profile_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown profile 'nvidia'; choose one of: qemu, azure, "):
        render_config(_params(tmp_profile="nvidia"), tmp_path / "a")


# ------------------------------------------------------------------- build_image: bad input


def _no_partial_output(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not list(parent.glob(f"{name}.tmp-*"))


def test_build_unknown_profile_fails_before_any_output(tmp_path: Path) -> None:
    request = ImageRequest(output=tmp_path / "img", profile="nvidia", package_cache=tmp_path / "pc")
    with pytest.raises(InputError, match="unknown profile"):
        build_image(request, print)
    _no_partial_output(tmp_path, "img")


def test_build_on_full_disk_fails_with_one_line(tmp_path: Path) -> None:
    request = ImageRequest(
        output=tmp_path / "img", package_cache=tmp_path / "pc", min_free_bytes=1 << 60
    )
    with pytest.raises(ToolError, match=r"only \d+ MiB free .* needs about") as info:
        build_image(request, print)
    assert "\n" not in info.value.message
    _no_partial_output(tmp_path, "img")


def test_build_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an aicert image directory"):
        build_image(ImageRequest(output=tmp_path / "img", package_cache=tmp_path / "pc"), print)
    assert (tmp_path / "img" / "notes.txt").read_text() == "mine"


def test_missing_tool_is_one_line_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mkosi_mod, "TOOLS_DIR", tmp_path / "no-mkosi")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    request = ImageRequest(output=tmp_path / "img", package_cache=tmp_path / "pc")
    with pytest.raises(ToolError, match="'bash' is not installed or not on PATH"):
        build_image(request, print)
    _no_partial_output(tmp_path, "img")


def test_install_replaces_previous_build_whole(tmp_path: Path) -> None:
    out = tmp_path / "img"
    out.mkdir()
    (out / "recipe.json").write_text("old")
    (out / "stale").write_text("old")
    tmp = tmp_path / "img.tmp-1"
    result = tmp / "result"
    result.mkdir(parents=True)
    for name in image_mod.OUTPUT_FILES:
        (result / name).write_text("new")
    image_mod._install(result, out, tmp)
    assert sorted(p.name for p in out.iterdir()) == sorted(image_mod.OUTPUT_FILES)
    assert (tmp / "previous" / "stale").exists()


def _dirs(tmp_path: Path, output: str) -> mkosi_mod.MkosiDirs:
    return mkosi_mod.MkosiDirs(
        config=tmp_path / "config",
        output=tmp_path / output,
        workspace=tmp_path / "ws",
        cache=tmp_path / "cache",
        package_cache=tmp_path / "pc",
    )


def test_tools_tree_is_kept_for_the_next_build(tmp_path: Path) -> None:
    first = _dirs(tmp_path, "out1")
    image_mod._reuse_tools_tree(first)
    assert not (first.output / image_mod.TOOLS_TREE).exists(), "nothing kept yet"
    (first.output / image_mod.TOOLS_TREE / "usr").mkdir(parents=True)
    (first.output / image_mod.TOOLS_TREE / "usr" / "marker").write_text("tools")
    image_mod._keep_tools_tree(first)
    assert not (first.output / image_mod.TOOLS_TREE).exists()
    second = _dirs(tmp_path, "out2")
    image_mod._reuse_tools_tree(second)
    assert (second.output / image_mod.TOOLS_TREE / "usr" / "marker").read_text() == "tools"
    assert not (second.cache / image_mod.KEPT_TOOLS_TREE).exists()


def test_failed_mkosi_run_keeps_no_tools_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_built(dirs: mkosi_mod.MkosiDirs, on_line: object) -> None:
        (dirs.output / image_mod.TOOLS_TREE / "usr").mkdir(parents=True)
        raise ToolError("mkosi failed")

    monkeypatch.setattr(image_mod, "ensure_mkosi", lambda: None)
    monkeypatch.setattr(image_mod, "run_mkosi", half_built)
    request = ImageRequest(
        output=tmp_path / "img", package_cache=tmp_path / "pc", incremental_cache=tmp_path / "inc"
    )
    with pytest.raises(ToolError, match="mkosi failed"):
        build_image(request, print)
    assert not list((tmp_path / "inc").rglob(image_mod.KEPT_TOOLS_TREE))
    _no_partial_output(tmp_path, "img")


# ------------------------------------------------------------------- recipe and comparison


def _uki(cmdline: str, initrd: bytes = b"initrd") -> bytes:
    return build_pe(
        [
            SectionSpec(b".osrel", b"ID=debian\n"),
            SectionSpec(b".cmdline", cmdline.encode() + b"\0"),
            SectionSpec(b".initrd", initrd),
        ]
    )


def test_roothash_from_uki_cmdline() -> None:
    uki = _uki(f"roothash={ROOTHASH} console=ttyS0 ro")
    assert uki_cmdline(uki) == f"roothash={ROOTHASH} console=ttyS0 ro"
    assert roothash_of(uki) == ROOTHASH
    with pytest.raises(FormatError, match="no roothash"):
        roothash_of(_uki("console=ttyS0"))


def test_uki_differences_name_the_section(tmp_path: Path) -> None:
    (tmp_path / "a.efi").write_bytes(_uki(f"roothash={ROOTHASH}", b"one"))
    (tmp_path / "b.efi").write_bytes(_uki(f"roothash={ROOTHASH}", b"two"))
    assert uki_differences(tmp_path / "a.efi", tmp_path / "b.efi") == ["UKI section .initrd"]


ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def _gpt_disk(path: Path, parts: list[tuple[str, str, int, int]]) -> None:
    """A disk with a GPT header at LBA 1 and 128 entries at LBA 2 (CRCs left zero)."""
    with path.open("wb") as f:
        f.truncate(8 << 20)
        header = bytearray(92)
        header[:8] = b"EFI PART"
        struct.pack_into("<QII", header, 72, 2, 128, 128)
        f.seek(512)
        f.write(header)
        for i, (name, type_guid, first, count) in enumerate(parts):
            entry = bytearray(128)
            entry[:16] = uuid.UUID(type_guid).bytes_le
            entry[16:32] = uuid.uuid5(uuid.NAMESPACE_OID, name).bytes_le
            struct.pack_into("<QQ", entry, 32, first, first + count - 1)
            encoded = name.encode("utf-16-le")
            entry[56 : 56 + len(encoded)] = encoded
            f.seek(1024 + i * 128)
            f.write(entry)


def test_partition_differences_name_the_partition(tmp_path: Path) -> None:
    disk = tmp_path / "a.raw"
    _gpt_disk(disk, [("esp", ESP_TYPE, 2048, 4096), ("root-x86-64", ROOT_TYPE, 6144, 8192)])
    assert [p["name"] for p in read_gpt(disk)] == ["esp", "root-x86-64"]
    copy = tmp_path / "b.raw"
    shutil.copyfile(disk, copy)
    assert partition_differences(disk, copy) == ["disk partition table or gaps between partitions"]
    with copy.open("r+b") as f:
        f.seek(6144 * 512 + 100)
        f.write(b"changed")
    assert partition_differences(disk, copy) == [f"disk partition root-x86-64 ({ROOT_TYPE})"]
    _gpt_disk(copy, [("esp", ESP_TYPE, 2048, 4096), ("root-x86-64", ROOT_TYPE, 6144, 4096)])
    assert partition_differences(disk, copy) == ["disk partition layout (GPT)"]


def test_read_gpt_rejects_non_gpt(tmp_path: Path) -> None:
    disk = tmp_path / "x.raw"
    disk.write_bytes(bytes(4096))
    with pytest.raises(FormatError, match="no GPT header"):
        read_gpt(disk)


def test_ready_line_size_is_reasonable() -> None:
    # A real OVMF log is ~10 KB; the line stays one console write.
    report = readiness_line.ReadinessReport(
        pcrs={i: hashlib.sha256(bytes([i])).digest() for i in range(24)},
        event_log=os.urandom(20000),
        boot_id="x",
        agent_version="0.1.0",
    )
    line = report.to_line()
    assert len(line) < 30000
    assert base64.b64decode(json.loads(line.split(" ", 1)[1])["event_log"]) == report.event_log


# ------------------------------------------------------------------- QEMU reference machine


def test_an_agent_error_on_the_console_is_found(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(512))
    vm = qemu.Vm(qemu.VmSpec(disk=disk, accel="tcg"))
    vm.console_log = tmp_path / "console.log"
    vm.console_log.write_text("[  OK  ] Reached target basic.target\n")
    assert vm.agent_failure() is None
    with vm.console_log.open("a") as console:
        console.write(
            "[    3.1] python3[311]: aicert-agent: error: 2 blank disks, cannot tell which\n"
            "[FAILED] Failed to start aicert-scratch.service\n"
        )
    assert vm.agent_failure() == "aicert-agent: error: 2 blank disks, cannot tell which"


@pytest.mark.skipif(not qemu.OVMF_VARS.is_file(), reason="OVMF is not installed")
def test_qemu_command_line_is_the_reference_machine(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(512))
    issuer = tmp_path / "ca.der"
    vm = qemu.Vm(qemu.VmSpec(disk=disk, accel="tcg", host_port=18443, issuer_certificate=issuer))
    vm._tmp = tempfile.TemporaryDirectory(prefix="aicert-vm-test-")
    try:
        vm.console_log = vm.workdir / "console.log"
        vm._swtpm = Swtpm.for_qemu(vm.workdir / "tpm", vm.workdir / "swtpm.sock")
        argv = " ".join(vm.argv())
    finally:
        vm._tmp.cleanup()
    assert "-machine q35 -accel tcg -m 2048 -smp 2" in argv
    assert f"readonly=on,file={qemu.OVMF_CODE}" in argv
    assert "-device tpm-crb,tpmdev=tpm0" in argv
    assert f"snapshot=on,file={disk}" in argv
    assert "virtio-net-pci,netdev=net0,romfile=" in argv
    assert "-device virtio-rng-pci" in argv
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18443-:8443" in argv
    responder = f"{sys.executable} -m aicert.builder.platforms.local.pki_responder {issuer}"
    assert f",guestfwd=tcp:10.0.2.100:80-cmd:{responder} " in argv + " "
    assert f"virtio-blk-pci,drive=scratch,serial={qemu.SCRATCH_SERIAL}" in argv
    assert argv.count("-drive") == 4  # OVMF code, OVMF variables, image, scratch


def test_vm_refuses_missing_disk(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        qemu.Vm(qemu.VmSpec(disk=tmp_path / "none.raw", accel="tcg"))
