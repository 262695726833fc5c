"""The sandbox really confines: no network, read-only inputs, one writable output, no root.

These run the real ``unshare`` and need root (as the agent has in the image).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.agent.sandbox import SANDBOX_UID, SandboxRun, SandboxSpec, run_confined, sandbox_argv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root, as in the image")

PYTHON = "/usr/bin/python3"


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="aicert-sandbox-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the sandbox user must reach it
    (root / "inputs" / "code").mkdir(parents=True)
    (root / "inputs" / "data.txt").write_text("data\n")
    # Writable by anyone as far as permissions go: only the read-only mount protects them.
    (root / "inputs" / "data.txt").chmod(0o666)
    (root / "inputs" / "code").chmod(0o777)
    (root / "outputs").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _spec(scratch: Path, script: str) -> SandboxSpec:
    (scratch / "inputs" / "code" / "probe.py").write_text(textwrap.dedent(script))
    return SandboxSpec(
        command=(PYTHON, "probe.py"),
        cwd=scratch / "inputs" / "code",
        read_only=(scratch,),
        output=scratch / "outputs" / "out",
        work=scratch / "work",
        env={"AICERT_INPUTS": str(scratch / "inputs")},
    )


def _run(scratch: Path, script: str) -> tuple[int, dict[str, object], str]:
    spec = _spec(scratch, script)
    log = io.BytesIO()
    with tempfile.TemporaryFile() as out:
        status = run_confined(spec, out)  # type: ignore[arg-type]
        out.seek(0)
        log.write(out.read())
    report_path = spec.output / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return status, report, log.getvalue().decode(errors="replace")


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on the host's loopback that counts the connections it accepts."""
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
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()
        assert accepted == [], "a sandboxed command reached the host's listener"


def test_no_network(scratch: Path, host_listener: int) -> None:
    status, report, log = _run(
        scratch,
        f"""
        import json, os, socket
        report = {{}}
        try:
            socket.create_connection(("127.0.0.1", {host_listener}), timeout=2).close()
            report["host"] = "connected"
        except OSError as exc:
            report["host"] = exc.__class__.__name__
        with open("/proc/net/dev") as dev:
            report["interfaces"] = sorted(
                line.split(":")[0].strip() for line in dev.readlines()[2:]
            )
        with open("/proc/net/route") as routes:
            report["routes"] = len(routes.readlines()) - 1
        json.dump(report, open(os.environ["AICERT_OUTPUT"] + "/report.json", "w"))
        """,
    )
    assert status == 0, log
    assert report["host"] == "ConnectionRefusedError"  # the namespace's own, empty loopback
    assert report["interfaces"] == ["lo"]
    assert report["routes"] == 0  # no default route: no address outside is reachable


def test_inputs_read_only_output_writable_and_no_root(scratch: Path) -> None:
    status, report, log = _run(
        scratch,
        """
        import errno, json, os
        report = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
        inputs = os.environ["AICERT_INPUTS"]
        for name, path in [("input", inputs + "/data.txt"), ("code", "new.py"),
                           ("scratch", inputs + "/../planted"), ("etc", "/etc/planted")]:
            try:
                open(path, "a").write("x")
                report[name] = "written"
            except OSError as exc:
                report[name] = errno.errorcode[exc.errno]
        report["reads_input"] = open(inputs + "/data.txt").read()
        for line in open("/proc/self/status"):
            if line.startswith(("NoNewPrivs", "CapEff")):
                key, value = line.split(":")
                report[key] = value.strip()
        report["cwd"] = os.getcwd()
        report["env"] = sorted(os.environ)
        json.dump(report, open(os.environ["AICERT_OUTPUT"] + "/report.json", "w"))
        open(os.environ["HOME"] + "/cache", "w").write("home is writable")
        """,
    )
    assert status == 0, log
    assert report["uid"] == report["gid"] == SANDBOX_UID
    assert report["groups"] == []
    assert report["input"] == "EROFS"
    assert report["code"] == "EROFS"
    assert report["scratch"] == "EROFS"
    assert report["etc"] == "EACCES"
    assert report["reads_input"] == "data\n"
    assert report["NoNewPrivs"] == "1"
    assert report["CapEff"] == "0000000000000000"
    assert report["cwd"] == str(scratch / "inputs" / "code")
    assert "AICERT_OUTPUT" in report["env"]
    assert not (scratch / "inputs" / "data.txt").read_text().endswith("x")
    assert (scratch / "work" / "home" / "cache").exists()
    assert not (scratch / "planted").exists()


def test_exit_status_is_recorded(scratch: Path) -> None:
    status, _, _ = _run(scratch, "import sys; sys.exit(7)")
    assert status == 7


def test_signal_death_is_128_plus_signal(scratch: Path) -> None:
    status, _, _ = _run(scratch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert status == 128 + 9


def test_background_processes_die_with_the_command(scratch: Path) -> None:
    status, _, log = _run(
        scratch,
        """
        import os, subprocess
        out = os.environ["AICERT_OUTPUT"]
        subprocess.Popen(["/bin/sh", "-c", f"sleep 2; echo late > {out}/late.txt"])
        """,
    )
    assert status == 0, log
    import time

    time.sleep(3)
    assert not (scratch / "outputs" / "out" / "late.txt").exists()


def test_kill_stops_a_running_command(scratch: Path) -> None:
    spec = _spec(scratch, "import time; time.sleep(60)")
    with tempfile.TemporaryFile() as out:
        run = SandboxRun(spec, out)
        run.kill()
        assert run.wait() == 128 + 9


def test_command_line_shape(scratch: Path) -> None:
    argv = sandbox_argv(_spec(scratch, "pass"))
    assert argv[1:7] == ["--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
    assert argv[-3:] == ["--", PYTHON, "probe.py"]
