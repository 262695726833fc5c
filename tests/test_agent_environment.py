"""OCI environments through the agent's API: a real agent on swtpm, a real registry, the
builder's client sending a job file's ``environment``; what is measured, what is refused."""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import RunningAgent, running_agent
from aicert.builder.agent_client import AgentClient, AgentRequestError, send_inputs
from aicert.builder.job_file import load_job_file
from aicert.verifier.logs.session_events import InputMeasured
from conftest import ProvisionedSwtpm
from oci_support import Registry, file, layer_tar, layout_archive, make_image, running_registry

pytestmark = pytest.mark.swtpm


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def live(provisioned_swtpm: ProvisionedSwtpm, registry: Registry) -> Iterator[RunningAgent]:
    with running_agent(
        provisioned_swtpm.tcti,
        provisioned_swtpm.ca,
        plain_http_registries=frozenset({registry.host}),
    ) as running:
        yield running


def _claimed(live: RunningAgent) -> AgentClient:
    client = live.client()
    client.attest()
    client.claim(secrets.token_hex(16))
    return client


def _job(tmp_path: Path, environment: str) -> Path:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.py").write_text("print('hi')\n")
    path = tmp_path / "job.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            command = ["python3", "train.py"]
            output = "model"
            [code]
            path = "train"
            [environment]
            {environment}
            """
        )
    )
    return path


def _environment_events(client: AgentClient) -> list[InputMeasured]:
    return [
        e
        for e in client.attest().events
        if isinstance(e, InputMeasured) and e.role == "environment"
    ]


def test_image_by_digest_is_pulled_and_measured(
    live: RunningAgent, registry: Registry, tmp_path: Path
) -> None:
    image = make_image([layer_tar([file("usr/bin/tool", b"#!/bin/sh\n", 0o755)])])
    reference = registry.push("team/trainer", image)
    client = _claimed(live)
    digests = send_inputs(client, load_job_file(_job(tmp_path, f'image = "{reference}"')))
    assert digests["environment"] == image.digest[7:]
    # Pulled over plain HTTP (the agent's flag names the registry): the source says so.
    purl = (
        f"pkg:oci/trainer@sha256:{image.digest[7:]}"
        f"?repository_url=http://{registry.host}/team/trainer"
    )
    assert _environment_events(client) == [
        InputMeasured("environment", "environment", image.digest[7:], purl)
    ]
    environment = live.agent.environment()
    assert environment is not None
    assert environment.config_digest == image.config_digest
    assert (environment.rootfs / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert environment.rootfs.is_relative_to(live.scratch / "inputs")
    notes = (live.scratch / "job.log").read_text()
    assert f"input environment: pulling {reference}: 1 layer, " in notes
    assert "input environment: layer 1/1 checked and unpacked" in notes


def test_archive_is_uploaded_and_measured(live: RunningAgent, tmp_path: Path) -> None:
    image = make_image([layer_tar([file("etc/os-release", b"ID=env\n")])])
    (tmp_path / "env.oci.tar").write_bytes(layout_archive(image))
    client = _claimed(live)
    send_inputs(client, load_job_file(_job(tmp_path, 'path = "env.oci.tar"')))
    [event] = _environment_events(client)
    assert (event.sha256, event.source) == (
        image.digest[7:],
        f"pkg:oci/environment@sha256:{image.digest[7:]}",
    )


def test_tampered_blob_is_refused_and_nothing_is_measured(
    live: RunningAgent, registry: Registry, tmp_path: Path
) -> None:
    image = make_image([layer_tar([file("a", b"x" * 5000)])])
    reference = registry.push("tampered", image)
    stored = registry.stored_blob(image.layer_digests[0])
    data = bytearray(stored.read_bytes())
    data[-20] ^= 0x55
    stored.write_bytes(bytes(data))
    client = _claimed(live)
    with pytest.raises(AgentRequestError) as refused:
        client.fetch_input("environment", "environment", image=reference)
    assert (refused.value.status, refused.value.code) == (422, "input-refused")
    assert "it was asked for" in str(refused.value)
    assert _environment_events(client) == []
    assert list((live.scratch / "incoming").iterdir()) == []
    # The name is free again for a good image.
    good = make_image([layer_tar([file("a", b"y")])])
    digest = client.fetch_input("environment", "environment", image=registry.push("good", good))
    assert digest == good.digest[7:]


def test_tag_role_and_format_mistakes_are_refused(live: RunningAgent, tmp_path: Path) -> None:
    client = _claimed(live)
    with pytest.raises(AgentRequestError, match="pulls are by digest only") as refused:
        client.fetch_input("environment", "environment", image="127.0.0.1:1/x:latest")
    assert refused.value.status == 422
    with pytest.raises(AgentRequestError, match="an OCI image is an input of role") as refused:
        client.fetch_input("code", "code", image=f"127.0.0.1:1/x@sha256:{'1' * 64}")
    assert refused.value.status == 400
    with pytest.raises(AgentRequestError, match="an environment is fetched by 'image'"):
        client.fetch_input(
            "environment", "environment", url="https://example.org/e.tar", sha256="0" * 64
        )
    archive = tmp_path / "env.oci.tar"
    archive.write_bytes(layout_archive(make_image([layer_tar([file("a")])])))
    with pytest.raises(AgentRequestError, match="only it, is uploaded as format=oci-archive"):
        client.upload_input("environment", archive, "environment")
    assert client.attest().events[-1].kind == "session-claim"


def test_a_job_names_a_local_plain_http_registry_itself(
    provisioned_swtpm: ProvisionedSwtpm, registry: Registry, tmp_path: Path
) -> None:
    """Without the agent's flag (the measured image has none), the job file's
    ``plain_http`` allows plain HTTP to a local address; the source records it."""
    image = make_image([layer_tar([file("etc/os-release", b"ID=plain\n")])])
    reference = registry.push("team/plain", image)
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca) as running:
        client = _claimed(running)
        with pytest.raises(AgentRequestError) as over_tls:
            client.fetch_input("environment", "environment", image=reference)
        assert "cannot reach the registry" in str(over_tls.value)  # it spoke TLS to HTTP
        job = _job(tmp_path, f'image = "{reference}"\nplain_http = true')
        digests = send_inputs(client, load_job_file(job))
        assert digests["environment"] == image.digest[7:]
        [event] = _environment_events(client)
        assert event.source.endswith(f"?repository_url=http://{registry.host}/team/plain")


def test_plain_http_to_a_public_registry_is_refused(live: RunningAgent) -> None:
    client = _claimed(live)
    with pytest.raises(AgentRequestError, match="plain HTTP is allowed only for a loopback"):
        client.fetch_input(
            "environment",
            "environment",
            image=f"registry.example.org/x@sha256:{'1' * 64}",
            plain_http=True,
        )
