"""crun's createRuntime hook: record the container's PID namespace before it starts.

Run by crun as ``python3 -I -m aicert.agent.container_hook FILE`` with the container's
state (runtime-spec JSON) on stdin, after the namespaces exist and before the command
starts, so the record cannot race a short command. It writes the inode of the init
process's PID namespace to FILE; :class:`aicert.agent.container.ContainerRun` later looks
in ``/proc`` for any process still in that namespace. A failure exits non-zero, and crun
then does not start the container.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

MAX_STATE = 64 * 1024


def namespace_of_state(state: bytes) -> int:
    """The PID namespace inode of the process named by a runtime-spec state document."""
    if len(state) > MAX_STATE:
        raise ValueError("the container state is too large")
    document = json.loads(state)
    pid = document.get("pid") if isinstance(document, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError("the container state names no process")
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 -m aicert.agent.container_hook FILE", file=sys.stderr)
        return 2
    try:
        namespace = namespace_of_state(sys.stdin.buffer.read(MAX_STATE + 1))
        with open(args[0], "x") as record:
            record.write(f"{namespace}\n")
    except (OSError, ValueError) as exc:
        print(f"aicert container hook: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
