"""Boot an aicert disk image locally: QEMU q35 + OVMF + swtpm, the QEMU reference platform.

The machine is fixed, because the firmware PCRs depend on it (see
docs/pcr-map.md and verifier/data/platform-qemu.json): ``-machine q35 -m 2048
-smp 2``, OVMF_CODE_4M.fd with a fresh copy of OVMF_VARS_4M.fd, a swtpm CRB TPM,
one virtio disk (opened with ``snapshot=on``, so the image file is never
written), one virtio NIC without option ROM on user-mode networking that is
restricted to a single host forward on 127.0.0.1, and a virtio RNG. The serial
console goes to a log file, where :meth:`Vm.wait_ready` looks for the agent's
AICERT-READY line.

The RNG matters for speed: QEMU's default CPU has no RDRAND, so without it the guest
kernel's random pool was initialised only by jitter entropy, seconds into the boot,
and opening the verity root in the initrd waited for that. With it, OVMF offers
EFI_RNG_PROTOCOL, the kernel's EFI stub seeds the pool before the kernel starts, and
nothing waits. It changes no PCR: it has no option ROM and no boot option.

Everything the VM starts (QEMU, swtpm) and creates (variable store, sockets,
TPM state) is stopped and removed when the ``with`` block ends, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aicert.builder.platforms.local.ca import LOCAL_PKI_ADDRESS
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.errors import InputError, ToolError

from aicert.process import require_tool, run
from aicert.readiness_line import READY_PREFIX, ReadinessReport, parse_ready_line

log = logging.getLogger("aicert.qemu")

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MACHINE = "q35"
MEMORY_MIB = 2048
CPUS = 2
AGENT_PORT = 8443
KVM_PROBE_SECONDS = 4.0


@dataclass(frozen=True)
class VmSpec:
    """What to boot and how; the defaults are the QEMU reference platform."""

    disk: Path
    host_port: int | None = None
    guest_port: int = AGENT_PORT
    accel: str | None = None
    memory_mib: int = MEMORY_MIB
    cpus: int = CPUS
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    tpm_state: Path | None = None
    """A provisioned swtpm state directory (default: a fresh, empty TPM for this boot)."""
    issuer_certificate: Path | None = None
    """A DER certificate the VM can download from ``http://10.0.2.100/`` (any path), as
    a CA's AIA link would serve it (see :mod:`aicert.builder.platforms.local.pki_responder`)."""
    scratch: Path | None = None
    """The scratch disk for the agent (blank raw, see :func:`make_scratch_disk`); default:
    an empty one made for this boot. It is always attached: the firmware's boot options,
    and so PCR 1, depend on the disks present."""
    guest_forwards: tuple[str, ...] = ()
    """More ``guestfwd`` rules (``tcp:ADDR:PORT-cmd:COMMAND``): host services the VM may
    reach, such as a test registry (:func:`.guest_relay.registry_forward`)."""


def kvm_works() -> bool:
    """True if QEMU can actually run OVMF under KVM here (not just open /dev/kvm)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = require_tool(QEMU, hint="run scripts/install-host-deps.sh")
    with tempfile.TemporaryDirectory(prefix="aicert-kvm-probe-") as tmp:
        variables = Path(tmp) / "vars.fd"
        shutil.copyfile(OVMF_VARS, variables)
        argv = [
            qemu,
            *("-machine", f"{MACHINE},accel=kvm", "-m", "256", "-nodefaults", "-display", "none"),
            *("-no-user-config", "-serial", "none", "-monitor", "none"),
            *_pflash_args(variables),
        ]
        with subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        ) as proc:
            try:
                proc.wait(timeout=KVM_PROBE_SECONDS)
            except subprocess.TimeoutExpired:
                # Still running OVMF after a few seconds: KVM executes guest code.
                proc.kill()
                proc.wait()
                return True
            log.info("KVM is not usable: %s", (proc.stderr.read() if proc.stderr else b"")[-200:])
            return False


KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure")
# How the agent's command line reports a fatal error (aicert.verifier.cli_runner).
AGENT_ERROR_MARKER = "aicert-agent: error: "
ACCEL_ENV = "AICERT_ACCEL"
ACCELS = ("kvm", "tcg")


def kvm_verdict_file() -> Path:
    """Where hosts whose KVM failed a guest are remembered, so that later boots skip it."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "aicert" / "kvm-failed.json"


