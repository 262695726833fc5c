"""A throwaway swtpm for tests, driven with tpm2-tools over its TCP interface."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from aicert.process import require_tool, run


def _free_port_pair() -> int:
    """A port P such that P and P+1 were both free on localhost a moment ago."""
    for _ in range(50):
        with closing(socket.socket()) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with closing(socket.socket()) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of localhost ports")


@dataclass(frozen=True)
class Swtpm:
    port: int
    workdir: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def tpm2(self, tool: str, *args: str | os.PathLike[str]) -> bytes:
        """Run ``tpm2_<tool>`` against this TPM in its work directory; return stdout."""
        proc = run(
            [f"tpm2_{tool}", *args],
            cwd=self.workdir,
            env={"TPM2TOOLS_TCTI": self.tcti},
            timeout=60,
        )
        return proc.stdout or b""

    def flush_transient(self) -> None:
        # Without a resource manager, loaded objects stay in the TPM's few slots.
        self.tpm2("flushcontext", "-t")


@contextmanager
def running_swtpm(workdir: Path) -> Iterator[Swtpm]:
    """Start ``swtpm socket --tpm2`` with fresh state in ``workdir``; stop it on exit."""
    swtpm = require_tool("swtpm")
    state = workdir / "tpmstate"
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port_pair()
    proc = subprocess.Popen(
        [
            swtpm,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"swtpm exited with status {proc.returncode}: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("swtpm did not listen within 10 s") from None
                time.sleep(0.05)
        yield Swtpm(port, workdir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
