"""``run --platform gcp``: the real Compute Engine client against the local fake
(tests/gcp_fake.py), and a real agent on a swtpm provisioned the GCE way standing in for
the Shielded VM's vTPM (the fake gives the VM 127.0.0.1).

The swtpm holds no persistent AK, only GCE's AK templates and certificates in NV: the
agent creates its ECC AK from the template, as on GCE. The local CA stands in for
Google's EK/AK CA, so its root is the extra trust root.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_harness import running_agent, write_toy_job
from aicert.agent.tpm import GCE_AK_ECC, AgentTpm
from aicert.builder.agent_client import AgentRequestError
from aicert.builder.cli import main as build_main
from aicert.builder.job_file import JobFile, load_job_file
from aicert.builder.job_runner import CERTIFICATE_NAME, JobFailedError, run_on
from aicert.builder.platforms.gcp.cli import DEFAULT_GCP_SCRATCH_GIB
from aicert.builder.platforms.gcp.clients import GcpClients, connect
from aicert.builder.platforms.gcp.errors import CloudTransientError, RetryPolicy
from aicert.builder.platforms.gcp.platform import GcpPlatform
from aicert.builder.platforms.gcp.run import DEFAULT_SCRATCH_GIB, GcpRun
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.gce_vtpm import provision_like_gce
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.boot.uki import BOOT_PCRS
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import CloudError, InputError
from certgen import recipe_outputs
from click.testing import CliRunner
from gcp_fake import FakeGcp, serving
from google.auth.credentials import AnonymousCredentials
from tpm_replay import OVMF_LOG, replay_log_into_tpm

PROJECT = "aicert-test"
ZONE = "europe-west4-a"
CALLER = "52.174.10.20"
VM = "aicert-run-test"
IMAGE = "aicert-0123456789abcdef"
NO_WAIT = RetryPolicy(attempts=3, first=0.0, longest=0.0, sleep=lambda _s: None)


@pytest.fixture
def fake() -> Iterator[FakeGcp]:
    with serving() as state:
        state.images[IMAGE] = {"name": IMAGE, "status": "READY", "labels": {}}
        yield state


@pytest.fixture
def clients(fake: FakeGcp) -> GcpClients:
    return connect(
        PROJECT,
        endpoint=fake.url,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        retry=NO_WAIT,
        poll_interval=0.01,
    )


def _recipe_for(tcti: str, path: Path) -> Path:
    """A recipe.json predicting the swtpm's boot PCRs (its firmware log replayed)."""
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        pcrs = tpm.read_pcrs(pcrs=BOOT_PCRS)
    path.write_text(
        json.dumps(
            {
                "inputs": {"profile": "gcp"},
                "outputs": recipe_outputs(),
                "expected_pcrs": {"pcrs": {str(n): v.hex() for n, v in pcrs.items()}},
            }
        )
    )
    return path


@pytest.fixture
def agent_on_gce_swtpm(running_swtpm: Swtpm, local_ca: LocalCa, tmp_path: Path) -> Iterator[int]:
    provision_like_gce(running_swtpm.tcti, local_ca, "gce-test-vm")
    with AgentTpm(running_swtpm.tcti) as tpm:
        assert tpm.ak_source() == GCE_AK_ECC
    recipe = _recipe_for(running_swtpm.tcti, tmp_path / "recipe.json")
    assert recipe.is_file()
    with running_agent(running_swtpm.tcti, local_ca, replay=False) as agent:
        yield agent.server.port


def _spec(tmp_path: Path, port: int, ca: LocalCa, **kw: object) -> GcpRun:
    args: dict[str, object] = {
        "zone": ZONE,
        "image": f"projects/{PROJECT}/global/images/{IMAGE}",
        "output": tmp_path / "out",
        "recipe": tmp_path / "recipe.json",
        "caller_ip": CALLER,
        "agent_port": port,
        "boot_timeout": 10.0,
        "trust_roots": (ca.root_certificate,),
    }
    args.update(kw)
    return GcpRun(**args)  # type: ignore[arg-type]


def _plain_recipe(tmp_path: Path) -> None:
    """A recipe for runs that never reach the agent."""
    pcrs = {str(n): "00" * 32 for n in BOOT_PCRS}
    (tmp_path / "recipe.json").write_text(
        json.dumps({"inputs": {}, "outputs": recipe_outputs(), "expected_pcrs": {"pcrs": pcrs}})
    )


