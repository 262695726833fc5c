"""Running the training command confined: inputs read-only, one writable output, no network.

The command runs under ``unshare --net --mount --pid --fork --mount-proc --kill-child``
(util-linux), whose child :mod:`aicert.agent.confine` remounts the file system, drops to an
unprivileged user and executes the command (see that module for the steps). Enforcement
is the kernel's: a new network namespace has no interface but its own loopback, so
nothing outside the sandbox can be reached; the inputs are a read-only bind mount and
owned by root; the unprivileged user can write only the output and work directories,
which are handed to it. When the command exits, every process left in its PID namespace
is killed, so nothing keeps writing to the output while it is measured.

What is not confined: the image's own world-writable directories (``/tmp``,
``/dev/shm``) stay writable to the command; nothing there is measured or handed back, and
it vanishes with the VM. Devices (GPUs) stay usable; the scratch disk is mounted nodev.

Environment of the command (nothing else is inherited)::

    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG=C.UTF-8
    HOME=<work>/home        TMPDIR=<work>/tmp    (writable, not measured)
    AICERT_INPUTS=<inputs>  AICERT_OUTPUT=<output>  AICERT_CONFIG=<config.json>
    PYTHONUNBUFFERED=1      PYTHONDONTWRITEBYTECODE=1

The exit status recorded is the command's; a command killed by signal N is recorded as
128 + N (as shells report it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from aicert.process import require_tool

SANDBOX_UID: Final = 65534
SANDBOX_GID: Final = 65534
SANDBOX_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SandboxSpec:
    """What one confined run gets.

    ``read_only`` directories are remounted read-only (put the inputs and the scratch
    root there); ``output`` and ``work`` are created empty, owned by ``uid``/``gid``, and
    stay writable even when they lie under a read-only directory.
    """

    command: tuple[str, ...]
    cwd: Path
    read_only: tuple[Path, ...]
    output: Path
    work: Path
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID

    def environment(self) -> dict[str, str]:
        return {
            "PATH": SANDBOX_PATH,
            "LANG": "C.UTF-8",
            "HOME": str(self.work / "home"),
            "TMPDIR": str(self.work / "tmp"),
            "AICERT_OUTPUT": str(self.output),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.env,
        }


def sandbox_argv(spec: SandboxSpec) -> list[str]:
    """The full command line: unshare, then the confining helper, then the command."""
    argv = [
        require_tool("unshare", hint="install util-linux"),
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        sys.executable,
        "-I",
        "-m",
        "aicert.agent.confine",
        f"--uid={spec.uid}",
        f"--gid={spec.gid}",
        f"--cwd={spec.cwd}",
        f"--writable={spec.output}",
        f"--writable={spec.work}",
    ]
    argv += [f"--read-only={path}" for path in spec.read_only]
    argv += [f"--env={name}={value}" for name, value in sorted(spec.environment().items())]
    return [*argv, "--", *spec.command]


def prepare(spec: SandboxSpec) -> None:
    """Create the empty output and work directories, owned by the sandbox user."""
    for directory in (spec.output, spec.work, spec.work / "home", spec.work / "tmp"):
        directory.mkdir(mode=0o755, parents=False, exist_ok=False)
        os.chown(directory, spec.uid, spec.gid)


def exit_status(returncode: int) -> int:
    """A process's status as shells report it: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class SandboxRun:
    """One started confined run; its output goes to ``log``."""

    def __init__(self, spec: SandboxSpec, log: IO[bytes]) -> None:
        prepare(spec)
        self.spec = spec
        self._proc = subprocess.Popen(
            sandbox_argv(spec),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"},
            cwd="/",
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait(self) -> int:
        return exit_status(self._proc.wait())

    def kill(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)


def run_confined(spec: SandboxSpec, log: IO[bytes]) -> int:
    """Run ``spec`` to completion; its exit status."""
    return SandboxRun(spec, log).wait()


def remove_work(spec: SandboxSpec) -> None:
    shutil.rmtree(spec.work, ignore_errors=True)
