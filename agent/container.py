"""Running the training command confined inside its own environment, with crun.

When a job brings an environment (an OCI image, unpacked by intake), its command runs
with that image's root file system as ``/`` through crun, the OCI runtime from Debian:
one small C program, no daemon, no image store, nothing listening: with tini it adds
about 3 MB to the measured image and no service. (Podman would add a daemonless but
much larger stack — conmon, netavark, containers-storage — that the agent does not
need: intake already pulls, checks and unpacks the image.)

The confinement is the plain sandbox's (:mod:`aicert.agent.sandbox`), expressed as an
OCI runtime spec (:mod:`aicert.agent.container_spec`) that the kernel enforces:

- new PID, network, mount, IPC and UTS namespaces; the network namespace has only its
  own loopback (crun brings it up), and the run's own ``/etc/hosts`` names localhost and
  the hostname there, so multi-process training can rendezvous on loopback (by address
  or by name) while nothing outside is reachable;
- the environment's root is read-only, the inputs (and an evaluation's weights) are
  read-only binds, the output and the work directory (``$HOME``, ``/tmp``) the only
  writable places; binds are nosuid, nodev;
- user 65534:65534, no supplementary groups, no capabilities at all, no new privileges;
- ``/dev`` is a fresh tmpfs with the default nodes and the host's GPU nodes
  (``/dev/nvidia*``, ``/dev/dri/*``) when present; without CAP_MKNOD no other device
  can be made;
- PID 1 is ``tini`` (Debian's static build, bound in read-only): it reaps orphans and
  passes signals on, so the command keeps ordinary signal behaviour, and it exits with
  the command's status. When it exits the kernel kills every process left in the PID
  namespace; after the run :class:`ContainerRun` deletes the container with crun and
  checks in ``/proc`` that no process of that namespace is left, and fails the run if
  one is.

What is not confined, as with the plain sandbox: no cgroup of its own (no CPU, memory or
device-cgroup limits: crun runs with ``--cgroup-manager=disabled``, the agent owns the
VM), and no seccomp filter. crun needs the unified cgroup v2 hierarchy at
``/sys/fs/cgroup`` (the image's systemd mounts exactly that) even then.

The exit status recorded is the command's; a command killed by signal N is recorded as
128 + N. A command that cannot be executed gives tini's 127 (not found) or 126 (not
executable), a container crun cannot create crun's own non-zero status; the reason is in
the job log.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from aicert.agent.container_spec import (
    HOST_LIBDIR,
    INPUTS,
    OUTPUT,
    TMP,
    WEIGHTS,
    WORK,
    Bind,
    Rlimit,
    RunnableEnvironment,
    RuntimeSpec,
    build_spec,
    driver_binds,
    gpu_devices,
    hosts_file,
)
from aicert.agent.sandbox import SandboxSpec, exit_status, prepare
from aicert.verifier.errors import ToolError

from aicert.process import require_tool, run

TINI_CANDIDATES: Final = (Path("/usr/bin/tini-static"), Path("/usr/bin/tini"))
_CRUN_HINT: Final = "install crun (Debian package crun; scripts/install-host-deps.sh)"


class LeftoverProcessError(ToolError):
    """A process of the container's PID namespace outlived the run."""


@dataclass(frozen=True)
class ContainerJob:
    """One run of a job's command in its environment.

    ``sandbox`` is the run as the plain sandbox would make it (host paths: the command,
    its cwd, the output and work directories, the AICERT_* variables); it is translated
    to the container's view (see :mod:`aicert.agent.container_spec`).
    """

    sandbox: SandboxSpec
    environment: RunnableEnvironment
    use_entrypoint: bool = False


def find_init() -> Path:
    """Debian's static tini, which runs in any root file system."""
    for candidate in TINI_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ToolError("'tini' is not installed; install the Debian package tini")


def require_unified_cgroups(mounts: Path = Path("/proc/self/mounts")) -> None:
    """crun refuses legacy and hybrid cgroup set-ups: say so in one line beforehand."""
    kind = ""
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == "/sys/fs/cgroup":
            kind = fields[2]  # the last mount on the path is the one in effect
    if kind != "cgroup2":
        raise ToolError(
            "crun needs the unified cgroup v2 hierarchy mounted at /sys/fs/cgroup "
            f"(found {kind or 'nothing'}; boot with systemd.unified_cgroup_hierarchy=1)"
        )


