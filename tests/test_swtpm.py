"""The swtpm runner: both modes, clean start and stop, errors, and state kept across modes."""

from __future__ import annotations

import array
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pytest
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.provision import (
    AK_CERT_NV_INDEX,
    AK_HANDLE,
    provision_like_azure,
)
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import ToolError

from aicert.process import run

pytestmark = pytest.mark.swtpm

# swtpm control channel commands (src/swtpm/tpm_ioctl.h)
CMD_INIT = 2
CMD_SET_DATAFD = 16

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_RS_PW = 0x40000009
TPM_CC_STARTUP = 0x144
TPM_CC_READ_PUBLIC = 0x173
TPM_CC_NV_READ = 0x14E
TPM_RC_RETRY = 0x922


def swtpm_children() -> set[int]:
    """swtpm processes started by this test process (other test runs on the machine
    may have their own)."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            comm_and_rest = (entry / "stat").read_text()
        except OSError:
            continue
        comm, _, rest = comm_and_rest.partition(" (")[2].rpartition(") ")
        if comm == "swtpm" and int(rest.split()[1]) == os.getpid():
            pids.add(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def no_leaked_swtpm() -> object:
    before = swtpm_children()
    yield None
    leaked = swtpm_children() - before
    assert not leaked, f"swtpm processes left running: {sorted(leaked)}"


def tpm2_getcap(tcti: str, what: str) -> str:
    proc = run(["tpm2_getcap", what], env={"TPM2TOOLS_TCTI": tcti}, timeout=30)
    return (proc.stdout or b"").decode()


class QemuLikeClient:
    """Talks to a :meth:`Swtpm.for_qemu` swtpm the way QEMU's ``emulator`` TPM backend
    does: CMD_SET_DATAFD hands swtpm one end of a socket pair for TPM commands, CMD_INIT
    powers the TPM on, and the firmware's part (TPM2_Startup) is sent by hand."""

    def __init__(self, ctrl_path: Path) -> None:
        self.ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctrl.settimeout(10)
        self.ctrl.connect(str(ctrl_path))
        self.data, theirs = socket.socketpair()
        self.data.settimeout(10)
        fds = array.array("i", [theirs.fileno()])
        self.ctrl.sendmsg(
            [struct.pack(">I", CMD_SET_DATAFD)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        )
        assert self._ctrl_result() == 0
        theirs.close()
        self.ctrl.sendall(struct.pack(">II", CMD_INIT, 0))
        assert self._ctrl_result() == 0

    def _ctrl_result(self) -> int:
        return int(struct.unpack(">I", self.ctrl.recv(4))[0])

    def command(self, tag: int, code: int, body: bytes) -> tuple[int, bytes]:
        for _ in range(10):
            rc, payload = self._command_once(tag, code, body)
            if rc != TPM_RC_RETRY:
                break
        return rc, payload

    def _command_once(self, tag: int, code: int, body: bytes) -> tuple[int, bytes]:
        self.data.sendall(struct.pack(">HII", tag, 10 + len(body), code) + body)
        header = self.data.recv(10)
        _tag, size, rc = struct.unpack(">HII", header)
        payload = b""
        while len(payload) < size - 10:
            payload += self.data.recv(size - 10 - len(payload))
        return rc, payload

    def startup_clear(self) -> int:
        return self.command(TPM_ST_NO_SESSIONS, TPM_CC_STARTUP, struct.pack(">H", 0))[0]

    def read_public(self, handle: int) -> bytes:
        rc, payload = self.command(
            TPM_ST_NO_SESSIONS, TPM_CC_READ_PUBLIC, struct.pack(">I", handle)
        )
        assert rc == 0, f"TPM2_ReadPublic: 0x{rc:x}"
        size = struct.unpack(">H", payload[:2])[0]
        return payload[: 2 + size]

    def nv_read(self, index: int, size: int, offset: int) -> bytes:
        # Password session with the index's own (empty) authorization value.
        auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
        body = struct.pack(">II", index, index) + struct.pack(">I", len(auth)) + auth
        rc, payload = self.command(
            TPM_ST_SESSIONS, TPM_CC_NV_READ, body + struct.pack(">HH", size, offset)
        )
        assert rc == 0, f"TPM2_NV_Read: 0x{rc:x}"
        # parameterSize (4), then TPM2B_MAX_NV_BUFFER
        length = struct.unpack(">H", payload[4:6])[0]
        return payload[6 : 6 + length]

    def close(self) -> None:
        self.data.close()
        self.ctrl.close()

    def __enter__(self) -> QemuLikeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def test_tcp_mode_serves_tpm2_tools_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tpm = Swtpm.tcp(state)
    with tpm:
        assert tpm.running
        assert tpm.tcti.startswith("swtpm:host=127.0.0.1,port=")
        # tpm2-tools, an outside client, finds a started-up TPM 2.0 behind the TCTI.
        assert 'value: "2.0"' in tpm2_getcap(tpm.tcti, "properties-fixed")
        workdir = Path(tpm._workdir.name) if tpm._workdir else None
    assert not tpm.running
    assert workdir is not None
    assert not workdir.exists()
    assert (state / "tpm2-00.permall").is_file()
    tpm.stop()  # a second stop is harmless


def test_two_instances_get_distinct_ports(tmp_path: Path) -> None:
    with Swtpm.tcp(tmp_path / "a") as first, Swtpm.tcp(tmp_path / "b") as second:
        assert first.tcti != second.tcti
        tpm2_getcap(first.tcti, "pcrs")
        tpm2_getcap(second.tcti, "pcrs")


def test_exception_and_ctrl_c_inside_the_block_stop_swtpm(tmp_path: Path) -> None:
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        tpm = Swtpm.tcp(tmp_path / "state")
        with pytest.raises(type(error)), tpm:
            raise error
        assert not tpm.running


def test_swtpm_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """Even a SIGKILLed Python process (no cleanup at all) leaves no swtpm behind."""
    script = (
        "import sys, pathlib\n"
        "from aicert.builder.platforms.local.swtpm import Swtpm\n"
        "tpm = Swtpm.tcp(pathlib.Path(sys.argv[1]))\n"
        "tpm.start()\n"
        "print(tpm._proc.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_tcti_and_qemu_args_belong_to_their_mode(tmp_path: Path) -> None:
    tpm = Swtpm.tcp(tmp_path / "state")
    with pytest.raises(ToolError, match="not running"):
        _ = tpm.tcti
    with pytest.raises(ToolError, match="TCP mode"):
        tpm.qemu_args()
    qemu = Swtpm.for_qemu(tmp_path / "state", tmp_path / "swtpm-sock")
    assert qemu.qemu_args() == [
        "-chardev",
        f"socket,id=chrtpm,path={tmp_path / 'swtpm-sock'}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-crb,tpmdev=tpm0",
    ]


def test_missing_swtpm_is_a_clear_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="'swtpm' is not installed"):
        Swtpm.tcp(tmp_path / "state").start()


def test_swtpm_failing_to_start_shows_its_stderr(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "tpm2-00.permall").write_bytes(b"not a TPM state" * 20)
    with pytest.raises(ToolError) as info:
        Swtpm.tcp(state).start()
    message = str(info.value)
    assert "swtpm exited with status" in message
    assert "libtpms" in message
    assert "\n" not in message


def test_state_dir_that_cannot_be_created_is_a_tool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ToolError, match="state directory"):
        Swtpm.tcp(blocker / "state").start()


