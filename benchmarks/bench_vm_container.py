"""In the booted VM: the same command in the demo's environment (crun) and in the VM's own root.

One job on the local platform (QEMU + swtpm, as ``make demo``): its training runs
``python3 bench.py`` in the demo's numpy + scikit-learn environment (uploaded from
``--environment``), and its one evaluation runs the same ``bench.py`` in the image's own
root, right after, in the same VM. bench.py times ``--runs`` rounds of a pure-Python
loop (both roots have Debian trixie's python3) and writes the wall times; the certified
outputs carry them back. It prints each median and the ratio (goal: at most 1.02), and
the phases of the job as the client saw them (boot, upload and unpack of the
environment, the training, the evaluation). Needs a built image (``make demo`` leaves one
in ``out/image``)::

    .venv/bin/python benchmarks/bench_vm_container.py [--image out/image] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from aicert.builder.job_file import load_job_file
from aicert.builder.job_runner import run_on
from aicert.builder.platforms.local.platform import LocalPlatform
from aicert.builder.platforms.local.run import LocalRun

REPO = Path(__file__).resolve().parents[1]
BENCH = textwrap.dedent(
    """
    import json, os, sys, time
    runs, rounds = int(sys.argv[1]), int(sys.argv[2])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        total = 0
        for i in range(rounds):
            total = (total * 31 + i * i) % 1000003
        times.append(time.perf_counter() - start)
    # An evaluation's results are numbers only: one metric per run.
    doc = {f"run_{i}": t for i, t in enumerate(times)}
    path = os.environ.get("AICERT_RESULTS") or os.path.join(os.environ["AICERT_OUTPUT"], "t.json")
    with open(path, "w") as f:
        json.dump({"median_s": sorted(times)[len(times) // 2], "total": total, **doc}, f)
    print("bench:", " ".join(f"{t:.3f}" for t in times), flush=True)
    """
)


def _job(project: Path, environment: Path, runs: int, rounds: int) -> Path:
    (project / "code").mkdir(parents=True)
    (project / "code" / "bench.py").write_text(BENCH)
    argv = f'["python3", "bench.py", "{runs}", "{rounds}"]'
    job = project / "job.toml"
    job.write_text(
        f'command = {argv}\noutput = "timing"\n'
        f'[environment]\npath = "{environment.resolve()}"\n'
        '[code]\npath = "code"\n'
        f'[[evaluation]]\nname = "own-root"\ncommand = {argv}\nresults = "t.json"\n'
        '[evaluation.code]\npath = "code"\n'
    )
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "out" / "image")
    parser.add_argument(
        "--environment",
        type=Path,
        default=REPO / ".cache" / "demo-environment" / "env.oci.tar",
        help="the OCI archive to run in (scripts/demo.sh builds this one)",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2_000_000, help="loop size per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aicert-bench-vm-") as tmp:
        work = Path(tmp)
        job = load_job_file(_job(work / "project", args.environment, args.runs, args.rounds))
        start = time.monotonic()

        def say(line: str) -> None:
            # Each step with the time the client saw it: boot, upload and unpack, runs.
            print(f"[{time.monotonic() - start:6.1f} s] {line}", flush=True)

        def log(data: bytes) -> None:
            for line in data.decode(errors="replace").splitlines():
                say(f"  | {line}")

        spec = LocalRun(image=args.image, output=work / "out", ca_dir=work / "ca")
        outcome = run_on(
            LocalPlatform(),
            spec,
            job,
            spec.output,
            say=say,
            log_sink=log,
        )
        if not outcome.report.ok:
            raise SystemExit(f"bench_vm_container: the job did not verify: {outcome.report.error}")
        inside = json.loads((outcome.weights / "t.json").read_text())
        own = json.loads((outcome.output_dir / "evaluations" / "own-root" / "t.json").read_text())
    inside_times = [inside[f"run_{i}"] for i in range(args.runs)]
    own_times = [own[f"run_{i}"] for i in range(args.runs)]
    print(f"in the environment (crun): {' '.join(f'{t:.3f}' for t in inside_times)} s")
    print(f"in the VM's own root:      {' '.join(f'{t:.3f}' for t in own_times)} s")
    ratio = statistics.median(inside_times) / statistics.median(own_times)
    print(f"ratio of the medians, environment / own root: {ratio:.4f} (goal <= 1.02)")


if __name__ == "__main__":
    main()
