"""Does running in an environment slow training down? The same command, sandboxed and in crun.

The command is bench_sandbox.py's pure-Python training loop (~``--seconds`` of CPU). It
runs alternately ``--runs`` times in today's sandbox (:func:`aicert.agent.sandbox.run_confined`,
the host's own root and interpreter) and through crun
(:func:`aicert.agent.container.run_container`) in an environment whose root is a Debian
of the host's own release with python3 (mmdebstrap; kept in ``--cache`` between runs),
so both run the same interpreter build and only the confinement differs. It prints every
wall time, each median and the ratio of the medians (goal: at most 1.02), and the start-up
cost of each (``python3 -c pass``, median of ``--runs``). Needs root, crun, tini and
mmdebstrap::

    .venv/bin/python benchmarks/bench_container.py [--runs 7] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aicert.agent.container import ContainerJob, run_container
from aicert.agent.container_spec import EnvironmentRoot
from aicert.agent.sandbox import SandboxSpec, run_confined
from bench_sandbox import PYTHON, TRAIN, _calibrate

from aicert.process import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from container_host import unified_cgroups

DEFAULT_CACHE = Path("/var/tmp/aicert-bench-container")


def _release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    sys.exit("bench_container: cannot tell the host's Debian release")


def environment_root(cache: Path) -> Path:
    """A Debian root of the host's release with python3, built once into ``cache``."""
    root = cache / f"{_release()}-python3"
    if not (root / "usr/bin/python3").exists():
        shutil.rmtree(root, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        print(f"building {root} with mmdebstrap (once)", file=sys.stderr)
        run(
            ["mmdebstrap", "--variant=essential", "--include=python3", _release(), root],
            env={"SOURCE_DATE_EPOCH": "1735689600"},
        )
    return root


def _median_of(runs: int, once: Callable[[int], float]) -> tuple[float, list[float]]:
    times = [once(i) for i in range(runs)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_container: needs root (namespaces, crun)")
    unified_cgroups()
    rootfs = environment_root(args.cache)
    scratch = Path(tempfile.mkdtemp(prefix="aicert-bench-container-", dir="/tmp"))
    try:
        os.chmod(scratch, 0o755)  # noqa: S103 - the unprivileged user must reach it
        code = scratch / "inputs" / "code"
        code.mkdir(parents=True)
        (code / "train.py").write_text(TRAIN)
        steps = _calibrate(code, args.seconds)
        host_python = run([PYTHON, "--version"]).stdout.decode().strip()
        env_python = run(["chroot", rootfs, "python3", "--version"]).stdout.decode().strip()
        print(f"command: python3 train.py {steps}  (~{args.seconds:.0f} s of pure-Python SGD)")
        print(f"sandbox: host {host_python}; container: {rootfs} {env_python}")
        counter = iter(range(10_000))

        def spec(command: tuple[str, ...]) -> SandboxSpec:
            n = next(counter)
            return SandboxSpec(
                command=command,
                cwd=code,
                read_only=(scratch,),
                output=scratch / f"out-{n}",
                work=scratch / f"work-{n}",
                env={"AICERT_INPUTS": str(scratch / "inputs")},
            )

        def timed(start: Callable[[], int]) -> float:
            began = time.perf_counter()
            status = start()
            took = time.perf_counter() - began
            if status != 0:
                sys.exit(f"bench_container: a run exited with status {status}")
            return took

        def sandboxed(command: tuple[str, ...]) -> float:
            with open(os.devnull, "wb") as log:
                return timed(lambda: run_confined(spec((PYTHON, *command[1:])), log))

        def contained(command: tuple[str, ...]) -> float:
            job = ContainerJob(spec(command), EnvironmentRoot(rootfs=rootfs))
            with open(os.devnull, "wb") as log:
                return timed(lambda: run_container(job, log))

        train = ("python3", "train.py", str(steps))
        plain: list[float] = []
        boxed: list[float] = []
        for i in range(args.runs):
            plain.append(sandboxed(train))
            boxed.append(contained(train))
            print(f"run {i + 1}: sandbox {plain[-1]:.3f} s, container {boxed[-1]:.3f} s")
        start_plain, _ = _median_of(args.runs, lambda _: sandboxed(("python3", "-c", "pass")))
        start_boxed, _ = _median_of(args.runs, lambda _: contained(("python3", "-c", "pass")))
        p, b = statistics.median(plain), statistics.median(boxed)
        print(f"median sandbox {p:.3f} s, median container {b:.3f} s, ratio {b / p:.4f}")
        print(
            f"start-up (python3 -c pass): sandbox {start_plain * 1000:.0f} ms, "
            f"container {start_boxed * 1000:.0f} ms"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