def test_provisioned_state_survives_restart_in_qemu_mode(tmp_path: Path, local_ca: LocalCa) -> None:
    """Provision over TCP, stop, boot the same state the way QEMU does, read AK and cert."""
    state = tmp_path / "state"
    with Swtpm.tcp(state) as tpm:
        result = provision_like_azure(tpm.tcti, local_ca, "qemu-vm")

    ctrl = tmp_path / "run" / "swtpm-sock"
    with Swtpm.for_qemu(state, ctrl) as qemu_tpm:
        assert ctrl.is_socket()
        with QemuLikeClient(ctrl) as client:
            assert client.startup_clear() == 0
            assert client.read_public(AK_HANDLE) == result.ak_public
            cert = b""
            while len(cert) < len(result.ak_certificate):
                cert += client.nv_read(
                    AK_CERT_NV_INDEX, min(1024, len(result.ak_certificate) - len(cert)), len(cert)
                )
            assert cert == result.ak_certificate
        assert qemu_tpm.running

    # ... and back in TCP mode once more, as the next local run would find it.
    with Swtpm.tcp(state) as tpm:
        proc = run(
            ["tpm2_readpublic", "-c", hex(AK_HANDLE), "-o", tmp_path / "ak.pub"],
            env={"TPM2TOOLS_TCTI": tpm.tcti},
            timeout=30,
        )
        assert proc.returncode == 0
        assert (tmp_path / "ak.pub").read_bytes() == result.ak_public


@pytest.mark.system
def test_qemu_firmware_runs_against_the_qemu_mode_swtpm(tmp_path: Path, local_ca: LocalCa) -> None:
    """QEMU + OVMF attach to Swtpm.for_qemu (QEMU refuses to start if the emulator TPM
    does not answer), run the firmware, and leave the provisioned state intact."""
    ovmf = Path("/usr/share/OVMF")
    state = tmp_path / "state"
    with Swtpm.tcp(state) as tpm:
        result = provision_like_azure(tpm.tcti, local_ca, "qemu-vm")
    variables = tmp_path / "OVMF_VARS_4M.fd"
    variables.write_bytes((ovmf / "OVMF_VARS_4M.fd").read_bytes())
    with Swtpm.for_qemu(state, tmp_path / "swtpm-sock") as qemu_tpm:
        argv = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "256",
            "-display", "none", "-serial", "none", "-monitor", "none", "-net", "none",
            "-drive", f"if=pflash,format=raw,readonly=on,file={ovmf / 'OVMF_CODE_4M.fd'}",
            "-drive", f"if=pflash,format=raw,file={variables}",
            *qemu_tpm.qemu_args(),
        ]  # fmt: skip
        # Still running after 8 s: the TPM backend came up and the firmware is running.
        with pytest.raises(ToolError, match="did not finish within 8 s"):
            run(argv, timeout=8)
    with Swtpm.tcp(state) as tpm:
        out = tmp_path / "ak.pub"
        run(["tpm2_readpublic", "-c", hex(AK_HANDLE), "-o", out], env={"TPM2TOOLS_TCTI": tpm.tcti})
        assert out.read_bytes() == result.ak_public