def _job(tmp_path: Path, exit_status: int = 0) -> JobFile:
    return load_job_file(write_toy_job(tmp_path, exit_status))


@pytest.mark.swtpm
def test_a_job_runs_on_a_shielded_vm_and_everything_is_deleted(
    fake: FakeGcp, clients: GcpClients, agent_on_gce_swtpm: int, local_ca: LocalCa, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, agent_on_gce_swtpm, local_ca)
    during: list[dict[str, list[str]]] = []

    def say(line: str) -> None:
        if line.startswith("agent attested"):
            during.append(fake.leftovers())

    outcome = run_on(
        GcpPlatform(clients, vm_names=lambda: VM),
        spec,
        _job(tmp_path),
        spec.output,
        say=say,
        log_sink=lambda _c: None,
    )

    (instance,) = fake.bodies[f"instances/{VM}"]
    assert instance["shieldedInstanceConfig"] == {
        "enableSecureBoot": False,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }
    assert instance["networkInterfaces"][0]["nicType"] == "GVNIC"
    assert instance["tags"] == {"items": [VM]}
    (rule,) = fake.bodies[f"firewalls/{VM}"]
    assert rule["sourceRanges"] == [f"{CALLER}/32"]
    assert rule["targetTags"] == [VM]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": [str(agent_on_gce_swtpm)]}]
    assert during == [{"instances": [VM], "firewalls": [VM], "objects": []}]
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}

    assert (outcome.output_dir / CERTIFICATE_NAME).is_file()
    assert outcome.report.ok
    assert outcome.report.provenance is not None
    assert outcome.report.provenance.subjects[0].sha256 == hash_tree(outcome.weights).digest
    statuses = {r.check: r.status.value for r in outcome.report.results}
    assert statuses["ak-chain"] == statuses["boot-pcrs"] == statuses["weights"] == "passed"


@pytest.mark.swtpm
def test_a_failed_job_deletes_everything(
    fake: FakeGcp, clients: GcpClients, agent_on_gce_swtpm: int, local_ca: LocalCa, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, agent_on_gce_swtpm, local_ca)
    with pytest.raises(JobFailedError):
        run_on(
            GcpPlatform(clients, vm_names=lambda: VM),
            spec,
            _job(tmp_path, exit_status=3),
            spec.output,
            say=lambda _l: None,
            log_sink=lambda _c: None,
        )
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


def test_throttled_vm_creation_is_retried_then_reported_with_nothing_left(
    fake: FakeGcp, clients: GcpClients, local_ca: LocalCa, tmp_path: Path
) -> None:
    _plain_recipe(tmp_path)
    fake.fail("POST", r"/zones/.*/instances$", 429, times=10)
    spec = _spec(tmp_path, 1, local_ca)
    with pytest.raises(
        CloudTransientError, match=r"creating VM aicert-run-test \(HTTP 429, 3 attempts\)"
    ):
        run_on(
            GcpPlatform(clients, vm_names=lambda: VM),
            spec,
            _job(tmp_path),
            spec.output,
            say=lambda _l: None,
            log_sink=lambda _c: None,
        )
    assert fake.count("POST", r"/zones/.*/instances$") == 3
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


