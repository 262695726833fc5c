"""A booted VM pulls its training environment by digest and runs the job in it.

Debian's docker-registry listens on the host's 127.0.0.1; the VM reaches it at
10.0.2.101:5000 through QEMU's user network (``guestfwd``, relayed per connection by
aicert.builder.platforms.local.guest_relay; the network stays ``restrict=on``). The job
file names the image by digest and asks for plain HTTP, which the agent allows for that
private address; the certificate must verify with the environment listed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from aicert.builder.job_file import load_job_file
from aicert.builder.job_runner import run_on
from aicert.builder.platforms.local.guest_relay import (
    REGISTRY_ADDRESS,
    REGISTRY_PORT,
    registry_forward,
)
from aicert.builder.platforms.local.platform import LocalPlatform
from aicert.builder.platforms.local.run import LocalRun
from container_host import busybox_layer_entries
from oci_support import Registry, layer_tar, make_image, running_registry

pytestmark = pytest.mark.system

TRAIN = """\
set -e
cat /etc/marker > "$AICERT_OUTPUT/root.txt"
ls /sys/class/net > "$AICERT_OUTPUT/net.txt"
sha256sum < "$AICERT_INPUTS/numbers" | cut -c1-64 > "$AICERT_OUTPUT/weights.bin"
echo "trained in $(cat /etc/marker)"
"""


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path / "registry") as running:
        yield running


def test_a_booted_vm_pulls_by_digest_and_runs_the_job_in_it(
    built_image: Path, registry: Registry, tmp_path: Path
) -> None:
    image = make_image([layer_tar(busybox_layer_entries())], config={"Env": ["PATH=/bin"]})
    registry.push("team/busybox", image)
    reference = f"{REGISTRY_ADDRESS}:{REGISTRY_PORT}/team/busybox@{image.digest}"
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "code" / "train.sh").write_text(TRAIN)
    (project / "numbers.txt").write_text("1 2 3\n")
    (project / "job.toml").write_text(
        textwrap.dedent(
            f"""
            command = ["sh", "train.sh"]
            output = "model"
            [environment]
            image = "{reference}"
            plain_http = true
            [code]
            path = "code"
            [[data]]
            name = "numbers"
            path = "numbers.txt"
            """
        )
    )
    said: list[str] = []
    log = bytearray()
    spec = LocalRun(
        image=built_image,
        output=tmp_path / "out",
        ca_dir=tmp_path / "ca",
        scratch_bytes=2 * 1024**3,
        guest_forwards=(registry_forward(registry.port),),
    )
    outcome = run_on(
        LocalPlatform(),
        spec,
        load_job_file(project / "job.toml"),
        spec.output,
        say=said.append,
        log_sink=log.extend,
    )
    text = log.decode(errors="replace")
    assert outcome.report.ok, f"{outcome.report.error}\n{text}"
    assert f"input environment: pulling {reference}: 1 layer" in text
    assert "trained in the environment's root" in text
    model = outcome.weights
    assert (model / "root.txt").read_text() == "the environment's root\n"
    assert (model / "net.txt").read_text() == "lo\n"
    prov = outcome.report.provenance
    assert prov is not None
    assert prov.root == "environment"
    [environment] = [d for d in prov.dependencies if d.role == "environment"]
    assert environment.sha256 == image.digest.removeprefix("sha256:")
    assert environment.source == (
        f"pkg:oci/busybox@{image.digest}"
        f"?repository_url=http://{REGISTRY_ADDRESS}:{REGISTRY_PORT}/team/busybox"
    )
