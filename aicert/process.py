"""The one way aicert runs external programs.

:func:`run` logs the exact command line, and turns a missing program or a
non-zero exit into a :class:`~aicert.verifier.errors.ToolError` whose one-line
message names the program, its exit status and the last line it printed.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aicert.verifier.errors import ToolError

log = logging.getLogger("aicert.run")

Arg = str | os.PathLike[str]


def require_tool(name: str, *, hint: str = "run scripts/install-host-deps.sh") -> str:
    """The absolute path of ``name`` on PATH, or a ToolError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"'{name}' is not installed or not on PATH; {hint}")
    return path


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(
    argv: Sequence[Arg],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    capture: bool = True,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return its completed process.

    ``capture`` collects stdout and stderr; ``on_line`` instead streams the merged
    output line by line (for long jobs such as mkosi builds) while keeping the
    tail for the error message. ``env`` is added to the current environment.
    """
    args = [os.fspath(a) for a in argv]
    require_tool(args[0])
    log.info("$ %s", shlex.join(args))
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if on_line is None:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=full_env,
                input=input,
                capture_output=capture,
                timeout=timeout,
                check=False,
            )
        else:
            proc = _run_streaming(args, cwd=cwd, env=full_env, on_line=on_line, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{args[0]} did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = _last_line((proc.stderr or b"").decode(errors="replace")) or _last_line(
            (proc.stdout or b"").decode(errors="replace")
        )
        raise ToolError(
            f"{Path(args[0]).name} failed with exit status {proc.returncode}"
            + (f": {detail}" if detail else "")
            + f" (command: {shlex.join(args)[:300]})"
        )
    return proc


def _run_streaming(
    args: list[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    on_line: Callable[[str], None],
    timeout: float | None,
) -> subprocess.CompletedProcess[bytes]:
    tail: list[str] = []
    with subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        stdout = proc.stdout
        if stdout is None:  # pragma: no cover - stdout=PIPE always gives a stream
            raise ToolError(f"{args[0]}: no output stream")
        try:
            for raw in stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                tail = [*tail[-49:], line]
                on_line(line)
            proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
    output = "\n".join(tail).encode()
    return subprocess.CompletedProcess(args, proc.returncode, stdout=b"", stderr=output)