def test_a_vm_creation_refused_once_is_retried(
    fake: FakeGcp, clients: GcpClients, local_ca: LocalCa, tmp_path: Path
) -> None:
    fake.fail("POST", r"/zones/.*/instances$", 503, times=1)
    spec = _spec(tmp_path, 1, local_ca, boot_timeout=0.5)
    _plain_recipe(tmp_path)
    with pytest.raises(AgentRequestError, match="did not come up"):  # nothing at port 1
        run_on(
            GcpPlatform(clients, vm_names=lambda: VM),
            spec,
            _job(tmp_path),
            spec.output,
            say=lambda _l: None,
            log_sink=lambda _c: None,
        )
    assert fake.count("POST", r"/zones/.*/instances$") == 2
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("caller_ip", "10.0.0.1", "public IPv4"),
        ("caller_ip", "nope", "not an IP address"),
        ("zone", "Europe", "not a GCE zone"),
        ("scratch_gib", 1, "10 to 65536"),
    ],
)
def test_bad_run_settings_are_refused(
    tmp_path: Path, local_ca: LocalCa, field: str, value: object, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        _spec(tmp_path, 1, local_ca, **{field: value})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--platform gcp needs --gcp-project"),
        (
            [
                "--gcp-project",
                PROJECT,
                "--zone",
                ZONE,
                "--gcp-image",
                IMAGE,
                "--caller-ip",
                CALLER,
                "--location",
                "westeurope",
            ],
            "not for --platform gcp: --location (only for azure)",
        ),
    ],
)
def test_run_options_for_gcp_are_checked_before_anything_is_created(
    fake: FakeGcp, tmp_path: Path, extra: list[str], message: str
) -> None:
    job = write_toy_job(tmp_path, 0)
    out = CliRunner(env={"GOOGLE_CLOUD_PROJECT": None}).invoke(
        build_main,
        ["run", "--platform", "gcp", str(job), "--output", str(tmp_path / "out"), *extra],
        obj={"gcp_endpoint": fake.url},
    )
    assert out.exit_code == 2, out.output
    assert message in out.stderr
    assert fake.requests == []


def _boot_only(clients: GcpClients, spec: GcpRun, say: Callable[[str], None]) -> None:
    with GcpPlatform(clients, vm_names=lambda: VM).boot(spec, say=say):
        pass


def test_ctrl_c_while_booting_deletes_everything(
    fake: FakeGcp, clients: GcpClients, local_ca: LocalCa, tmp_path: Path
) -> None:
    _plain_recipe(tmp_path)

    def interrupt_once_created(line: str) -> None:
        if line.startswith(f"VM {VM} created"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _boot_only(clients, _spec(tmp_path, 1, local_ca), interrupt_once_created)
    assert fake.count("DELETE", rf"/instances/{VM}$") == 1
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


def test_a_failed_deletion_names_the_command_that_finishes_it(
    fake: FakeGcp, clients: GcpClients, local_ca: LocalCa, tmp_path: Path
) -> None:
    _plain_recipe(tmp_path)
    fake.fail("DELETE", rf"/instances/{VM}$", 403)
    finish = f"aicert-build destroy gcp --project {PROJECT} --deployment {VM}"
    with pytest.raises(CloudError, match=f"finish with '{finish}'"):
        _boot_only(clients, _spec(tmp_path, 1, local_ca), lambda _l: None)
    assert fake.leftovers()["instances"] == [VM]
    assert fake.leftovers()["firewalls"] == [VM]
    obj = {
        "gcp_endpoint": fake.url,
        "gcp_credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
        "gcp_retry": NO_WAIT,
        "gcp_poll_interval": 0.01,
    }
    done = CliRunner().invoke(build_main, [*finish.split()[1:], "--yes"], obj=obj)
    assert done.exit_code == 0, done.output
    assert f"  instance  zones/{ZONE}/instances/{VM}" in done.stderr
    assert f"  firewall  {VM}" in done.stderr
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


def test_an_agent_error_on_the_serial_console_ends_the_wait_at_once(
    fake: FakeGcp, clients: GcpClients, local_ca: LocalCa, tmp_path: Path
) -> None:
    _plain_recipe(tmp_path)
    fake.serial[VM] = (
        "Booting...\naicert-agent: error: cannot open the TPM through 'device:/dev/tpmrm0'\n"
    )
    spec = _spec(tmp_path, 1, local_ca, boot_timeout=600.0)
    with pytest.raises(
        AgentRequestError, match="the agent did not start: aicert-agent: error: cannot open the TPM"
    ):
        run_on(
            GcpPlatform(clients, vm_names=lambda: VM),
            spec,
            _job(tmp_path),
            spec.output,
            say=lambda _l: None,
            log_sink=lambda _c: None,
        )
    assert fake.count("GET", rf"/instances/{VM}/serialPort$") == 1
    assert fake.leftovers() == {"instances": [], "firewalls": [], "objects": []}


def test_the_gcp_scratch_default_is_the_same_in_both_places() -> None:
    assert DEFAULT_GCP_SCRATCH_GIB == DEFAULT_SCRATCH_GIB
