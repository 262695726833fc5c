"""Choosing QEMU's accelerator: $AICERT_ACCEL, and hosts whose KVM failed a guest before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aicert.builder.platforms.local import qemu
from aicert.verifier.errors import InputError


@pytest.fixture(autouse=True)
def verdict_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(qemu.ACCEL_ENV, raising=False)
    return tmp_path / "aicert" / "kvm-failed.json"


@pytest.mark.parametrize(("value", "expected"), [("tcg", "tcg"), ("KVM", "kvm"), ("auto", None)])
def test_accel_env_forces_or_leaves_auto(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv(qemu.ACCEL_ENV, value)
    assert qemu.forced_accel() == expected


def test_accel_env_with_another_value_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(qemu.ACCEL_ENV, "hvf")
    with pytest.raises(InputError, match=r"AICERT_ACCEL must be kvm, tcg or auto, not 'hvf'"):
        qemu.forced_accel()


def test_a_recorded_kvm_failure_sends_later_boots_to_tcg(
    verdict_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[bool] = []

    def kvm_runs() -> bool:
        probed.append(True)
        return True

    monkeypatch.setattr(qemu, "kvm_works", kvm_runs)
    assert qemu.choose_accel() == "kvm"
    assert probed == [True]

    qemu.remember_kvm_failure()
    qemu.remember_kvm_failure()
    assert json.loads(verdict_cache.read_text()) == [qemu.host_key()]
    assert qemu.choose_accel() == "tcg"
    assert probed == [True], "a remembered failure needs no probe"


def test_the_host_key_names_qemu_kernel_and_cpu() -> None:
    key = qemu.host_key()
    assert key.startswith("QEMU emulator version")
    assert key.count(" | ") == 2


def test_a_corrupt_verdict_file_is_ignored(verdict_cache: Path) -> None:
    verdict_cache.parent.mkdir(parents=True)
    verdict_cache.write_text("{not json")
    assert qemu.kvm_verdict_file() == verdict_cache
    qemu.remember_kvm_failure()
    assert json.loads(verdict_cache.read_text()) == [qemu.host_key()]


def test_vm_takes_the_forced_accelerator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(512))
    monkeypatch.setenv(qemu.ACCEL_ENV, "tcg")
    monkeypatch.setattr(qemu, "kvm_works", lambda: pytest.fail("forced: no probe"))
    assert qemu.Vm(qemu.VmSpec(disk=disk)).accel == "tcg"
