"""The OCI runtime spec (``config.json``) of one confined run in a training environment.

Pure: from an unpacked environment (:class:`EnvironmentRoot`, what intake hands over),
the command, the host directories to bind and the GPU device nodes, build the typed
:class:`RuntimeSpec` and its JSON (OCI runtime-spec 1.0). :mod:`aicert.agent.container`
runs it with crun.

The job's view inside the container (docs/job-file.md, "Environments")::

    /                        the environment's root file system, read-only
    /aicert/inputs           the inputs, read-only            $AICERT_INPUTS
    /aicert/inputs/job-config/config.json                     $AICERT_CONFIG
    /aicert/weights          the weights, read-only (evaluations)  $AICERT_WEIGHTS
    /aicert/output           the one writable output          $AICERT_OUTPUT
    /aicert/work/home        writable, not measured           $HOME
    /tmp                     writable, not measured           $TMPDIR
    /dev                     a fresh tmpfs: the default nodes (null, zero, full, random,
                             urandom, tty, ptmx) and the host's GPU nodes, nothing else
    /dev/shm                 a fresh tmpfs (PyTorch's DataLoader workers share tensors there)
    /etc/hosts               the run's own, read-only: localhost and the hostname on loopback
    /aicert/driver/lib       with GPUs: the image's NVIDIA driver libraries, read-only,
                             first on $LD_LIBRARY_PATH (libcuda, NVML, the PTX JIT)

CUDA's user space comes from the environment, but libcuda and NVML belong to the kernel
driver and must match it, so they come from the measured image: bind mounts in this
spec, not a CDI spec. crun reads no CDI; a CDI spec would need NVIDIA's container
toolkit (not in Debian) to write it and still be applied by the agent as exactly these
mounts and device entries. The libraries are bound under /aicert (a tmpfs of the run),
so nothing is added to the environment's unpacked root.

The command runs as 65534:65534 with no supplementary groups (except the owning group of
a GPU node that only its group may open), no capabilities, ``noNewPrivileges``, in new
PID, network (loopback only), mount, IPC and UTS namespaces, with its open-files limit
raised to the hard limit. The image's ``User`` and ``WorkingDir`` are not used: the user
is always the unprivileged one and the command runs in the code input's directory, as
without an environment.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final, Protocol

from aicert.verifier.errors import InputError

OCI_VERSION: Final = "1.0.2"
INPUTS: Final = "/aicert/inputs"
WEIGHTS: Final = "/aicert/weights"
OUTPUT: Final = "/aicert/output"
WORK: Final = "/aicert/work"
INIT: Final = "/aicert/init"
TMP: Final = "/tmp"  # noqa: S108 - inside the container, bound to the run's own work/tmp
HOSTS: Final = "/etc/hosts"
HOSTNAME: Final = "aicert"
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GPU_DEVICE_GLOBS: Final = ("nvidia*", "nvidia-caps/*", "dri/*")
DRIVER_LIB: Final = "/aicert/driver/lib"
DRIVER_EXTRA: Final = "/aicert/driver/extra"
HOST_LIBDIR: Final = Path("/usr/lib/x86_64-linux-gnu")
# Debian keeps the driver's libraries in a directory of their own (nvidia/current);
# only the CC-mode PKCS #11 helper that libcuda loads lies beside the system's libraries.
HOST_DRIVER_DIR: Final = "nvidia/current"
HOST_DRIVER_EXTRA_GLOB: Final = "libnvidia-pkcs11*.so.*"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Kernel interfaces a job has no business reading or changing (the runtime-spec's usual set).
_MASKED: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
_READ_ONLY: Final = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class EnvironmentSpecError(InputError):
    """The environment or the run cannot be expressed as a safe container."""


class RunnableEnvironment(Protocol):
    """What a run needs of an unpacked environment; intake's ``Environment`` has it."""

    @property
    def rootfs(self) -> Path: ...
    @property
    def env(self) -> tuple[str, ...]: ...
    @property
    def entrypoint(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class EnvironmentRoot:
    """An unpacked OCI image, as intake hands it to the runner.

    ``rootfs`` is the unpacked root file system (owned by root; it is mounted
    read-only). The other fields are the image config's (``config.Env`` as
    ``NAME=value`` strings, ``Entrypoint``, ``Cmd``, ``WorkingDir``, ``User``);
    only ``env`` and, when the job asks for it, ``entrypoint`` are used.
    """

    rootfs: Path
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""


@dataclass(frozen=True)
class Bind:
    """A host directory bound into the container."""

    source: Path
    target: str
    writable: bool


@dataclass(frozen=True)
class Device:
    """A character device node passed into the container (a GPU)."""

    path: str
    major: int
    minor: int
    mode: int
    uid: int
    gid: int

    @property
    def others_can_use(self) -> bool:
        return self.mode & 0o006 == 0o006


@dataclass(frozen=True)
class Rlimit:
    """A resource limit of the command (``RLIMIT_NOFILE``, ...)."""

    kind: str
    soft: int
    hard: int


def hosts_file(hostname: str = HOSTNAME) -> str:
    """The container's ``/etc/hosts``: localhost and ``hostname``, on loopback only.

    The runtime owns this file, as Docker and Podman do, rather than the image: in a
    network namespace with nothing but loopback, only these names mean anything, and
    rendezvous code resolves them (torchrun's c10d store listens on the hostname, gloo
    binds to the address the hostname resolves to).
    """
    return (
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything config.json says; :meth:`to_json` is the runtime-spec document."""

    rootfs: Path
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    binds: tuple[Bind, ...]
    devices: tuple[Device, ...] = ()
    init: Path | None = None
    hosts: Path | None = None
    """A file holding :func:`hosts_file`, bound read-only at /etc/hosts."""
    rlimits: tuple[Rlimit, ...] = ()
    hostname: str = HOSTNAME
    extra_gids: tuple[int, ...] = field(default=())
    # Host commands crun runs once the namespaces exist, before the command starts.
    create_hooks: tuple[tuple[str, ...], ...] = ()

    def to_json(self) -> dict[str, object]:
        no_caps: dict[str, list[str]] = {
            kind: [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        return {
            "ociVersion": OCI_VERSION,
            "process": {
                "terminal": False,
                "user": {
                    "uid": self.uid,
                    "gid": self.gid,
                    "additionalGids": list(self.extra_gids),
                },
                "args": list(self.args),
                "env": list(self.env),
                "cwd": self.cwd,
                "capabilities": no_caps,
                "rlimits": [{"type": r.kind, "soft": r.soft, "hard": r.hard} for r in self.rlimits],
                "noNewPrivileges": True,
            },
            "root": {"path": str(self.rootfs), "readonly": True},
            "hostname": self.hostname,
            "mounts": self._mounts(),
            "hooks": {
                "createRuntime": [
                    {"path": hook[0], "args": list(hook)} for hook in self.create_hooks
                ]
            },
            "linux": {
                "namespaces": [
                    {"type": kind} for kind in ("pid", "network", "mount", "ipc", "uts")
                ],
                "devices": [
                    {
                        "path": d.path,
                        "type": "c",
                        "major": d.major,
                        "minor": d.minor,
                        "fileMode": d.mode,
                        "uid": d.uid,
                        "gid": d.gid,
                    }
                    for d in self.devices
                ],
                "maskedPaths": list(_MASKED),
                "readonlyPaths": list(_READ_ONLY),
                "rootfsPropagation": "private",
            },
        }

    def _mounts(self) -> list[dict[str, object]]:
        kernel: list[dict[str, object]] = [
            _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
            _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            _mount(
                "/dev/pts",
                "devpts",
                "devpts",
                ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            ),
            _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777"]),  # noqa: S108
            _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
            _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
            # The run's own mount points live on a tmpfs, so crun adds at most the empty
            # directories /aicert, /proc, /dev, /sys and /tmp to the unpacked root (which is
            # not what is measured: the manifest digest is).
            _mount(
                "/aicert", "tmpfs", "tmpfs", ["nosuid", "nodev", "noexec", "mode=755", "size=1m"]
            ),
        ]
        binds = [
            _mount(
                b.target,
                "bind",
                str(b.source),
                ["rbind", "rw" if b.writable else "ro", "nosuid", "nodev", "rprivate"],
            )
            for b in self.binds
        ]
        if self.init is not None:
            binds.append(_mount(INIT, "bind", str(self.init), ["bind", "ro", "nosuid", "nodev"]))
        if self.hosts is not None:
            binds.append(_mount(HOSTS, "bind", str(self.hosts), ["bind", "ro", "nosuid", "nodev"]))
        return kernel + binds


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, object]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def gpu_devices(dev: Path = Path("/dev")) -> tuple[Device, ...]:
    """The GPU character devices under ``dev`` (``/dev/nvidia*``, ``/dev/dri/*``), sorted.

    Paths in the result are the container's (``/dev/...``); symbolic links (such as
    ``/dev/dri/by-path``) and anything that is not a character device are skipped.
    """
    found: list[Device] = []
    for pattern in GPU_DEVICE_GLOBS:
        for node in sorted(dev.glob(pattern)):
            info = node.lstat()
            if not stat.S_ISCHR(info.st_mode):
                continue
            found.append(
                Device(
                    path="/dev/" + node.relative_to(dev).as_posix(),
                    major=os.major(info.st_rdev),
                    minor=os.minor(info.st_rdev),
                    mode=stat.S_IMODE(info.st_mode),
                    uid=info.st_uid,
                    gid=info.st_gid,
                )
            )
    return tuple(found)


def driver_binds(libdir: Path = HOST_LIBDIR) -> tuple[Bind, ...]:
    """Read-only binds of the host's NVIDIA driver libraries; none without the driver."""
    driver = libdir / HOST_DRIVER_DIR
    if not driver.is_dir():
        return ()
    extras = (
        Bind(path, f"{DRIVER_EXTRA}/{path.name}", writable=False)
        for path in sorted(libdir.glob(HOST_DRIVER_EXTRA_GLOB))
        if path.is_file() and not path.is_symlink()
    )
    return (Bind(driver, DRIVER_LIB, writable=False), *extras)


def device_groups(devices: Iterable[Device]) -> tuple[int, ...]:
    """The groups the command needs to open nodes that only their group may use."""
    return tuple(sorted({d.gid for d in devices if not d.others_can_use and d.gid != 0}))


def _check_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name) or "\0" in value:
            raise EnvironmentSpecError(f"the image's Env entry {item[:80]!r} is not NAME=value")
        env[name] = value
    return env


@dataclass(frozen=True)
class PathMap:
    """Host directories and where the container sees them."""

    binds: tuple[Bind, ...]

    def inside(self, host: Path) -> str:
        """The container path of ``host``, which must lie in a bound directory."""
        for bind in self.binds:
            if host == bind.source or bind.source in host.parents:
                return str(PurePosixPath(bind.target) / host.relative_to(bind.source))
        raise EnvironmentSpecError(f"{host} is not visible inside the container")


def build_spec(
    root: RunnableEnvironment,
    *,
    command: Sequence[str],
    cwd: Path,
    binds: Sequence[Bind],
    env: Mapping[str, Path | str],
    uid: int,
    gid: int,
    use_entrypoint: bool = False,
    devices: Sequence[Device] = (),
    driver: Sequence[Bind] = (),
    init: Path | None = None,
    hosts: Path | None = None,
    rlimits: Sequence[Rlimit] = (),
    create_hooks: Sequence[tuple[str, ...]] = (),
) -> RuntimeSpec:
    """The spec for ``command`` in ``root`` with ``binds``.

    ``cwd`` and the ``Path`` values of ``env`` are host paths and are translated to the
    container's (they must lie in a bound directory); string values are used as given.
    The image's Env comes first, then PATH and LANG defaults where it sets none, then the
    run's own variables, which always win. ``driver`` (:func:`driver_binds`) is bound
    as well, and its directories go first on LD_LIBRARY_PATH, before the image's.
    """
    if uid == 0 or gid == 0:
        raise EnvironmentSpecError("refusing to run the command as root")
    if not command:
        raise EnvironmentSpecError("the command is empty")
    paths = PathMap(tuple(binds))
    variables = _check_env(root.env)
    variables.setdefault("PATH", DEFAULT_PATH)
    variables.setdefault("LANG", "C.UTF-8")
    if driver:
        # libcuda must be the kernel driver's own: it goes before any copy in the image.
        dirs = dict.fromkeys(str(PurePosixPath(b.target).parent) for b in driver[1:])
        search = [driver[0].target, *dirs, *filter(None, [variables.get("LD_LIBRARY_PATH")])]
        variables["LD_LIBRARY_PATH"] = ":".join(search)
    for name, value in env.items():
        variables[name] = paths.inside(value) if isinstance(value, Path) else value
    args = (*root.entrypoint, *command) if use_entrypoint else tuple(command)
    if init is not None:
        # tini as PID 1: it reaps orphans and passes signals on, so the command keeps
        # ordinary signal behaviour; it exits with the command's status (128 + N on signal N).
        args = (INIT, "--", *args)
    return RuntimeSpec(
        rootfs=root.rootfs,
        args=args,
        env=tuple(f"{name}={value}" for name, value in variables.items()),
        cwd=paths.inside(cwd),
        uid=uid,
        gid=gid,
        binds=(*binds, *driver),
        devices=tuple(devices),
        init=init,
        hosts=hosts,
        rlimits=tuple(rlimits),
        extra_gids=device_groups(devices),
        create_hooks=tuple(create_hooks),
    )