def host_key() -> str:
    """What KVM's behaviour depends on: QEMU, the host kernel and the CPU model."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{qemu_version()} | {os.uname().release} | {model}"


def _failed_hosts() -> list[str]:
    try:
        hosts = json.loads(kvm_verdict_file().read_text())
    except (OSError, ValueError):
        return []
    return [h for h in hosts if isinstance(h, str)] if isinstance(hosts, list) else []


def remember_kvm_failure() -> None:
    """Record that KVM failed a guest on this host (best effort: a cache, not a setting)."""
    key = host_key()
    hosts = _failed_hosts()
    if key in hosts:
        return
    path = kvm_verdict_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([*hosts, key], indent=1) + "\n")
        os.replace(tmp, path)


def forced_accel() -> str | None:
    """The accelerator named by $AICERT_ACCEL (kvm or tcg); None for auto (unset or "auto")."""
    value = os.environ.get(ACCEL_ENV, "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ACCELS:
        raise InputError(f"${ACCEL_ENV} must be kvm, tcg or auto, not {value!r}")
    return value


def choose_accel() -> str:
    """KVM if it runs guests here, else TCG. A probe that only starts OVMF can pass on
    hosts where the guest kernel later stops with "KVM internal error" (seen: MSR 0x10a),
    so :meth:`Vm.wait_ready` also falls back to TCG at run time and records the host in
    :func:`kvm_verdict_file`; later boots on that host go straight to TCG."""
    if host_key() in _failed_hosts():
        log.info("KVM failed a guest on this host before (%s): using TCG", kvm_verdict_file())
        return "tcg"
    return "kvm" if kvm_works() else "tcg"


def qemu_version() -> str:
    proc = run([QEMU, "--version"])
    return proc.stdout.decode().splitlines()[0].strip()


def _pflash_args(variables: Path) -> list[str]:
    return [
        *("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
        *("-drive", f"if=pflash,format=raw,unit=1,file={variables}"),
    ]


SCRATCH_SERIAL = "aicert-scratch"
DEFAULT_SCRATCH_BYTES = 8 * 1024**3


def make_scratch_disk(path: Path, size: int = DEFAULT_SCRATCH_BYTES) -> Path:
    """A blank sparse raw disk; the image formats it at boot (aicert.agent.scratch),
    exactly as it formats the empty data disk of an Azure VM."""
    with path.open("xb") as f:
        f.truncate(size)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Vm:
    """One QEMU VM with its own swtpm; a context manager."""

    def __init__(self, spec: VmSpec) -> None:
        if not spec.disk.is_file():
            raise InputError(f"disk image {spec.disk} does not exist")
        for firmware in (OVMF_CODE, OVMF_VARS):
            if not firmware.is_file():
                raise ToolError(f"{firmware} is missing; run scripts/install-host-deps.sh")
        self.spec = spec
        forced = spec.accel or forced_accel()
        self._auto_accel = forced is None
        self.accel = forced or choose_accel()
        self.host_port = spec.host_port if spec.host_port is not None else free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._swtpm: Swtpm | None = None
        self._scratch = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self.console_log = Path()

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def workdir(self) -> Path:
        if self._tmp is None:
            raise ToolError("the VM is not running")
        return Path(self._tmp.name)

    def argv(self) -> list[str]:
        """The full QEMU command line (the VM's working files must exist)."""
        if self._swtpm is None:
            raise ToolError("the VM's TPM is not running")
        spec = self.spec
        forward = f"hostfwd=tcp:127.0.0.1:{self.host_port}-:{spec.guest_port}"
        if spec.issuer_certificate is not None:
            # restrict=on keeps the VM off the host's network; explicit forwards still work.
            responder = (
                f"{sys.executable} -m aicert.builder.platforms.local.pki_responder "
                f"{spec.issuer_certificate}"
            )
            forward += f",guestfwd=tcp:{LOCAL_PKI_ADDRESS}:80-cmd:{responder}"
        forward += "".join(f",guestfwd={rule}" for rule in spec.guest_forwards)
        return [
            require_tool(QEMU, hint="run scripts/install-host-deps.sh"),
            *("-machine", MACHINE, "-accel", self.accel),
            *("-m", str(spec.memory_mib), "-smp", str(spec.cpus)),
            *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
            *_pflash_args(self.workdir / "OVMF_VARS_4M.fd"),
            *self._swtpm.qemu_args(),
            *("-drive", f"if=none,id=disk0,format=raw,snapshot=on,file={spec.disk}"),
            *("-device", "virtio-blk-pci,drive=disk0,bootindex=0"),
            *("-drive", f"if=none,id=scratch,format=raw,cache=unsafe,file={self._scratch}"),
            *("-device", f"virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}"),
            *("-netdev", f"user,id=net0,restrict=on,{forward}"),
            *("-device", "virtio-net-pci,netdev=net0,romfile="),
            *("-device", "virtio-rng-pci"),
            *("-chardev", f"file,id=serial0,path={self.console_log}"),
            *("-serial", "chardev:serial0"),
            *("-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off"),
            *spec.extra_args,
        ]

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="aicert-vm-")
        try:
            shutil.copyfile(OVMF_VARS, self.workdir / "OVMF_VARS_4M.fd")
            self.console_log = self.workdir / "console.log"
            self.console_log.touch()
            self._scratch = self.spec.scratch or make_scratch_disk(self.workdir / "scratch.raw")
            tpm_state = self.spec.tpm_state or self.workdir / "tpm"
            self._swtpm = Swtpm.for_qemu(tpm_state, self.workdir / "swtpm.sock")
            self._swtpm.start()
            argv = self.argv()
            log.info("$ %s", " ".join(argv))
            with (self.workdir / "qemu.stderr").open("ab") as stderr:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            self._started = time.monotonic()
        except BaseException:
            self.stop()
            raise

    def console_text(self) -> str:
        try:
            return self.console_log.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 300.0) -> tuple[ReadinessReport, float]:
        """Wait for the AICERT-READY line; return the report and seconds since QEMU started."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()
            start = text.find(READY_PREFIX)
            if start >= 0 and "\n" in text[start:]:
                return parse_ready_line(text), self.seconds_since_start()
            if self.accel == "kvm" and self._auto_accel and self._kvm_failed():
                self._restart_under_tcg()
                deadline = time.monotonic() + timeout
                continue
            if self._proc is None or self._proc.poll() is not None:
                raise ToolError(
                    "QEMU exited before the image reported readiness" + self._failure_detail(text)
                )
            if time.monotonic() > deadline:
                raise ToolError(
                    f"no AICERT-READY line on the serial console within {timeout:.0f} s"
                    + self._failure_detail(text)
                )
            time.sleep(0.5)

    def seconds_since_start(self) -> float:
        """Wall time since QEMU was started (restarted, after a failed KVM attempt)."""
        return time.monotonic() - self._started

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system, all its threads): less
        sensitive than wall time to other load on the host, though not immune to it
        (a descheduled vCPU leaves the other spinning on its locks)."""
        if self._proc is None:
            raise ToolError("the VM is not running")
        try:
            stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        except OSError as exc:
            raise ToolError(f"cannot read QEMU's CPU time: {exc.strerror}") from exc
        # Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def agent_failure(self) -> str | None:
        """The first error line an aicert-agent command printed on the console, if any."""
        for line in self.console_text().splitlines():
            if AGENT_ERROR_MARKER in line:
                return line[line.index(AGENT_ERROR_MARKER) :].strip()
        return None

    def _kvm_failed(self) -> bool:
        try:
            stderr = (self.workdir / "qemu.stderr").read_text(errors="replace")
        except OSError:
            return False
        return any(marker in stderr for marker in KVM_FAILURE_MARKERS)

    def _restart_under_tcg(self) -> None:
        remember_kvm_failure()
        log.warning(
            "KVM failed while running the guest; booting again under TCG "
            "(remembered in %s; set %s=tcg to skip the attempt)",
            kvm_verdict_file(),
            ACCEL_ENV,
        )
        self.stop(grace=0)
        self.accel = "tcg"
        self.start()

    def _failure_detail(self, console: str) -> str:
        stderr = ""
        with contextlib.suppress(OSError):
            stderr = (self.workdir / "qemu.stderr").read_text(errors="replace").strip()
        lines = [line.strip() for line in (stderr or console).splitlines() if line.strip()]
        return f"; last output: {lines[-1][:200]}" if lines else ""

    def _qmp(self, *commands: str) -> None:
        """Send QMP commands, best effort (used only to shut down)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.workdir / "qmp.sock"))
            sock.recv(4096)
            for command in ("qmp_capabilities", *commands):
                sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
                sock.recv(4096)

    def stop(self, grace: float = 20.0) -> None:
        """Power the VM off (ACPI, then quit, then SIGKILL), stop swtpm, remove the files."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(OSError):
                    self._qmp("system_powerdown")
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        self._qmp("quit")
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        finally:
            swtpm, self._swtpm = self._swtpm, None
            try:
                if swtpm is not None:
                    swtpm.stop()
            finally:
                if self._tmp is not None:
                    self._tmp.cleanup()
                    self._tmp = None
