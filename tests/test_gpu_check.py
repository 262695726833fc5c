"""scripts/gpu-check.sh on its CPU path: the real sandbox, tree digest and GPU inventory."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "gpu-check.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
def test_the_cpu_path_measures_sandbox_overhead_and_hashing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--seconds", "1", "--runs", "1"],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio" in proc.stdout
    assert "openssl sha256, one core" in proc.stdout
    result = json.loads((out / "gpu-check.json").read_text())
    training = result["training"]
    assert training["device"] == "cpu"
    assert training["ratio"] == pytest.approx(training["sandbox_s"][0] / training["bare_s"][0])
    assert result["tree_digest"]["bytes"] == 64 * 1024 * 1024
    assert result["tree_digest"]["tree_gib_s"] > 0
    # This machine has no NVIDIA driver: the inventory is empty, cleanly.
    assert result["gpus"] == []
    assert "GPUs: none" in proc.stdout
