"""A software TPM 2.0 (``swtpm socket --tpm2``) run as a context-managed child process.

Two modes share one state directory, so a TPM provisioned in one can be booted in
the other:

- :meth:`Swtpm.tcp`: TPM and control channel on free 127.0.0.1 TCP ports, for
  tpm2-pytss and tpm2-tools (:attr:`Swtpm.tcti`). swtpm sends TPM2_Startup itself.
- :meth:`Swtpm.for_qemu`: control channel on a Unix socket that QEMU's ``emulator``
  TPM backend connects to (:meth:`Swtpm.qemu_args`). No startup flags: the
  firmware sends TPM2_Startup, as on real hardware.

The process is started with a parent-death signal and stopped on leaving the
``with`` block (also on exceptions and Ctrl-C): first politely through the control
channel (CMD_SHUTDOWN, which makes swtpm save its state), then by SIGTERM, then
SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shlex
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aicert.verifier.errors import ToolError

from aicert.process import require_tool

log = logging.getLogger("aicert.run")

# swtpm control-channel command (src/swtpm/tpm_ioctl.h): big-endian u32 code,
# answered by a big-endian u32 TPM result code (0 = success).
_CMD_SHUTDOWN = 3

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class _Endpoints:
    """Where the TPM and its control channel listen."""

    tpm_port: int | None
    ctrl_port: int | None
    ctrl_path: Path | None


class Swtpm:
    """One swtpm process; use as a context manager (``with Swtpm.tcp(d) as tpm: tpm.tcti``)."""

    def __init__(self, state_dir: Path, *, qemu_socket: Path | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.qemu_socket = qemu_socket
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._endpoints: _Endpoints | None = None

    @classmethod
    def tcp(cls, state_dir: Path) -> Swtpm:
        """A swtpm serving TCP on 127.0.0.1 (free ports), already started up (TPM2_Startup)."""
        return cls(state_dir)

    @classmethod
    def for_qemu(cls, state_dir: Path, socket_path: Path) -> Swtpm:
        """A swtpm whose control channel is the Unix socket ``socket_path`` for QEMU."""
        return cls(state_dir, qemu_socket=Path(socket_path))

    # -- what callers use ---------------------------------------------------------------

    @property
    def tcti(self) -> str:
        """The TCTI string (tpm2-tss / tpm2-tools syntax) of a running TCP-mode swtpm."""
        endpoints = self._require_running()
        if endpoints.tpm_port is None:
            raise ToolError("swtpm runs for QEMU (Unix socket); it has no TCP TCTI")
        return f"swtpm:host=127.0.0.1,port={endpoints.tpm_port}"

    def qemu_args(self) -> list[str]:
        """QEMU arguments attaching this swtpm as a CRB TPM 2.0 device."""
        if self.qemu_socket is None:
            raise ToolError("swtpm runs in TCP mode; start it with Swtpm.for_qemu for QEMU")
        return [
            "-chardev",
            f"socket,id=chrtpm,path={self.qemu_socket}",
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-crb,tpmdev=tpm0",
        ]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Swtpm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start swtpm and wait until it accepts connections; ToolError if it cannot."""
        if self._proc is not None:
            raise ToolError("swtpm is already running")
        binary = require_tool("swtpm")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolError(
                f"cannot create the swtpm state directory {self.state_dir}: {exc.strerror}"
            ) from exc
        self._workdir = tempfile.TemporaryDirectory(prefix="aicert-swtpm-")
        try:
            if self.qemu_socket is not None:
                self._start_once(binary, _Endpoints(None, None, self.qemu_socket))
            else:
                self._start_tcp(binary)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop swtpm (saving its state) and remove its temporary files. Safe to call twice."""
        proc, self._proc = self._proc, None
        endpoints, self._endpoints = self._endpoints, None
        try:
            if proc is not None:
                _stop_process(proc, endpoints)
        finally:
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    # -- internals ------------------------------------------------------------------------

    def _require_running(self) -> _Endpoints:
        if self._endpoints is None or not self.running:
            raise ToolError("swtpm is not running")
        return self._endpoints

    def _start_tcp(self, binary: str) -> None:
        # Free ports are picked by binding to port 0 and released before swtpm binds them;
        # another process may take one in between, so a failed start is retried on new ports.
        last_error: ToolError | None = None
        for _ in range(_PORT_ATTEMPTS):
            tpm_port, ctrl_port = _free_port_pair()
            try:
                self._start_once(binary, _Endpoints(tpm_port, ctrl_port, None))
                return
            except ToolError as exc:
                last_error = exc
                if "in use" not in str(exc).lower():
                    raise
        raise ToolError(
            f"swtpm could not bind free ports in {_PORT_ATTEMPTS} attempts: {last_error}"
        )

    def _start_once(self, binary: str, endpoints: _Endpoints) -> None:
        if self._workdir is None:
            raise ToolError("swtpm has no working directory (not started through start())")
        workdir = Path(self._workdir.name)
        argv = [binary, "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir},mode=0600"]
        if endpoints.ctrl_path is not None:
            endpoints.ctrl_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                endpoints.ctrl_path.unlink()
            argv += ["--ctrl", f"type=unixio,path={endpoints.ctrl_path}"]
        else:
            argv += [
                "--server",
                f"type=tcp,port={endpoints.tpm_port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={endpoints.ctrl_port},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ]
        log_path = workdir / "swtpm.log"
        argv += ["--log", f"file={log_path},level=1"]

        log.info("$ %s", shlex.join(argv))
        stderr_path = workdir / "stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Runs between fork and exec; it only calls prctl, resolved beforehand.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self._proc = proc
        self._endpoints = endpoints
        deadline = time.monotonic() + _START_TIMEOUT
        while not _accepts(endpoints):
            if proc.poll() is not None:
                detail = _tail(stderr_path) or _tail(log_path)
                self._proc = None
                self._endpoints = None
                raise ToolError(
                    f"swtpm exited with status {proc.returncode} while starting"
                    + (f": {detail}" if detail else "")
                    + f" (command: {shlex.join(argv)[:300]})"
                )
            if time.monotonic() > deadline:
                raise ToolError(
                    f"swtpm did not accept connections within {_START_TIMEOUT:.0f} s"
                    f" (command: {shlex.join(argv)[:300]})"
                )
            time.sleep(0.02)


_prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child: have Linux SIGTERM swtpm when the Python process dies, so even a
    killed test run leaves no swtpm behind."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port_pair() -> tuple[int, int]:
    """Two free adjacent ports: the swtpm TCTI of tpm2-tss finds the control channel at
    the TPM port + 1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port, port + 1
    raise ToolError("no two adjacent free TCP ports on 127.0.0.1 for swtpm")


