"""A booted VM runs a torchrun job, two processes sharing one model over gloo, in a PyTorch
environment, to a certificate that verifies.

The job is examples/torchrun/job.toml as shipped; its environment,
examples/torchrun/environment.toml (Debian's python3-torch, CPU), is built here with
``aicert-build environment``'s code into .cache/torchrun-environment/ and rebuilt only when
its definition, its lock or the layer writer changes (a stamp of their SHA-256, as
scripts/demo.sh keeps the demo's). It is the largest input any test sends, so the test
has a marker of its own, ``torch``: ``pytest -m 'system and not torch'`` leaves it out;
``make test`` and CI run it. Its figures are in docs/environments.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from aicert.builder.environment import build_environment, load_definition
from aicert.builder.job_file import load_job_file
from aicert.builder.job_runner import run_on
from aicert.builder.platforms.local.platform import LocalPlatform
from aicert.builder.platforms.local.run import LocalRun

pytestmark = [
    pytest.mark.system,
    pytest.mark.torch,
    pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap --mode=root needs root"),
]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "torchrun"
ARCHIVE = REPO / ".cache" / "torchrun-environment" / "env.oci.tar"
STAMPED = (
    EXAMPLE / "environment.toml",
    EXAMPLE / "environment.lock.json",
    REPO / "builder" / "environment.py",
    REPO / "builder" / "oci_layout.py",
)


@pytest.fixture(scope="module")
def torch_environment() -> Path:
    """The example's environment archive, built unless the one on disk is current."""
    stamp = hashlib.sha256(b"".join(path.read_bytes() for path in STAMPED)).hexdigest()
    stamp_file = ARCHIVE.with_name("stamp")
    if ARCHIVE.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return ARCHIVE
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    build_environment(load_definition(EXAMPLE / "environment.toml"), ARCHIVE)
    stamp_file.write_text(stamp)
    return ARCHIVE


def test_torchrun_with_two_processes_in_a_booted_vm(
    built_image: Path, torch_environment: Path, tmp_path: Path
) -> None:
    job = load_job_file(EXAMPLE / "job.toml")
    assert job.command[2:4] == ("--standalone", "--nproc-per-node=2")
    started = time.monotonic()
    said: list[str] = []
    log = bytearray()

    def say(line: str) -> None:
        said.append(f"{time.monotonic() - started:7.1f} s  {line}")

    spec = LocalRun(
        image=built_image,
        output=tmp_path / "out",
        ca_dir=tmp_path / "ca",
        # The archive (361 MiB) and its unpacked root (1.1 GiB) share the scratch disk.
        scratch_bytes=4 * 1024**3,
    )
    outcome = run_on(LocalPlatform(), spec, job, spec.output, say=say, log_sink=log.extend)
    text = log.decode(errors="replace")
    print("\n".join(said))  # the phases' times, for docs/environments.md (pytest -s)
    assert outcome.report.ok, f"{outcome.report.error}\n{text}"
    # Rank 0 alone wrote the weights.
    assert sorted(p.name for p in outcome.weights.iterdir()) == ["model.pt", "training.json"]
    report = json.loads((outcome.weights / "training.json").read_text())
    assert report["backend"] == "gloo"
    assert report["world_size"] == 2
    assert report["master_addr"] == "aicert"  # the rendezvous resolved the hostname
    assert report["samples_per_rank"] == [719, 719]  # each rank had half of the 1,437 digits
    assert report["replicas_identical"] is True  # DDP's all-reduce kept them in step
    assert report["cuda_devices"] == 0
    assert report["dev_shm_bytes"] >= 512 * 1024**2  # half the VM's memory, not Docker's 64 MiB
    curve = report["epochs"]
    assert len(curve) == 5
    assert curve[-1]["loss"] < curve[0]["loss"]
    prov = outcome.report.provenance
    assert prov is not None
    assert prov.root == "environment"
    [environment] = [d for d in prov.dependencies if d.role == "environment"]
    index = json.loads(_member(torch_environment, "index.json"))
    assert environment.sha256 == index["manifests"][0]["digest"].removeprefix("sha256:")


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()
