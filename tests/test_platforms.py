"""The platform interface: run_on boots, runs the one job flow, copies result files, tears down.

The platform under test here boots nothing itself: its "VM" is the real agent on a
provisioned swtpm (as in test_job_runner), so what is checked is the flow around
``Platform.boot``, with every byte going through the real agent and verifier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import running_agent, write_toy_job
from aicert.builder.job_file import load_job_file
from aicert.builder.job_runner import CERTIFICATE_NAME, JobFailedError, run_on
from aicert.builder.platforms.base import (
    BootedImage,
    Leftover,
    PublishedImage,
    Say,
    Verification,
)
from aicert.builder.platforms.local.platform import LocalPlatform
from aicert.verifier.errors import InputError
from conftest import ProvisionedSwtpm


class AgentOnSwtpm:
    """A platform whose booted image is the harness agent; it records its teardown."""

    def __init__(self, provisioned: ProvisionedSwtpm, extra: Path) -> None:
        self.provisioned = provisioned
        self.extra = extra
        self.events: list[str] = []

    @property
    def name(self) -> str:
        return "agent-on-swtpm"

    @contextlib.contextmanager
    def boot(self, spec: str, *, say: Say) -> Iterator[BootedImage]:
        ca = self.provisioned.ca
        self.events.append(f"boot {spec}")
        try:
            with running_agent(self.provisioned.tcti, ca) as agent:
                yield BootedImage(
                    agent_url=agent.url,
                    verification=Verification((ca.root_certificate,), None, None),
                    agent_roots=(ca.root_certificate,),
                    up_timeout=30.0,
                    result_files=(("platform-note.txt", self.extra),),
                )
        finally:
            self.events.append("torn down")

    def publish(self, spec: None, *, say: Say) -> PublishedImage:
        raise NotImplementedError

    def leftovers(self, scope: None) -> tuple[Leftover, ...]:
        raise NotImplementedError

    def destroy(self, scope: None, *, say: Say) -> tuple[str, ...]:
        raise NotImplementedError


@pytest.mark.swtpm
def test_run_on_runs_the_job_and_copies_the_platform_files(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("root of this platform\n")
    platform = AgentOnSwtpm(provisioned_swtpm, note)
    job = load_job_file(write_toy_job(tmp_path))
    said: list[str] = []
    outcome = run_on(
        platform, "vm-1", job, tmp_path / "out", say=said.append, log_sink=lambda _c: None
    )
    assert platform.events == ["boot vm-1", "torn down"]
    assert outcome.report.ok
    assert (outcome.output_dir / CERTIFICATE_NAME).is_file()
    assert (outcome.output_dir / "platform-note.txt").read_text() == "root of this platform\n"
    assert any(line.startswith("agent attested") for line in said)


@pytest.mark.swtpm
def test_run_on_tears_down_and_leaves_nothing_when_the_job_fails(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("x")
    platform = AgentOnSwtpm(provisioned_swtpm, note)
    job = load_job_file(write_toy_job(tmp_path, exit_status=3))
    with pytest.raises(JobFailedError, match="no certificate"):
        run_on(platform, "vm-2", job, tmp_path / "out", say=lambda _l: None)
    assert platform.events == ["boot vm-2", "torn down"]
    assert not (tmp_path / "out").exists()


def test_the_local_platform_publishes_a_complete_image_directory_only(tmp_path: Path) -> None:
    platform = LocalPlatform()
    said: list[str] = []
    with pytest.raises(InputError, match=r"disk\.raw is missing: build the image first"):
        platform.publish(tmp_path, say=said.append)
    (tmp_path / "disk.raw").write_bytes(b"\0" * 512)
    with pytest.raises(InputError, match=r"recipe\.json is missing"):
        platform.publish(tmp_path, say=said.append)
    (tmp_path / "recipe.json").write_text("{}")
    published = platform.publish(tmp_path, say=said.append)
    assert published == PublishedImage(str(tmp_path), already_published=True)
    assert said == [f"the local platform boots {tmp_path / 'disk.raw'} where it is"]


def test_the_local_platform_has_nothing_to_destroy() -> None:
    said: list[str] = []
    assert LocalPlatform().leftovers(None) == ()
    assert LocalPlatform().destroy(None, say=said.append) == ()
    assert len(said) == 1
