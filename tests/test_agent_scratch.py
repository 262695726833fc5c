"""The scratch disk: which disk the image formats, probed with the real blkid and mkfs.ext4.

The sysfs side is a directory shaped like /sys/block; the "disks" are sparse files that
blkid probes and mkfs.ext4 formats exactly as it would block devices.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from pathlib import Path

import pytest
from aicert.agent.scratch import (
    SCRATCH_LABEL,
    BlockDisk,
    ScratchDiskError,
    choose_scratch,
    parse_blkid_export,
    prepare_scratch,
    probe,
    scan_disks,
)
from aicert.builder.platforms.local import qemu
from aicert.verifier.errors import FormatError
from hypothesis import given
from hypothesis import strategies as st

MiB = 1024**2


def _disk(name: str = "vdb", **kw: object) -> BlockDisk:
    args: dict[str, object] = {
        "name": name,
        "size": 64 * MiB,
        "removable": False,
        "read_only": False,
        "model": "",
        "probed": {},
    }
    args.update(kw)
    return BlockDisk(**args)  # type: ignore[arg-type]


class FakeMachine:
    """/sys/block and /dev of a VM: one sysfs entry and one sparse file per disk."""

    def __init__(self, root: Path) -> None:
        self.sys_block = root / "sys" / "block"
        self.dev = root / "dev"
        self.sys_block.mkdir(parents=True)
        self.dev.mkdir()

    def add(self, name: str, size: int = 64 * MiB, *, model: str = "", ro: bool = False) -> Path:
        entry = self.sys_block / name
        (entry / "device").mkdir(parents=True)
        (entry / "size").write_text(f"{size // 512}\n")
        (entry / "removable").write_text("0\n")
        (entry / "ro").write_text("1\n" if ro else "0\n")
        if model:
            (entry / "device" / "model").write_text(model + "\n")
        node = self.dev / name
        with node.open("xb") as f:
            f.truncate(size)
        return node


def _write_mbr(node: Path) -> None:
    """One Linux partition in a DOS partition table, as the Azure resource disk has."""
    with node.open("r+b") as f:
        f.seek(446)
        f.write(bytes([0, 0, 2, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 2048, 8192))
        f.seek(510)
        f.write(b"\x55\xaa")


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)


def test_blank_disk_is_formatted_and_nothing_else_is_touched(machine: FakeMachine) -> None:
    os_disk = machine.add("vda")
    _write_mbr(os_disk)
    before = os_disk.read_bytes()
    machine.add("vdb")
    machine.add("loop0")  # never a platform disk, blank or not
    machine.add("nvme0n1", model="Microsoft NVMe Direct Disk v2")  # Azure local temp disk
    said: list[str] = []

    plan = prepare_scratch(
        sys_block=machine.sys_block, dev=machine.dev, udev=False, say=said.append
    )

    assert (plan.disk.name, plan.needs_format) == ("vdb", True)
    assert probe(machine.dev / "vdb") | {"DEVNAME": ""} == probe(machine.dev / "vdb") | {
        "DEVNAME": "",
        "LABEL": SCRATCH_LABEL,
        "TYPE": "ext4",
    }
    assert os_disk.read_bytes() == before
    assert probe(machine.dev / "nvme0n1") == {}
    assert probe(machine.dev / "loop0") == {}
    assert said == [f"formatting vdb (0.1 GiB, blank) as ext4 {SCRATCH_LABEL}"]


def test_a_disk_already_labelled_is_used_as_is(machine: FakeMachine) -> None:
    machine.add("vdb")
    prepare_scratch(sys_block=machine.sys_block, dev=machine.dev, udev=False)
    formatted = (machine.dev / "vdb").read_bytes()
    machine.add("vdc")  # a second blank disk no longer matters

    plan = prepare_scratch(sys_block=machine.sys_block, dev=machine.dev, udev=False)

    assert (plan.disk.name, plan.needs_format) == ("vdb", False)
    assert (machine.dev / "vdb").read_bytes() == formatted
    assert probe(machine.dev / "vdc") == {}


def test_the_blank_disk_may_appear_after_the_agent_starts_looking(machine: FakeMachine) -> None:
    machine.add("sda")
    _write_mbr(machine.dev / "sda")
    late = threading.Timer(0.5, machine.add, args=("sdb",))
    late.start()
    try:
        plan = prepare_scratch(sys_block=machine.sys_block, dev=machine.dev, udev=False, wait=10)
    finally:
        late.join()
    assert plan.disk.name == "sdb"


def test_no_blank_disk_is_a_clear_error_after_the_wait(machine: FakeMachine) -> None:
    _write_mbr(machine.add("sda"))
    machine.add("sdb", ro=True)
    with pytest.raises(ScratchDiskError, match=r"no blank disk .*sda \(0\.1 GiB, dos\)"):
        prepare_scratch(sys_block=machine.sys_block, dev=machine.dev, udev=False, wait=0)


def test_two_blank_disks_are_refused_and_neither_is_formatted(machine: FakeMachine) -> None:
    machine.add("sdb")
    machine.add("sdc")
    with pytest.raises(ScratchDiskError, match="2 blank disks"):
        prepare_scratch(sys_block=machine.sys_block, dev=machine.dev, udev=False, wait=0)
    assert probe(machine.dev / "sdb") == probe(machine.dev / "sdc") == {}


def test_host_scratch_disk_is_blank_and_sparse(tmp_path: Path) -> None:
    disk = qemu.make_scratch_disk(tmp_path / "scratch.raw", 64 * MiB)
    assert disk.stat().st_size == 64 * MiB
    assert disk.stat().st_blocks == 0
    assert probe(disk) == {}


@pytest.mark.parametrize(
    ("disks", "chosen"),
    [
        ([_disk("vda", probed={"PTTYPE": "gpt"}), _disk("vdb")], "vdb"),
        ([_disk("sdb", removable=True), _disk("sdc")], "sdc"),
        ([_disk("sdb", read_only=True), _disk("sdc")], "sdc"),
        ([_disk("sdb", size=0), _disk("sdc")], "sdc"),
        ([_disk("nvme0n1", model="Microsoft NVMe Direct Disk"), _disk("sdc")], "sdc"),
        # A label on something other than ext4 is not the scratch file system.
        ([_disk("sdb", probed={"TYPE": "vfat", "LABEL": SCRATCH_LABEL}), _disk("sdc")], "sdc"),
    ],
)
def test_choice(disks: list[BlockDisk], chosen: str) -> None:
    assert choose_scratch(disks).disk.name == chosen


def test_two_labelled_disks_are_refused() -> None:
    labelled = {"TYPE": "ext4", "LABEL": SCRATCH_LABEL}
    with pytest.raises(ScratchDiskError, match=r"several disks .*\(sdb, sdc\)"):
        choose_scratch([_disk("sdb", probed=labelled), _disk("sdc", probed=labelled)])


def test_blkid_export_parsing() -> None:
    text = "DEVNAME=/dev/sdb\nLABEL=aicert-scratch\nUUID=1-2\nTYPE=ext4\n"
    assert parse_blkid_export(text) == {
        "DEVNAME": "/dev/sdb",
        "LABEL": SCRATCH_LABEL,
        "UUID": "1-2",
        "TYPE": "ext4",
    }
    with pytest.raises(FormatError, match="unexpected line"):
        parse_blkid_export("TYPE ext4\n")


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_]{1,12}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20),
    )
)
def test_blkid_export_round_trip(fields: dict[str, str]) -> None:
    text = "".join(f"{key}={value}\n" for key, value in fields.items())
    assert parse_blkid_export(text) == fields


@given(st.text(max_size=80))
def test_blkid_export_never_fails_other_than_format_error(text: str) -> None:
    with contextlib.suppress(FormatError):
        parse_blkid_export(text)


def test_scan_reads_sizes_and_flags(machine: FakeMachine) -> None:
    machine.add("sdb", 128 * MiB, model="Virtual Disk", ro=True)
    (disk,) = scan_disks(machine.sys_block, machine.dev)
    assert disk == _disk("sdb", size=128 * MiB, model="Virtual Disk", read_only=True)


def test_the_boot_entry_point_imports_no_more_than_its_module() -> None:
    import subprocess
    import sys

    probe_imports = (
        "import sys, aicert.agent.scratch; "
        "print(sorted(m for m in ('click', 'cryptography', 'tpm2_pytss', 'aicert.agent.cli') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe_imports], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_boot_entry_point_reports_one_line_and_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aicert.agent import scratch

    def no_disk(**_kw: object) -> None:
        raise ScratchDiskError("no blank disk found (looked at: vda)")

    monkeypatch.setattr(scratch, "prepare_scratch", no_disk)
    assert scratch.main(["--wait", "0"]) == ScratchDiskError("x").exit_code
    err = capsys.readouterr().err
    assert err == "aicert-agent: error: no blank disk found (looked at: vda)\n"
