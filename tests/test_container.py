"""Commands in an environment really run confined, through the real crun.

The environment here is a busybox root file system (tests/container_host.py); these need
root, crun and tini, as the agent has in the image.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.agent.container import (
    ContainerJob,
    ContainerRun,
    processes_in_namespace,
    run_container,
)
from aicert.agent.container_spec import EnvironmentRoot
from aicert.agent.sandbox import SANDBOX_UID, SandboxSpec
from aicert.verifier.errors import ToolError
from container_host import busybox_rootfs, unified_cgroups

from aicert.process import run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="crun needs root, as in the image")


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    unified_cgroups()
    base = Path(tempfile.mkdtemp(prefix="aicert-rootfs-", dir="/tmp"))
    try:
        yield busybox_rootfs(base / "rootfs")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="aicert-container-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the unprivileged user must reach it
    (root / "inputs" / "code").mkdir(parents=True)
    (root / "inputs" / "data.txt").write_text("data\n")
    # Writable by anyone as far as permissions go: only the read-only bind protects them.
    (root / "inputs" / "data.txt").chmod(0o666)
    (root / "inputs" / "code").chmod(0o777)
    (root / "outputs").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _job(
    scratch: Path,
    rootfs: Path,
    script: str,
    *,
    env: tuple[str, ...] = (),
    entrypoint: tuple[str, ...] = (),
    use_entrypoint: bool = False,
) -> ContainerJob:
    (scratch / "inputs" / "code" / "probe.sh").write_text(script)
    return ContainerJob(
        SandboxSpec(
            command=("/bin/sh", "probe.sh"),
            cwd=scratch / "inputs" / "code",
            read_only=(scratch,),
            output=scratch / "outputs" / "out",
            work=scratch / "work",
            env={"AICERT_INPUTS": str(scratch / "inputs")},
        ),
        EnvironmentRoot(rootfs=rootfs, env=env, entrypoint=entrypoint),
        use_entrypoint=use_entrypoint,
    )


def _run(job: ContainerJob) -> tuple[int, str]:
    with tempfile.TemporaryFile() as log:
        status = run_container(job, log)
        log.seek(0)
        return status, log.read().decode(errors="replace")


def _report(job: ContainerJob) -> dict[str, str]:
    """The probe's ``key=value`` lines in $AICERT_OUTPUT/report."""
    lines = (job.sandbox.output / "report").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_the_environment_is_the_root(scratch: Path, rootfs: Path) -> None:
    job = _job(
        scratch,
        rootfs,
        """
        r=$AICERT_OUTPUT/report
        echo "marker=$(cat /etc/marker)" > $r
        echo "python=$(test -e /usr/bin/python3 && echo yes || echo no)" >> $r
        echo "cwd=$(pwd)" >> $r
        echo "inputs=$AICERT_INPUTS" >> $r
        echo "data=$(cat $AICERT_INPUTS/data.txt)" >> $r
        echo "home=$HOME" >> $r
        echo "tmpdir=$TMPDIR" >> $r
        echo "path=$PATH" >> $r
        echo "from_image=$FROM_IMAGE" >> $r
        echo "output=$AICERT_OUTPUT" >> $r
        """,
        env=("FROM_IMAGE=kept", "AICERT_OUTPUT=/elsewhere", "PATH=/bin"),
    )
    status, log = _run(job)
    assert status == 0, log
    report = _report(job)
    assert report["marker"] == "the environment's root"
    assert report["python"] == "no"  # the host's /usr is not visible
    assert report["cwd"] == "/aicert/inputs/code"
    assert report["inputs"] == "/aicert/inputs"
    assert report["data"] == "data"
    assert report["home"] == "/aicert/work/home"
    assert report["tmpdir"] == "/tmp"
    assert report["path"] == "/bin"  # the image's PATH
    assert report["from_image"] == "kept"
    assert report["output"] == "/aicert/output"  # the run's variables win over the image's


