"""Inside the sandbox's namespaces: lock the file system down, drop root, run the command.

Run by :mod:`aicert.agent.sandbox` as ``unshare --net --mount --pid --fork --mount-proc
--kill-child python3 -I -m aicert.agent.confine ARGS -- COMMAND...``; it starts as root
in a new network, mount and PID namespace, and then:

1. brings up the namespace's own loopback interface (isolated from the host's, so
   multi-process training can rendezvous on 127.0.0.1 while nothing outside is reachable:
   the namespace has no other interface and no route);
2. bind-mounts every ``--writable`` directory onto itself, then every ``--read-only``
   directory (recursively) onto itself and remounts it read-only, nosuid, nodev — the
   writable mounts below it stay writable;
3. drops to ``--uid``/``--gid`` with no supplementary groups and sets
   PR_SET_NO_NEW_PRIVS, so set-uid programs cannot give root back;
4. changes to ``--cwd`` and executes the command with exactly the environment given by
   ``--env NAME=VALUE`` options, in a child process: this process stays behind as the
   PID namespace's init (unprivileged too), reaps orphans, and exits with the command's
   status (128 + N if signal N killed it). Its exit makes the kernel kill every process
   left in the namespace. The command therefore is not PID 1 and keeps ordinary signal
   behaviour.

Any failure before the exec exits with status 126 and a one-line message on stderr, so
the command is never run half-confined.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Sequence
from typing import NoReturn

CONFINE_FAILED = 126

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_PR_SET_NO_NEW_PRIVS = 38
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in the union

_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(Exception):
    pass


def _mount(source: str | None, target: str, flags: int) -> None:
    result = _libc.mount(
        None if source is None else source.encode(), target.encode(), None, flags, None
    )
    if result != 0:
        err = ctypes.get_errno()
        raise ConfineError(f"mount of {target} failed: {os.strerror(err)}")


def bind_writable(path: str) -> None:
    _mount(path, path, _MS_BIND)


def bind_read_only(path: str) -> None:
    _mount(path, path, _MS_BIND | _MS_REC)
    _mount(None, path, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfineError(f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}")
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise ConfineError("the privileges were not dropped")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aicert.agent.confine")
    parser.add_argument("--read-only", action="append", default=[])
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("command", nargs="+")
    return parser.parse_args(argv)


def confine(args: argparse.Namespace) -> NoReturn:
    if os.getuid() != 0:
        raise ConfineError("must start as root inside the new namespaces")
    if args.uid == 0 or args.gid == 0:
        raise ConfineError("refusing to run the command as root")
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfineError(f"bad --env {item!r}")
        env[name] = value
    loopback_up()
    for path in args.writable:
        bind_writable(path)
    for path in args.read_only:
        bind_read_only(path)
    child = os.fork()
    if child == 0:
        _exec_command(args, env)
    drop_privileges(args.uid, args.gid)
    os._exit(_reap_until(child))


def _exec_command(args: argparse.Namespace, env: dict[str, str]) -> NoReturn:
    try:
        drop_privileges(args.uid, args.gid)
        os.chdir(args.cwd)
        os.execvpe(args.command[0], args.command, env)  # noqa: S606 - argv, no shell
    except (ConfineError, OSError) as exc:
        print(f"aicert sandbox: cannot start the command: {exc}", file=sys.stderr, flush=True)
    os._exit(CONFINE_FAILED)


def _reap_until(child: int) -> int:
    """As the namespace's init: reap every orphan until ``child`` ends; its status.

    When this process exits the kernel kills whatever is left in the PID namespace, so
    background processes cannot outlive the command and write to the output later.
    """
    while True:
        pid, status = os.wait()
        if pid == child:
            return (
                os.waitstatus_to_exitcode(status)
                if os.WIFEXITED(status)
                else (128 + os.WTERMSIG(status))
            )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        confine(args)
    except (ConfineError, OSError) as exc:
        print(f"aicert sandbox: cannot start the command: {exc}", file=sys.stderr, flush=True)
        os._exit(CONFINE_FAILED)


if __name__ == "__main__":
    main()
