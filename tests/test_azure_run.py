"""``run --platform azure``: the real Azure SDK against the local fake of Azure, and a real
agent on a provisioned swtpm standing in for the VM's (the fake gives the VM 127.0.0.1).

The local CA's root is the extra trust root: Azure's own root cannot sign a test AK.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import running_agent, write_toy_job
from aicert.agent.tpm import AgentTpm
from aicert.builder.agent_client import AgentRequestError
from aicert.builder.cli import main as build_main
from aicert.builder.job_file import JobFile, load_job_file
from aicert.builder.job_runner import CERTIFICATE_NAME, JobFailedError
from aicert.builder.platforms.azure.cli import DEFAULT_AZURE_SCRATCH_GIB, DEFAULT_AZURE_VM_SIZE
from aicert.builder.platforms.azure.clients import AzureClients
from aicert.builder.platforms.azure.deploy import TAG_DEPLOYMENT
from aicert.builder.platforms.azure.platform import run_azure
from aicert.builder.platforms.azure.run import DEFAULT_VM_SIZE, AzureRun
from aicert.builder.platforms.azure.vm import DEFAULT_SCRATCH_GIB
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.qemu import free_port
from aicert.verifier.boot.uki import BOOT_PCRS
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import BootPcrError, CloudError, InputError
from azure_fake import FakeAzure
from azure_fixtures import RG, cli_context
from certgen import recipe_outputs
from click.testing import CliRunner
from conftest import ProvisionedSwtpm
from tpm_replay import OVMF_LOG, replay_log_into_tpm

CALLER = "52.174.10.20"
VM = "aicert-run-test"
GALLERY_TYPES = {
    "Microsoft.Compute/galleries",
    "Microsoft.Compute/galleries/images",
    "Microsoft.Compute/galleries/images/versions",
}
VM_TYPES = {
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Compute/disks",
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/networkInterfaces",
}


@pytest.fixture
def fake(fake: FakeAzure) -> FakeAzure:
    # The VM's public address is where the test's agent listens.
    fake.public_ip_address = "127.0.0.1"
    return fake


def _job(tmp_path: Path, exit_status: int = 0) -> JobFile:
    return load_job_file(write_toy_job(tmp_path, exit_status))


def _recipe_for(tcti: str, path: Path) -> Path:
    """A recipe.json predicting the swtpm's boot PCRs, PCR 4 only as the Secure Boot variant.

    The plain prediction of PCR 4 is made wrong on purpose: the run must accept the
    Secure Boot variant, which is what an Azure VM with Secure Boot on measures.
    """
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        pcrs = tpm.read_pcrs(pcrs=BOOT_PCRS)
    plain = {str(n): v.hex() for n, v in pcrs.items()} | {"4": "ab" * 32}
    path.write_text(
        json.dumps(
            {
                "inputs": {"profile": "azure"},
                "outputs": recipe_outputs(),
                "expected_pcrs": {"pcrs": plain, "secure_boot_pcrs": {"4": pcrs[4].hex()}},
            }
        )
    )
    return path


def _spec(tmp_path: Path, image_version: str, recipe: Path, port: int, **kw: object) -> AzureRun:
    args: dict[str, object] = {
        "subscription": "00000000-0000-0000-0000-000000000000",
        "resource_group": RG,
        "location": "westeurope",
        "image_version_id": image_version,
        "output": tmp_path / "out",
        "recipe": recipe,
        "caller_ip": CALLER,
        "vm_size": "Standard_D2s_v5",
        "agent_port": port,
        "boot_timeout": 10.0,
    }
    args.update(kw)
    return AzureRun(**args)  # type: ignore[arg-type]


@pytest.fixture
def agent_on_swtpm(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> Iterator[tuple[int, Path]]:
    """The agent's port and a recipe.json matching its swtpm's boot PCRs."""
    recipe = _recipe_for(provisioned_swtpm.tcti, tmp_path / "recipe.json")
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca, replay=False) as agent:
        yield agent.server.port, recipe


@pytest.mark.swtpm
def test_a_job_runs_on_a_trusted_launch_vm_and_everything_is_deleted(
    fake: FakeAzure,
    clients: AzureClients,
    image_version: str,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    spec = _spec(
        tmp_path, image_version, recipe, port, trust_roots=(provisioned_swtpm.ca.root_certificate,)
    )
    during: list[set[str]] = []
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("agent attested"):
            during.append(fake.types())

    outcome = run_azure(
        spec, _job(tmp_path), clients=clients, say=say, log_sink=lambda _c: None, vm_name=VM
    )

    (vm,) = [r for r in fake.put_bodies if r.endswith(f"/virtualmachines/{VM}")]
    props = fake.put_bodies[vm][0]["properties"]
    assert props["securityProfile"] == {
        "securityType": "TrustedLaunch",
        "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
    }
    assert props["storageProfile"]["imageReference"] == {"id": image_version}
    (nsg,) = [r for r in fake.put_bodies if r.endswith("/networksecuritygroups/" + VM + "-nsg")]
    (rule,) = fake.put_bodies[nsg][0]["properties"]["securityRules"]
    assert rule["properties"]["access"] == "Allow"
    assert rule["properties"]["sourceAddressPrefix"] == f"{CALLER}/32"
    assert rule["properties"]["destinationPortRange"] == str(port)
    for rid, bodies in fake.put_bodies.items():
        if f"/{VM}" in rid:
            assert bodies[0]["tags"][TAG_DEPLOYMENT] == f"vm/{VM}"

    assert during == [GALLERY_TYPES | VM_TYPES]  # OS disk included
    assert fake.types() == GALLERY_TYPES
    assert any(line.startswith("deleting Microsoft.Compute/virtualMachines") for line in said)
    assert f"deleted 5 resources of vm/{VM}" in said

    assert outcome.output_dir == tmp_path / "out"
    assert (outcome.output_dir / CERTIFICATE_NAME).is_file()
    assert (outcome.weights / "weights.bin").read_bytes() == b"w" * 1000
    assert outcome.report.ok
    assert outcome.report.provenance is not None
    assert outcome.report.provenance.subjects[0].sha256 == hash_tree(outcome.weights).digest
    statuses = {r.check: r.status.value for r in outcome.report.results}
    assert "failed" not in statuses.values()
    assert statuses["boot-pcrs"] == statuses["ak-chain"] == statuses["weights"] == "passed"


@pytest.mark.swtpm
def test_a_failed_job_deletes_everything_and_leaves_no_output(
    fake: FakeAzure,
    clients: AzureClients,
    image_version: str,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    spec = _spec(
        tmp_path, image_version, recipe, port, trust_roots=(provisioned_swtpm.ca.root_certificate,)
    )
    with pytest.raises(JobFailedError, match="no certificate"):
        run_azure(
            spec,
            _job(tmp_path, exit_status=3),
            clients=clients,
            say=lambda _l: None,
            log_sink=lambda _c: None,
        )
    assert fake.types() == GALLERY_TYPES
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")] == []


@pytest.mark.swtpm
def test_an_agent_that_does_not_match_the_recipe_is_refused_and_everything_deleted(
    fake: FakeAzure,
    clients: AzureClients,
    image_version: str,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    doc = json.loads(recipe.read_text())
    doc["expected_pcrs"]["secure_boot_pcrs"] = {}  # only the wrong plain PCR 4 is left
    recipe.write_text(json.dumps(doc))
    spec = _spec(
        tmp_path, image_version, recipe, port, trust_roots=(provisioned_swtpm.ca.root_certificate,)
    )
    with pytest.raises(BootPcrError, match="PCR 4"):
        run_azure(spec, _job(tmp_path), clients=clients, say=lambda _l: None)
    assert fake.types() == GALLERY_TYPES
    assert not (tmp_path / "out").exists()


def _plain_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "recipe.json"
    pcrs = {str(n): "00" * 32 for n in BOOT_PCRS}
    recipe.write_text(json.dumps({"outputs": recipe_outputs(), "expected_pcrs": {"pcrs": pcrs}}))
    return recipe


def test_an_agent_that_never_comes_up_deletes_everything(
    fake: FakeAzure, clients: AzureClients, image_version: str, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, image_version, _plain_recipe(tmp_path), free_port(), boot_timeout=1.5)
    said: list[str] = []
    with pytest.raises(AgentRequestError, match="did not come up"):
        run_azure(spec, _job(tmp_path), clients=clients, say=said.append)
    assert fake.types() == GALLERY_TYPES
    assert not (tmp_path / "out").exists()
    assert any(line.startswith("deleting Microsoft.Network/networkSecurityGroups") for line in said)


def test_ctrl_c_deletes_everything(
    fake: FakeAzure, clients: AzureClients, image_version: str, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, image_version, _plain_recipe(tmp_path), free_port())

    def interrupt_once_created(line: str) -> None:
        if line.startswith(f"VM {VM} created"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_azure(spec, _job(tmp_path), clients=clients, say=interrupt_once_created, vm_name=VM)
    assert fake.types() == GALLERY_TYPES
    assert not (tmp_path / "out").exists()


def test_a_failed_deletion_names_the_command_that_finishes_it(
    fake: FakeAzure, clients: AzureClients, image_version: str, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, image_version, _plain_recipe(tmp_path), free_port(), boot_timeout=0)
    fake.inject("DELETE", rf"/virtualMachines/{VM}\?", 403, "AuthorizationFailed", times=None)
    with pytest.raises(CloudError, match=rf"aicert-build destroy azure .*--deployment vm/{VM}"):
        run_azure(spec, _job(tmp_path), clients=clients, say=lambda _l: None, vm_name=VM)
    assert "Microsoft.Compute/virtualMachines" in fake.types()


def test_a_vm_size_without_trusted_launch_leaves_nothing(
    fake: FakeAzure, clients: AzureClients, image_version: str, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, image_version, _plain_recipe(tmp_path), 8443, vm_size="Standard_A1_v2")
    with pytest.raises(CloudError, match="TrustedLaunch"):
        run_azure(spec, _job(tmp_path), clients=clients, say=lambda _l: None)
    assert fake.types() == GALLERY_TYPES


# -- the command line ----------------------------------------------------------------------


def _cli_args(tmp_path: Path, image_version: str, *extra: str) -> list[str]:
    job = tmp_path / "job.toml"
    if not job.exists():
        _job(tmp_path)
    return [
        "run",
        str(job),
        "--platform",
        "azure",
        "--subscription",
        "00000000-0000-0000-0000-000000000000",
        "--resource-group",
        RG,
        "--location",
        "westeurope",
        "--image-version",
        image_version,
        "--caller-ip",
        CALLER,
        "--output",
        str(tmp_path / "out"),
        *extra,
    ]


def test_the_command_creates_the_vm_waits_for_its_agent_and_deletes_everything(
    fake: FakeAzure, image_version: str, local_ca: LocalCa, tmp_path: Path
) -> None:
    obj = cli_context(fake)
    args = _cli_args(
        tmp_path,
        image_version,
        "--recipe",
        str(_plain_recipe(tmp_path)),
        "--trust-root",
        str(local_ca.root_path),
        "--boot-timeout",
        "0",
        "--scratch-gib",
        "512",
    )
    result = CliRunner().invoke(build_main, args, obj=obj)
    assert result.exit_code != 0
    assert "did not come up" in result.output
    (vm,) = [b for r, b in fake.put_bodies.items() if "/virtualmachines/aicert-run-" in r]
    assert vm[0]["properties"]["hardwareProfile"]["vmSize"] == DEFAULT_AZURE_VM_SIZE
    assert vm[0]["properties"]["storageProfile"]["dataDisks"][0]["diskSizeGB"] == 512
    assert "deleting Microsoft.Compute/virtualMachines aicert-run-" in result.output
    assert fake.types() == GALLERY_TYPES
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "size", "scratch"),
    [
        ((), "Standard_NC4as_T4_v3", 300),
        (("--vm-size", "Standard_D8s_v5", "--scratch-gib", "64"), "Standard_D8s_v5", 64),
    ],
)
def test_the_job_files_azure_table_chooses_the_vm_unless_the_command_line_does(
    fake: FakeAzure,
    image_version: str,
    tmp_path: Path,
    options: tuple[str, ...],
    size: str,
    scratch: int,
) -> None:
    _job(tmp_path)
    with (tmp_path / "job.toml").open("a") as job:
        job.write('[azure]\nvm_size = "Standard_NC4as_T4_v3"\nscratch_gib = 300\n')
    obj = cli_context(fake)
    args = _cli_args(
        tmp_path,
        image_version,
        "--recipe",
        str(_plain_recipe(tmp_path)),
        "--boot-timeout",
        "0",
        *options,
    )
    result = CliRunner().invoke(build_main, args, obj=obj)
    assert "did not come up" in result.output
    (vm,) = [b for r, b in fake.put_bodies.items() if "/virtualmachines/aicert-run-" in r]
    assert vm[0]["properties"]["hardwareProfile"]["vmSize"] == size
    assert vm[0]["properties"]["storageProfile"]["dataDisks"][0]["diskSizeGB"] == scratch
    assert fake.types() == GALLERY_TYPES


def test_missing_azure_options_are_named_in_one_line(tmp_path: Path) -> None:
    _job(tmp_path)
    result = CliRunner().invoke(
        build_main,
        ["run", str(tmp_path / "job.toml"), "--platform", "azure", "--location", "westeurope"],
        env={"AZURE_SUBSCRIPTION_ID": ""},
    )
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert "--subscription" in line
    assert "--resource-group" in line
    assert "--image-version" in line
    assert "--caller-ip" in line
    assert "--location" not in line


def test_azure_options_are_refused_for_the_local_platform(tmp_path: Path) -> None:
    _job(tmp_path)
    result = CliRunner().invoke(
        build_main, ["run", str(tmp_path / "job.toml"), "--caller-ip", CALLER]
    )
    assert result.exit_code != 0
    assert "not for --platform local: --caller-ip (only for azure, gcp, aws)" in result.output


def test_the_azure_defaults_are_the_same_in_both_places() -> None:
    assert DEFAULT_AZURE_VM_SIZE == DEFAULT_VM_SIZE
    assert DEFAULT_AZURE_SCRATCH_GIB == DEFAULT_SCRATCH_GIB


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"recipe": Path("/nonexistent/recipe.json")}, "does not exist"),
        ({"caller_ip": "192.168.1.10"}, "not a public address"),
        ({"platform_profile": "no-such-profile"}, "neither a bundled profile"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(
    fake: FakeAzure,
    clients: AzureClients,
    image_version: str,
    tmp_path: Path,
    change: dict[str, object],
    error: str,
) -> None:
    spec = dataclasses.replace(
        _spec(tmp_path, image_version, _plain_recipe(tmp_path), 8443),
        **change,  # type: ignore[arg-type]
    )
    with pytest.raises(InputError, match=error):
        run_azure(spec, _job(tmp_path), clients=clients, say=lambda _l: None)
    assert fake.types() == GALLERY_TYPES
    assert fake.count("PUT", "/providers/Microsoft.(Network/|Compute/virtualMachines)") == 0


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("Standard_NCC40ads_H100_v5", "confidential VM only"),
        ("Standard_A1_v2", "Generation 1 only"),
        ("Standard_NC6s_v3", "retired"),
        ("NC4as_T4_v3", "not an Azure VM size name"),
    ],
)
def test_a_vm_size_that_cannot_run_the_image_is_a_usage_error_before_any_request(
    tmp_path: Path, size: str, reason: str
) -> None:
    _job(tmp_path)
    args = [
        "run",
        str(tmp_path / "job.toml"),
        "--platform",
        "azure",
        "--subscription",
        "sub",
        "--resource-group",
        RG,
        "--location",
        "westeurope",
        "--image-version",
        "/subscriptions/sub/x",
        "--caller-ip",
        "203.0.113.7",
        "--vm-size",
        size,
    ]
    # No cloud context: the size is refused before any client exists.
    result = CliRunner().invoke(build_main, args)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "--vm-size: " in line
    assert reason in line