def test_no_network(scratch: Path, rootfs: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    try:
        job = _job(
            scratch,
            rootfs,
            f"""
            r=$AICERT_OUTPUT/report
            if echo hi | nc -w 2 127.0.0.1 {port}; then echo host=connected > $r
            else echo host=refused > $r; fi
            ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)
            echo "interfaces=$ifaces" >> $r
            echo "routes=$(tail -n +2 /proc/net/route | wc -l)" >> $r
            nc -l -p 8080 127.0.0.1 > /dev/null & sleep 0.2
            if echo hi | nc -w 2 127.0.0.1 8080; then echo own_loopback=yes >> $r
            else echo own_loopback=no >> $r; fi
            """,
        )
        status, log = _run(job)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert status == 0, log
    report = _report(job)
    assert accepted == [], "the container reached the host's listener"
    assert report["host"] == "refused"
    assert report["interfaces"] == "lo,"
    assert report["routes"] == "0"
    assert report["own_loopback"] == "yes"  # its own loopback is up, for rendezvous


def test_names_on_loopback_and_open_files(scratch: Path, rootfs: Path) -> None:
    """What torchrun and gloo need: localhost and the hostname resolve and connect on the
    container's own loopback; the open-files limit is the hard one."""
    job = _job(
        scratch,
        rootfs,
        """
        r=$AICERT_OUTPUT/report
        echo "hostname=$(hostname)" > $r
        echo "address=$(hostname -i)" >> $r
        echo "hosts_lines=$(wc -l < /etc/hosts)" >> $r
        echo "soft=$(ulimit -Sn)" >> $r
        echo "hard=$(ulimit -Hn)" >> $r
        nc -l -p 8081 > $AICERT_OUTPUT/received & sleep 0.2
        echo by-name | nc -w 2 aicert 8081; wait
        if echo hi > /etc/hosts; then echo hosts_writable=yes >> $r
        else echo hosts_writable=no >> $r; fi
        """,
    )
    status, log = _run(job)
    assert status == 0, log
    report = _report(job)
    assert report["hostname"] == "aicert"
    assert report["address"] == "127.0.1.1"
    assert report["hosts_lines"] == "3"  # the run's own, not the image's
    assert (job.sandbox.output / "received").read_text() == "by-name\n"
    assert report["soft"] == report["hard"] == str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert report["hosts_writable"] == "no"


def test_read_only_inputs_writable_output_unprivileged(scratch: Path, rootfs: Path) -> None:
    job = _job(
        scratch,
        rootfs,
        """
        r=$AICERT_OUTPUT/report
        try() {
            if (echo x >> "$2") 2>/dev/null; then echo "$1=written"; else echo "$1=refused"; fi
        }
        try input $AICERT_INPUTS/data.txt >> $r
        try code ./new.sh >> $r
        try root /etc/planted >> $r
        try home $HOME/cache >> $r
        try tmp /tmp/scratch >> $r
        echo "uid=$(id -u) gid=$(id -g)" | tr ' ' '\\n' >> $r
        echo "groups=$(id -G)" >> $r
        grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status | tr -d ' \\t' \\
            | sed 's/:/=/' >> $r
        if mknod /tmp/disk b 8 0 2>/dev/null; then echo mknod=made >> $r
        else echo mknod=refused >> $r; fi
        echo "devices=$(ls /dev | tr '\\n' ,)" >> $r
        """,
    )
    status, log = _run(job)
    assert status == 0, log
    report = _report(job)
    assert report["input"] == report["code"] == report["root"] == "refused"
    assert report["home"] == report["tmp"] == "written"
    assert (scratch / "inputs" / "data.txt").read_text() == "data\n"
    assert (job.sandbox.work / "tmp" / "scratch").read_text() == "x\n"
    assert report["uid"] == report["gid"] == str(SANDBOX_UID)
    assert report["groups"] == str(SANDBOX_UID)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(report[cap], 16) == 0, cap
    assert report["NoNewPrivs"] == "1"
    assert report["mknod"] == "refused"
    assert set(report["devices"].strip(",").split(",")) <= {
        "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random",
        "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero",
    }  # fmt: skip


def test_background_processes_do_not_outlive_the_run(scratch: Path, rootfs: Path) -> None:
    job = _job(
        scratch,
        rootfs,
        """
        sleep 1000 &
        (trap '' TERM HUP; sleep 1000) &
        echo started
        """,
    )
    with tempfile.TemporaryFile() as log:
        started = ContainerRun(job, log)
        status = started.wait()
        namespace = started.namespace()
    assert status == 0
    assert namespace is not None
    assert processes_in_namespace(namespace) == []
    state = run(["crun", "--root", "/nonexistent", "state", started.name], check=False)
    assert state.returncode != 0
    assert not any(
        _cmdline(pid) == b"sleep\x001000\x00" and _pid_ns(pid) == namespace for pid in _all_pids()
    )


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _pid_ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


@pytest.mark.parametrize(
    ("script", "expected"),
    [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 143), ("kill -KILL $$", 137)],
)
def test_exit_status(scratch: Path, rootfs: Path, script: str, expected: int) -> None:
    status, log = _run(_job(scratch, rootfs, script))
    assert status == expected, log


