"""The OCI runtime spec generator: confinement fields, path translation, GPU nodes."""

from __future__ import annotations

import json
import os
import resource
import stat
from pathlib import Path

import pytest
from aicert.agent.container import ContainerJob, require_unified_cgroups, runtime_spec
from aicert.agent.container_hook import MAX_STATE, namespace_of_state
from aicert.agent.container_spec import (
    Bind,
    EnvironmentRoot,
    EnvironmentSpecError,
    build_spec,
    driver_binds,
    gpu_devices,
    hosts_file,
)
from aicert.agent.sandbox import SandboxSpec
from aicert.verifier.errors import ToolError
from hypothesis import given
from hypothesis import strategies as st

ROOT = EnvironmentRoot(
    rootfs=Path("/scratch/env/rootfs"),
    env=("PATH=/opt/conda/bin:/usr/bin", "LANG=en_US.UTF-8", "HOME=/root"),
    entrypoint=("/usr/bin/tini", "--"),
    cmd=("bash",),
    working_dir="/workspace",
    user="root",
)


def _sandbox(scratch: Path, **env: str) -> SandboxSpec:
    return SandboxSpec(
        command=("python3", "train.py"),
        cwd=scratch / "inputs" / "code",
        read_only=(scratch,),
        output=scratch / "outputs" / "model",
        work=scratch / "work",
        env={"AICERT_INPUTS": str(scratch / "inputs"), **env},
    )


def _spec(tmp_path: Path, dev: Path, libdir: Path | None = None, **env: str) -> dict[str, object]:
    job = ContainerJob(_sandbox(Path("/scratch"), **env), ROOT)
    spec = runtime_spec(
        job,
        init=Path("/usr/bin/tini-static"),
        namespace_record=tmp_path / "ns",
        hosts=tmp_path / "hosts",
        dev=dev,
        libdir=libdir or tmp_path / "no-driver",
    )
    document = spec.to_json()
    json.dumps(document)  # it is JSON as it stands
    return document


def _mknod(path: Path, major: int, minor: int, mode: int, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(path, mode)
    os.chown(path, 0, gid)


@pytest.fixture
def empty_dev(tmp_path: Path) -> Path:
    dev = tmp_path / "dev"
    dev.mkdir()
    return dev


def test_confinement_fields(tmp_path: Path, empty_dev: Path) -> None:
    doc = _spec(tmp_path, empty_dev)
    process = doc["process"]
    assert isinstance(process, dict)
    assert process["user"] == {"uid": 65534, "gid": 65534, "additionalGids": []}
    assert process["noNewPrivileges"] is True
    assert all(caps == [] for caps in process["capabilities"].values())
    assert len(process["capabilities"]) == 5
    assert process["args"] == ["/aicert/init", "--", "python3", "train.py"]  # no entrypoint
    assert process["cwd"] == "/aicert/inputs/code"  # not the image's WorkingDir
    assert doc["root"] == {"path": "/scratch/env/rootfs", "readonly": True}
    linux = doc["linux"]
    assert isinstance(linux, dict)
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "network", "mount", "ipc", "uts"]
    assert linux["devices"] == []
    mounts = {m["destination"]: m for m in doc["mounts"]}  # type: ignore[attr-defined]
    assert mounts["/aicert/inputs"]["source"] == "/scratch/inputs"
    assert "ro" in mounts["/aicert/inputs"]["options"]
    assert mounts["/aicert/output"]["source"] == "/scratch/outputs/model"
    assert "rw" in mounts["/aicert/output"]["options"]
    assert mounts["/tmp"]["source"] == "/scratch/work/tmp"
    assert mounts["/aicert/init"]["source"] == "/usr/bin/tini-static"
    assert "ro" in mounts["/aicert/init"]["options"]
    for target in ("/aicert/inputs", "/aicert/output", "/aicert/work", "/tmp"):
        assert {"nosuid", "nodev"} <= set(mounts[target]["options"]), target
    assert mounts["/sys"]["options"][-1] == "ro"
    hooks = doc["hooks"]["createRuntime"]  # type: ignore[index]
    assert hooks[0]["args"][-2:] == ["aicert.agent.container_hook", str(tmp_path / "ns")]