def _connect(endpoints: _Endpoints, timeout: float) -> socket.socket:
    """A connection to the control channel."""
    if endpoints.ctrl_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = str(endpoints.ctrl_path)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("127.0.0.1", endpoints.ctrl_port or 0)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


# TPM2_GetRandom(8) without sessions: tag, size, command code, bytes requested.
_GET_RANDOM_8 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)


def _accepts(endpoints: _Endpoints) -> bool:
    """True once swtpm listens. In QEMU mode only the socket file is checked: the unixio
    control channel serves one client at a time and QEMU must be that client."""
    if endpoints.ctrl_path is not None:
        return endpoints.ctrl_path.is_socket()
    try:
        # swtpm listens before it has loaded its state: only a TPM that answers a
        # command is up (a broken state makes it exit after it started listening).
        with socket.create_connection(("127.0.0.1", endpoints.tpm_port or 0), timeout=2) as tpm:
            tpm.sendall(_GET_RANDOM_8)
            answer = tpm.recv(10)
        _connect(endpoints, 0.5).close()
    except OSError:
        return False
    return len(answer) == 10 and answer[:2] == b"\x80\x01"


def _send_shutdown(endpoints: _Endpoints) -> bool:
    """CMD_SHUTDOWN over the control channel; True if swtpm acknowledged it."""
    try:
        with _connect(endpoints, 2.0) as sock:
            sock.sendall(struct.pack(">I", _CMD_SHUTDOWN))
            answer = sock.recv(4)
    except OSError:
        return False
    return len(answer) == 4 and struct.unpack(">I", answer)[0] == 0


def _stop_process(proc: subprocess.Popen[bytes], endpoints: _Endpoints | None) -> None:
    if proc.poll() is not None:
        return
    try:
        if endpoints is not None and _send_shutdown(endpoints):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_STOP_TIMEOUT)
                return
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    except BaseException:
        # Interrupted while stopping (Ctrl-C): never leave the process behind.
        proc.kill()
        proc.wait()
        raise


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])