def test_the_entrypoint_only_when_asked(scratch: Path, rootfs: Path) -> None:
    entrypoint = ("/bin/sh", "-c", 'echo "entrypoint=$*" > $AICERT_OUTPUT/report', "entry")
    job = _job(scratch, rootfs, "echo entrypoint=none > $AICERT_OUTPUT/report",
               entrypoint=entrypoint)  # fmt: skip
    assert _run(job)[0] == 0
    assert _report(job)["entrypoint"] == "none"
    shutil.rmtree(job.sandbox.output)
    shutil.rmtree(job.sandbox.work)
    asked = _job(scratch, rootfs, "", entrypoint=entrypoint, use_entrypoint=True)
    assert _run(asked)[0] == 0
    assert _report(asked)["entrypoint"] == "/bin/sh probe.sh"  # the job's command as arguments


def test_evaluations_see_read_only_weights(scratch: Path, rootfs: Path) -> None:
    weights = scratch / "outputs" / "model"
    weights.mkdir()
    (weights / "w.bin").write_text("weights\n")
    (weights / "w.bin").chmod(0o666)
    (scratch / "inputs" / "code" / "eval.sh").write_text(
        """
        r=$AICERT_OUTPUT/report
        echo "weights=$AICERT_WEIGHTS" > $r
        echo "content=$(cat $AICERT_WEIGHTS/w.bin)" >> $r
        if (echo x >> $AICERT_WEIGHTS/w.bin) 2>/dev/null; then echo write=written >> $r
        else echo write=refused >> $r; fi
        """
    )
    job = ContainerJob(
        SandboxSpec(
            command=("/bin/sh", "eval.sh"),
            cwd=scratch / "inputs" / "code",
            read_only=(scratch,),
            output=scratch / "eval-output",
            work=scratch / "eval-work",
            env={"AICERT_WEIGHTS": str(weights), "AICERT_INPUTS": str(scratch / "inputs")},
        ),
        EnvironmentRoot(rootfs=rootfs),
    )
    status, log = _run(job)
    assert status == 0, log
    report = _report(job)
    assert report == {"weights": "/aicert/weights", "content": "weights", "write": "refused"}


def test_missing_crun_is_a_one_line_tool_error(
    scratch: Path, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(scratch / "inputs"))
    with tempfile.TemporaryFile() as log, pytest.raises(ToolError) as caught:
        ContainerRun(_job(scratch, rootfs, "exit 0"), log)
    assert "'crun' is not installed" in caught.value.message
    assert "\n" not in caught.value.message


def test_a_command_that_cannot_start_fails_the_run(scratch: Path, rootfs: Path) -> None:
    """tini reports 127 (not found) and the reason is in the log."""
    job = _job(scratch, rootfs, "")
    job = ContainerJob(
        SandboxSpec(
            command=("/no/such/program",),
            cwd=job.sandbox.cwd,
            read_only=job.sandbox.read_only,
            output=job.sandbox.output,
            work=job.sandbox.work,
            env=job.sandbox.env,
        ),
        job.environment,
    )
    status, log = _run(job)
    assert status == 127  # tini: not found
    assert "/no/such/program" in log


def test_the_leftover_check_sees_processes_of_a_namespace() -> None:
    """The /proc scan that backs the leftover check finds a live namespace's processes."""
    with subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"]) as outer:
        try:
            for _ in range(100):
                children = [p for p in _all_pids() if _parent(p) == outer.pid]
                if children and _pid_ns(children[0]) != _pid_ns(os.getpid()):
                    break
                time.sleep(0.05)
            namespace = _pid_ns(children[0])
            assert namespace is not None
            assert processes_in_namespace(namespace) == children
        finally:
            outer.kill()
            outer.wait()
    for _ in range(100):
        if not processes_in_namespace(namespace):
            break
        time.sleep(0.05)
    assert processes_in_namespace(namespace) == []


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
