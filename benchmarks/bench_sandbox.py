"""Does the sandbox slow training down? The same CPU-bound command, direct and confined.

The command is a pure-Python training loop (a small linear model fitted by stochastic
gradient descent, ~``--seconds`` of CPU) run with the system interpreter, once directly
and once through :func:`aicert.agent.sandbox.run_confined` (unshare + network, mount and
PID namespaces, read-only inputs, unprivileged user). The two alternate ``--runs`` times;
the script prints every wall time, each median and the ratio of the medians
(target: at most 1.02). Needs root, as the agent has in the image::

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 7] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from aicert.agent.sandbox import SandboxSpec, run_confined

PYTHON = "/usr/bin/python3"

TRAIN = textwrap.dedent(
    """
    import os, random, sys, time
    steps = int(sys.argv[1])
    rng = random.Random(1)
    w = [0.0] * 16
    xs = [[rng.random() for _ in range(16)] for _ in range(256)]
    ys = [sum(x) * 0.5 for x in xs]
    for step in range(steps):
        x, y = xs[step % 256], ys[step % 256]
        err = sum(wi * xi for wi, xi in zip(w, x)) - y
        w = [wi - 0.01 * err * xi for wi, xi in zip(w, x)]
    out = os.environ.get("AICERT_OUTPUT", ".")
    with open(os.path.join(out, "weights.txt"), "w") as f:
        f.write(repr(w))
    """
)


def _calibrate(code: Path, seconds: float) -> int:
    """Steps that take about ``seconds`` when run directly."""
    steps = 20_000
    while True:
        start = time.perf_counter()
        subprocess.run([PYTHON, "train.py", str(steps)], cwd=code, check=True)
        took = time.perf_counter() - start
        if took > 0.5:
            return int(steps * seconds / took)
        steps *= 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_sandbox: needs root (the sandbox uses namespaces and drops privileges)")
    scratch = Path(tempfile.mkdtemp(prefix="aicert-bench-sandbox-", dir="/tmp"))
    try:
        os.chmod(scratch, 0o755)  # noqa: S103 - the sandbox user must reach it
        code = scratch / "inputs" / "code"
        code.mkdir(parents=True)
        (code / "train.py").write_text(TRAIN)
        direct_out = scratch / "direct"
        direct_out.mkdir()
        steps = _calibrate(code, args.seconds)
        print(f"command: {PYTHON} train.py {steps}  (~{args.seconds:.0f} s of pure-Python SGD)")
        direct: list[float] = []
        confined: list[float] = []
        for run in range(args.runs):
            start = time.perf_counter()
            subprocess.run(
                [PYTHON, "train.py", str(steps)],
                cwd=code,
                env={"PATH": "/usr/bin:/bin", "AICERT_OUTPUT": str(direct_out)},
                check=True,
            )
            direct.append(time.perf_counter() - start)
            spec = SandboxSpec(
                command=(PYTHON, "train.py", str(steps)),
                cwd=code,
                read_only=(scratch,),
                output=scratch / f"out-{run}",
                work=scratch / f"work-{run}",
            )
            with open(os.devnull, "wb") as log:
                start = time.perf_counter()
                status = run_confined(spec, log)
                confined.append(time.perf_counter() - start)
            if status != 0:
                sys.exit(f"bench_sandbox: the confined run exited with status {status}")
            print(f"run {run + 1}: direct {direct[-1]:.3f} s, sandboxed {confined[-1]:.3f} s")
        d, c = statistics.median(direct), statistics.median(confined)
        print(f"median direct {d:.3f} s, median sandboxed {c:.3f} s, ratio {c / d:.4f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