def test_hosts_and_open_files(tmp_path: Path, empty_dev: Path) -> None:
    """What multi-process training needs: names on loopback, descriptors to share tensors."""
    doc = _spec(tmp_path, empty_dev)
    mounts = {m["destination"]: m for m in doc["mounts"]}  # type: ignore[attr-defined]
    assert mounts["/etc/hosts"]["source"] == str(tmp_path / "hosts")
    assert {"ro", "nosuid", "nodev"} <= set(mounts["/etc/hosts"]["options"])
    assert doc["hostname"] == "aicert"
    assert hosts_file().splitlines() == [
        "127.0.0.1\tlocalhost",
        "127.0.1.1\taicert",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    [nofile] = doc["process"]["rlimits"]  # type: ignore[index]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert nofile == {"type": "RLIMIT_NOFILE", "soft": hard, "hard": hard}


def test_environment_variables(tmp_path: Path, empty_dev: Path) -> None:
    doc = _spec(tmp_path, empty_dev, AICERT_CONFIG="/scratch/inputs/job-config/config.json")
    env = dict(item.split("=", 1) for item in doc["process"]["env"])  # type: ignore[index]
    assert env == {
        "PATH": "/opt/conda/bin:/usr/bin",  # the image's
        "LANG": "en_US.UTF-8",
        "HOME": "/aicert/work/home",  # the run's, over the image's /root
        "TMPDIR": "/tmp",
        "AICERT_OUTPUT": "/aicert/output",
        "AICERT_INPUTS": "/aicert/inputs",
        "AICERT_CONFIG": "/aicert/inputs/job-config/config.json",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_evaluation_weights_are_bound_read_only(tmp_path: Path, empty_dev: Path) -> None:
    doc = _spec(
        tmp_path,
        empty_dev,
        AICERT_WEIGHTS="/scratch/outputs/model",
        AICERT_RESULTS="/scratch/outputs/model/../../eval/out/results.json",
    )
    mounts = {m["destination"]: m for m in doc["mounts"]}  # type: ignore[attr-defined]
    assert mounts["/aicert/weights"]["source"] == "/scratch/outputs/model"
    assert "ro" in mounts["/aicert/weights"]["options"]


def test_a_variable_outside_every_bind_is_refused(tmp_path: Path, empty_dev: Path) -> None:
    with pytest.raises(EnvironmentSpecError, match="not visible inside the container"):
        _spec(tmp_path, empty_dev, AICERT_RESULTS="/elsewhere/results.json")


def test_entrypoint_when_asked(tmp_path: Path, empty_dev: Path) -> None:
    job = ContainerJob(_sandbox(Path("/scratch")), ROOT, use_entrypoint=True)
    spec = runtime_spec(
        job, init=Path("/tini"), namespace_record=tmp_path / "ns", hosts=Path("/h"), dev=empty_dev
    )
    assert spec.args == ("/aicert/init", "--", "/usr/bin/tini", "--", "python3", "train.py")


def test_gpu_nodes_are_passed_in(tmp_path: Path, empty_dev: Path) -> None:
    _mknod(empty_dev / "nvidia0", 195, 0, 0o666)
    _mknod(empty_dev / "nvidiactl", 195, 255, 0o666)
    _mknod(empty_dev / "nvidia-uvm", 508, 0, 0o666)
    _mknod(empty_dev / "nvidia-caps" / "nvidia-cap1", 511, 1, 0o400)
    _mknod(empty_dev / "dri" / "card0", 226, 0, 0o660, gid=44)
    _mknod(empty_dev / "dri" / "renderD128", 226, 128, 0o660, gid=105)
    (empty_dev / "dri" / "by-path").mkdir()
    (empty_dev / "dri" / "by-path" / "pci-0000:00:02.0-card").symlink_to("../card0")
    (empty_dev / "nvidia-smi-log").write_text("not a device\n")
    _mknod(empty_dev / "sda", 8, 0, 0o660)  # not a GPU
    found = gpu_devices(empty_dev)
    assert [(d.path, d.major, d.minor) for d in found] == [
        ("/dev/nvidia-uvm", 508, 0),
        ("/dev/nvidia0", 195, 0),
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-caps/nvidia-cap1", 511, 1),
        ("/dev/dri/card0", 226, 0),
        ("/dev/dri/renderD128", 226, 128),
    ]
    doc = _spec(tmp_path, empty_dev)
    devices = doc["linux"]["devices"]  # type: ignore[index]
    assert devices[0] == {
        "path": "/dev/nvidia-uvm",
        "type": "c",
        "major": 508,
        "minor": 0,
        "fileMode": 0o666,
        "uid": 0,
        "gid": 0,
    }
    assert len(devices) == 6
    # Nodes only their group may open: the command gets exactly those groups.
    assert doc["process"]["user"]["additionalGids"] == [44, 105]  # type: ignore[index]


def _driver_libdir(tmp_path: Path) -> Path:
    """A host library folder laid out as Debian's driver packages install it."""
    libdir = tmp_path / "lib"
    current = libdir / "nvidia" / "current"
    current.mkdir(parents=True)
    (current / "libcuda.so.550.163.01").write_bytes(b"\x7fELF")
    (current / "libcuda.so.1").symlink_to("libcuda.so.550.163.01")
    (libdir / "libnvidia-pkcs11-openssl3.so.550.163.01").write_bytes(b"\x7fELF")
    (libdir / "libnvidia-pkcs11.so.550.163.01").symlink_to(
        "libnvidia-pkcs11-openssl3.so.550.163.01"
    )
    (libdir / "libc.so.6").write_bytes(b"\x7fELF")
    return libdir


def test_with_gpus_the_driver_libraries_are_bound_read_only_and_searched_first(
    tmp_path: Path, empty_dev: Path
) -> None:
    _mknod(empty_dev / "nvidia0", 195, 0, 0o666)
    _mknod(empty_dev / "nvidiactl", 195, 255, 0o666)
    libdir = _driver_libdir(tmp_path)
    doc = _spec(tmp_path, empty_dev, libdir=libdir)
    mounts = {m["destination"]: m for m in doc["mounts"]}  # type: ignore[attr-defined]
    lib = mounts["/aicert/driver/lib"]
    assert lib["source"] == str(libdir / "nvidia" / "current")
    assert "ro" in lib["options"]
    assert "rw" not in lib["options"]
    extra = mounts["/aicert/driver/extra/libnvidia-pkcs11-openssl3.so.550.163.01"]
    assert extra["source"] == str(libdir / "libnvidia-pkcs11-openssl3.so.550.163.01")
    assert "ro" in extra["options"]
    # Only the driver's own files: no symbolic link, no system library.
    driver_targets = [d for d in mounts if d.startswith("/aicert/driver/")]
    assert len(driver_targets) == 2
    env = dict(e.split("=", 1) for e in doc["process"]["env"])  # type: ignore[index]
    assert env["LD_LIBRARY_PATH"] == "/aicert/driver/lib:/aicert/driver/extra"


def test_the_images_library_path_comes_after_the_drivers(tmp_path: Path) -> None:
    root = EnvironmentRoot(rootfs=tmp_path / "rootfs", env=("LD_LIBRARY_PATH=/opt/lib",))
    spec = build_spec(
        root,
        command=["python3"],
        cwd=tmp_path,
        binds=[Bind(tmp_path, "/aicert/inputs", writable=False)],
        env={},
        uid=65534,
        gid=65534,
        driver=driver_binds(_driver_libdir(tmp_path)),
    )
    assert "LD_LIBRARY_PATH=/aicert/driver/lib:/aicert/driver/extra:/opt/lib" in spec.env


def test_without_gpus_no_driver_library_is_bound(tmp_path: Path, empty_dev: Path) -> None:
    doc = _spec(tmp_path, empty_dev, libdir=_driver_libdir(tmp_path))
    mounts = [m["destination"] for m in doc["mounts"]]  # type: ignore[attr-defined]
    assert not [d for d in mounts if d.startswith("/aicert/driver")]
    env = dict(e.split("=", 1) for e in doc["process"]["env"])  # type: ignore[index]
    assert "LD_LIBRARY_PATH" not in env
    assert driver_binds(tmp_path / "no-driver") == ()


def test_refusals() -> None:
    binds = [Bind(Path("/scratch/inputs"), "/aicert/inputs", writable=False)]
    common = {"cwd": Path("/scratch/inputs"), "binds": binds, "env": {}}
    with pytest.raises(EnvironmentSpecError, match="as root"):
        build_spec(ROOT, command=["true"], uid=0, gid=65534, **common)  # type: ignore[arg-type]
    with pytest.raises(EnvironmentSpecError, match="empty"):
        build_spec(ROOT, command=[], uid=65534, gid=65534, **common)  # type: ignore[arg-type]
    bad = EnvironmentRoot(rootfs=Path("/r"), env=("NOEQUALS",))
    with pytest.raises(EnvironmentSpecError, match="not NAME=value"):
        build_spec(bad, command=["true"], uid=65534, gid=65534, **common)  # type: ignore[arg-type]


def _valid_entry(entry: str) -> bool:
    name, sep, value = entry.partition("=")
    return bool(sep) and name.isascii() and name.isidentifier() and "\0" not in value


@given(st.lists(st.text(max_size=30), max_size=8))
def test_image_env_entries_are_checked(entries: list[str]) -> None:
    root = EnvironmentRoot(rootfs=Path("/r"), env=tuple(entries))
    binds = [Bind(Path("/s"), "/aicert/inputs", writable=False)]
    try:
        spec = build_spec(root, command=["true"], cwd=Path("/s"), binds=binds, env={}, uid=1, gid=1)
    except EnvironmentSpecError:
        assert not all(_valid_entry(e) for e in entries)
        return
    assert all(_valid_entry(e) for e in entries)
    names = [item.partition("=")[0] for item in spec.env]
    assert len(names) == len(set(names))
    last = {e.partition("=")[0]: e for e in entries}
    assert set(last.values()) <= set(spec.env)  # the image's last value of each name


@given(st.binary(max_size=200))
def test_the_hook_refuses_any_state_but_a_live_pid(state: bytes) -> None:
    try:
        namespace = namespace_of_state(state)
    except (ValueError, OSError):
        return
    assert namespace > 0  # only a state naming a running process gets this far


def test_the_hook_reads_a_state_document() -> None:
    state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": os.getpid()}).encode()
    assert namespace_of_state(state) == os.stat("/proc/self/ns/pid").st_ino
    with pytest.raises(ValueError, match="too large"):
        namespace_of_state(b" " * (MAX_STATE + 1))
    for bad in (b"[]", b'{"pid": true}', b'{"pid": -1}', b'{"pid": "1"}'):
        with pytest.raises(ValueError, match="names no process"):
            namespace_of_state(bad)


def test_crun_needs_the_unified_cgroup_hierarchy(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        "tmpfs /sys/fs/cgroup tmpfs rw,mode=755 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    )
    with pytest.raises(ToolError, match="found tmpfs") as caught:
        require_unified_cgroups(mounts)
    assert "\n" not in caught.value.message
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(ToolError, match="found nothing"):
        require_unified_cgroups(mounts)
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n")
    require_unified_cgroups(mounts)
