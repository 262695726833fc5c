"""System test: the built image's own crun, tini and agent code run a confined container.

The image's erofs root (from disk.raw) is mounted read-only in a private mount namespace
and entered with chroot, with the kernel file systems the booted image would have (a
cgroup2-only /sys/fs/cgroup among them); its Python runs aicert.agent.container on a
busybox root. No VM boots: this checks the packages and the code the image ships.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from aicert.builder.reproducibility import read_gpt

from aicert.process import run

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting the image's root needs root"),
]

PROBE = textwrap.dedent(
    """
    import json, subprocess, tempfile
    from pathlib import Path
    from aicert.agent.container import ContainerJob, run_container
    from aicert.agent.container_spec import EnvironmentRoot
    from aicert.agent.sandbox import SandboxSpec

    scratch = Path(tempfile.mkdtemp(dir="/tmp"))
    for d in (scratch, scratch / "inputs", scratch / "inputs/code", scratch / "outputs"):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    (scratch / "inputs/code/p.sh").write_text(
        "r=$AICERT_OUTPUT/r; cat /etc/marker > $r; id -u >> $r;"
        " grep CapEff /proc/self/status | tr -d ' \\t' >> $r;"
        " (echo x > $AICERT_INPUTS/code/w) 2>/dev/null || echo read-only >> $r;"
        " sleep 100 & kill -TERM $$"
    )
    spec = SandboxSpec(
        command=("/bin/sh", "p.sh"), cwd=scratch / "inputs/code", read_only=(scratch,),
        output=scratch / "outputs/o", work=scratch / "work",
        env={"AICERT_INPUTS": str(scratch / "inputs")},
    )
    with open(scratch / "log", "wb") as log:
        status = run_container(ContainerJob(spec, EnvironmentRoot(rootfs=Path("/tmp/env"))), log)
    print(json.dumps({
        "status": status,
        "report": (scratch / "outputs/o/r").read_text().split(),
        "crun": subprocess.run(["crun", "--version"], capture_output=True, text=True)
        .stdout.split()[2],
    }))
    """
)


def test_the_image_runs_a_confined_container(built_image: Path, tmp_path: Path) -> None:
    root = next(p for p in read_gpt(built_image / "disk.raw") if p["name"].startswith("root-"))
    busybox = shutil.which("busybox")
    assert busybox is not None, "install busybox-static (scripts/install-host-deps.sh)"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "probe.py").write_text(PROBE)
    script = f"""
        set -e
        mount -t erofs -o ro,loop,offset={root["start"]},sizelimit={root["size"]} \\
            {built_image / "disk.raw"} {mnt}
        mount -t tmpfs tmpfs {mnt}/tmp
        mount -t tmpfs tmpfs {mnt}/run
        mount -t proc proc {mnt}/proc
        mount --rbind /dev {mnt}/dev
        mount -t sysfs sysfs {mnt}/sys
        mount -t cgroup2 cgroup2 {mnt}/sys/fs/cgroup
        mkdir -p {mnt}/tmp/env/bin {mnt}/tmp/env/etc
        cp {busybox} {mnt}/tmp/env/bin/busybox
        for applet in sh cat id grep tr sleep; do ln -s busybox {mnt}/tmp/env/bin/$applet; done
        echo the-environment > {mnt}/tmp/env/etc/marker
        cp {tmp_path / "probe.py"} {mnt}/tmp/probe.py
        exec chroot {mnt} /usr/bin/python3 -I /tmp/probe.py
    """
    out = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]).stdout
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["status"] == 143  # the command's SIGTERM, through tini
    assert result["report"] == ["the-environment", "65534", "CapEff:0000000000000000", "read-only"]
    assert result["crun"].split(".")[0] == "1"
