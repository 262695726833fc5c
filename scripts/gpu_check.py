"""The body of scripts/gpu-check.sh (run it through that script, which sets up imports)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path

from aicert.agent.gpu_inventory import read_gpus
from aicert.agent.sandbox import SandboxSpec, remove_work, run_confined
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import AicertError
from aicert.verifier.gpu.record import GpuRecord

from aicert.process import run

MiB = 1024 * 1024
GiB = 1024 * MiB

TRAIN = textwrap.dedent(
    """
    import os, sys, time
    steps, device = int(sys.argv[1]), sys.argv[2]
    out = os.environ.get("AICERT_OUTPUT", ".")
    if device == "cuda":
        import torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4096, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 4096)
        ).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(2048, 4096, device="cuda")
        y = torch.randn(2048, 4096, device="cuda")
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        torch.save(model.state_dict(), os.path.join(out, "model.pt"))
    else:
        import random
        rng = random.Random(1)
        w = [0.0] * 16
        xs = [[rng.random() for _ in range(16)] for _ in range(256)]
        ys = [sum(x) * 0.5 for x in xs]
        for step in range(steps):
            x, t = xs[step % 256], ys[step % 256]
            err = sum(wi * xi for wi, xi in zip(w, x)) - t
            w = [wi - 0.01 * err * xi for wi, xi in zip(w, x)]
        with open(os.path.join(out, "weights.txt"), "w") as f:
            f.write(repr(w))
    """
)


def _cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415 - optional, only on a GPU machine
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _bare(code: Path, steps: int, device: str, out: Path) -> float:
    out.mkdir()
    start = time.perf_counter()
    run([sys.executable, "train.py", str(steps), device], cwd=code, env={"AICERT_OUTPUT": str(out)})
    took = time.perf_counter() - start
    shutil.rmtree(out)
    return took


def _confined(code: Path, steps: int, device: str, scratch: Path, i: int) -> float:
    spec = SandboxSpec(
        command=(sys.executable, "train.py", str(steps), device),
        cwd=code,
        read_only=(code,),
        output=scratch / f"out-{i}",
        work=scratch / f"work-{i}",
    )
    with open(scratch / f"log-{i}", "wb") as log:
        start = time.perf_counter()
        status = run_confined(spec, log)
        took = time.perf_counter() - start
    if status != 0:
        tail = (scratch / f"log-{i}").read_text(errors="replace")[-2000:]
        raise SystemExit(f"gpu-check: the confined training exited {status}:\n{tail}")
    remove_work(spec)
    shutil.rmtree(spec.output)
    return took


def training(workdir: Path, device: str, seconds: float, runs: int) -> dict[str, object]:
    code = workdir / "code"
    code.mkdir(mode=0o755)
    (code / "train.py").write_text(TRAIN)
    steps = 20 if device == "cuda" else 20_000
    while True:  # calibrate to about `seconds` of bare training
        took = _bare(code, steps, device, workdir / "calibrate")
        if took > seconds / 4:
            steps = max(1, int(steps * seconds / took))
            break
        steps *= 4
    print(f"training: {device}, {steps} steps (~{seconds:.0f} s), {runs} runs each, alternating")
    bare, confined = [], []
    for i in range(runs):
        bare.append(_bare(code, steps, device, workdir / f"bare-{i}"))
        confined.append(_confined(code, steps, device, workdir, i))
        print(f"  run {i + 1}: bare {bare[-1]:.2f} s, sandbox {confined[-1]:.2f} s")
    ratio = statistics.median(confined) / statistics.median(bare)
    print(
        f"  median bare {statistics.median(bare):.2f} s, sandbox "
        f"{statistics.median(confined):.2f} s, ratio {ratio:.3f} (goal <= 1.02)"
    )
    return {"device": device, "steps": steps, "bare_s": bare, "sandbox_s": confined, "ratio": ratio}


def hashing(workdir: Path, total: int, files: int) -> dict[str, object]:
    weights = workdir / "weights"
    weights.mkdir()
    size = total // files
    block = os.urandom(64 * MiB)
    print(f"tree digest: writing {files} files of {size / GiB:.2f} GiB ...", flush=True)
    for i in range(files):
        with open(weights / f"shard-{i:03d}.safetensors", "wb") as f:
            left = size
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
    paths = sorted(weights.iterdir())
    hash_tree(weights)  # warm the page cache for both contenders alike
    start = time.perf_counter()
    manifest = hash_tree(weights)
    tree_s = time.perf_counter() - start
    start = time.perf_counter()
    for p in paths:
        run(["openssl", "sha256", str(p)])
    openssl_s = time.perf_counter() - start
    done = size * files
    cores = os.cpu_count() or 1
    print(
        f"  aicert tree digest, {cores} cores: {done / GiB / tree_s:.2f} GiB/s "
        f"({manifest.digest[:16]}...)"
    )
    print(f"  openssl sha256, one core:        {done / GiB / openssl_s:.2f} GiB/s")
    print(f"  speed-up {openssl_s / tree_s:.1f}x")
    shutil.rmtree(weights)
    return {
        "bytes": done,
        "files": files,
        "cores": cores,
        "tree_s": tree_s,
        "openssl_s": openssl_s,
        "tree_gib_s": done / GiB / tree_s,
        "openssl_gib_s": done / GiB / openssl_s,
    }


def gpus(out: Path | None) -> list[dict[str, object]]:
    if out is not None and shutil.which("nvidia-smi"):
        (out / "nvidia-smi-q-x.xml").write_bytes(run(["nvidia-smi", "-q", "-x"]).stdout)
    try:
        found = read_gpus()
    except AicertError as exc:
        print(f"GPUs: nvidia-smi's XML is refused: {exc.message}")
        return [{"error": exc.message}]
    records = [
        GpuRecord(g.model, g.uuid, g.driver_version, g.vbios_version, g.cc_mode).to_json()
        for g in found
    ]
    if not records:
        print("GPUs: none (no nvidia-smi, or it lists none): the statement records no GPU")
        return []
    print("GPUs as the statement would record them (aicert_gpus):")
    print(textwrap.indent(json.dumps(records, indent=2), "  "))
    if any(g.cc_mode != "off" for g in found):
        print("  (a GPU is in CC mode: the agent would add its attestation evidence)")
    return list(records)


def main() -> None:
    parser = argparse.ArgumentParser(description="aicert GPU device check")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="CPU path, small sizes")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--hash-gib", type=float, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("gpu-check: needs root (the sandbox uses namespaces and drops privileges)")
    cuda = not args.cpu and _cuda_available()
    if not args.cpu and not cuda:
        print("gpu-check: no CUDA PyTorch here: running the CPU path")
    small = not cuda
    seconds = args.seconds or (2.0 if small else 20.0)
    runs = args.runs or (2 if small else 3)
    hash_bytes = int((args.hash_gib or (0.0625 if small else 10.0)) * GiB)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    started = time.perf_counter()
    result = {
        "gpus": gpus(out),
        "training": training(args.workdir, "cuda" if cuda else "cpu", seconds, runs),
        "tree_digest": hashing(args.workdir, hash_bytes, 4 if small else 10),
    }
    result["wall_s"] = time.perf_counter() - started
    print(f"gpu-check: done in {result['wall_s']:.0f} s")
    if out is not None:
        (out / "gpu-check.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