def open_files_limit() -> Rlimit:
    """RLIMIT_NOFILE with the soft limit raised to this process's hard limit.

    systemd starts the agent with a soft limit of 1024, which PyTorch's DataLoader
    workers exhaust (each shared tensor holds a descriptor); the command could raise it
    itself, up to the same hard limit, so this only saves every job that step.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Rlimit("RLIMIT_NOFILE", hard, hard)


def runtime_spec(
    job: ContainerJob,
    *,
    init: Path,
    namespace_record: Path,
    hosts: Path,
    dev: Path = Path("/dev"),
    libdir: Path = HOST_LIBDIR,
) -> RuntimeSpec:
    """The OCI runtime spec of ``job``: binds, translated paths and variables, GPUs and,
    with GPUs, the driver's libraries."""
    spec = job.sandbox
    devices = gpu_devices(dev)
    binds = [Bind(Path(spec.env["AICERT_INPUTS"]), INPUTS, writable=False)]
    if "AICERT_WEIGHTS" in spec.env:
        binds.append(Bind(Path(spec.env["AICERT_WEIGHTS"]), WEIGHTS, writable=False))
    binds += [
        Bind(spec.output, OUTPUT, writable=True),
        Bind(spec.work, WORK, writable=True),
        Bind(spec.work / "tmp", TMP, writable=True),
    ]
    env: dict[str, Path | str] = {
        "HOME": spec.work / "home",
        "TMPDIR": TMP,
        "AICERT_OUTPUT": spec.output,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({name: Path(value) for name, value in spec.env.items()})
    return build_spec(
        job.environment,
        command=spec.command,
        cwd=spec.cwd,
        binds=binds,
        env=env,
        uid=spec.uid,
        gid=spec.gid,
        use_entrypoint=job.use_entrypoint,
        devices=devices,
        driver=driver_binds(libdir) if devices else (),
        init=init,
        hosts=hosts,
        rlimits=[open_files_limit()],
        create_hooks=[
            (sys.executable, "-I", "-m", "aicert.agent.container_hook", str(namespace_record))
        ],
    )


def _pid_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def processes_in_namespace(namespace: int) -> list[int]:
    """Every process whose PID namespace is ``namespace`` (by its inode)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_namespace(int(entry)) == namespace:
            found.append(int(entry))
    return found


class ContainerRun:
    """One started container run; its output goes to ``log``. Same interface as SandboxRun."""

    def __init__(self, job: ContainerJob, log: IO[bytes]) -> None:
        self._crun = require_tool("crun", hint=_CRUN_HINT)
        require_unified_cgroups()
        init = find_init()
        # Root-only: the bundle and crun's state never lie where the command could write.
        self._bundle = Path(tempfile.mkdtemp(prefix="aicert-bundle-"))
        self._state = self._bundle / "state"
        self._record = self._bundle / "pid-namespace"
        hosts = self._bundle / "hosts"
        try:
            hosts.write_text(hosts_file())
            hosts.chmod(0o644)
            spec = runtime_spec(job, init=init, namespace_record=self._record, hosts=hosts)
            (self._bundle / "config.json").write_text(json.dumps(spec.to_json(), indent=1))
            prepare(job.sandbox)
        except BaseException:
            shutil.rmtree(self._bundle, ignore_errors=True)
            raise
        self.job = job
        self.name = f"aicert-{uuid.uuid4().hex[:16]}"
        self._namespace: int | None = None
        try:
            self._proc = subprocess.Popen(
                [*self._crun_argv(), "run", "--bundle", str(self._bundle), self.name],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(self._bundle, ignore_errors=True)
            raise ToolError(f"crun could not be started: {exc.strerror}") from exc

    def _crun_argv(self) -> list[str]:
        return [self._crun, "--root", str(self._state), "--cgroup-manager=disabled"]

    @property
    def pid(self) -> int:
        return self._proc.pid

    def namespace(self) -> int | None:
        """The inode of the container's PID namespace, once crun has made it."""
        if self._namespace is None:
            try:
                self._namespace = int(self._record.read_text())
            except (OSError, ValueError):
                return None
        return self._namespace

    def wait(self) -> int:
        """Wait for the command; its status, once nothing of the container is left.

        Unlike SandboxRun.wait, this can raise: LeftoverProcessError when a process of
        the container outlived it (killed then, but the run must not count), ToolError
        when crun cannot delete the container.
        """
        status = self._proc.wait()
        try:
            self._finish()
        finally:
            shutil.rmtree(self._bundle, ignore_errors=True)
        return exit_status(status)

    def _finish(self) -> None:
        namespace = self.namespace()
        state = run([*self._crun_argv(), "state", self.name], check=False)
        if state.returncode == 0:
            # Whatever crun says it is, a container still known to crun is killed and deleted.
            run([*self._crun_argv(), "kill", self.name, "KILL"], check=False)
            run([*self._crun_argv(), "delete", "--force", self.name])
        if namespace is not None:
            left = processes_in_namespace(namespace)
            if left:
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
                raise LeftoverProcessError(
                    f"processes {left} of container {self.name} outlived the run; killed them"
                )

    def kill(self) -> None:
        if self._proc.poll() is None:
            run([*self._crun_argv(), "kill", self.name, "KILL"], check=False)
            os.killpg(self._proc.pid, signal.SIGKILL)


def run_container(job: ContainerJob, log: IO[bytes]) -> int:
    """Run ``job`` to completion; its exit status."""
    return ContainerRun(job, log).wait()
