"""Host set-up for the container tests and benchmark: what the image gives crun, here.

The image boots with systemd's unified cgroup v2 hierarchy; some hosts (this kind of
build machine among them) mount the hybrid layout, which crun refuses. This process then
gets a mount namespace of its own whose /sys/fs/cgroup is the cgroup2 hierarchy alone;
the host's mounts are untouched. A busybox root file system stands in for an environment.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from aicert.agent.container import require_unified_cgroups
from aicert.verifier.errors import ToolError
from oci_support import Entry, directory, file, symlink

from aicert.process import run

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_BUSYBOX = Path("/bin/busybox")


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def unified_cgroups() -> None:
    """Make /sys/fs/cgroup cgroup2-only for this process, unless it already is."""
    try:
        require_unified_cgroups()
        return
    except ToolError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    _check(libc.mount(b"cgroup2", b"/sys/fs/cgroup", b"cgroup2", 0, None), "mount cgroup2")
    require_unified_cgroups()


def busybox_rootfs(root: Path) -> Path:
    """A root file system of Debian's static busybox and its applets; ``root``."""
    if not _BUSYBOX.is_file():
        raise ToolError("busybox is not installed; install the Debian package busybox-static")
    (root / "bin").mkdir(parents=True)
    for name in ("proc", "sys", "dev", "tmp", "etc"):
        (root / name).mkdir()
    (root / "tmp").chmod(0o1777)
    shutil.copy2(_BUSYBOX, root / "bin" / "busybox")
    applets = run([_BUSYBOX, "--list"]).stdout.decode().split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "marker").write_text("the environment's root\n")
    return root


def busybox_layer_entries() -> list[Entry]:
    """The busybox root file system as the entries of one OCI layer (for real images)."""
    if not _BUSYBOX.is_file():
        raise ToolError("busybox is not installed; install the Debian package busybox-static")
    entries = [directory(name) for name in ("bin", "proc", "sys", "dev", "tmp", "etc")]
    entries.append(file("bin/busybox", _BUSYBOX.read_bytes(), 0o755))
    for applet in run([_BUSYBOX, "--list"]).stdout.decode().split():
        if applet != "busybox":
            entries.append(symlink(f"bin/{applet}", "busybox"))
    entries.append(file("etc/marker", b"the environment's root\n"))
    return entries
