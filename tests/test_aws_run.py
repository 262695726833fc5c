"""``run --platform aws``: the real boto3 against a moto server, and a real agent on a
provisioned swtpm standing in for the instance's NitroTPM (moto gives the instance
127.0.0.1 as its public address).

NitroTPM certifies no AK (docs/aws.md). Most runs give the swtpm an AK certificate from
the local CA, given as the one trust root: without a root the attestation fails closed.
One run is the NitroTPM path: a swtpm without any AK behind the NitroTPM stand-in
(tests/nitro_standin.py), the agent's own AK, and the stand-in's Nitro document in the
certificate instead of AK certificates.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import running_agent, write_toy_job
from aicert.agent.tpm import NITRO_AK, AgentTpm
from aicert.builder.agent_client import AgentRequestError
from aicert.builder.cli import main as build_main
from aicert.builder.job_file import JobFile, load_job_file
from aicert.builder.job_runner import CERTIFICATE_NAME, JobFailedError
from aicert.builder.platforms.aws.cli import DEFAULT_AWS_INSTANCE_TYPE, DEFAULT_AWS_SCRATCH_GIB
from aicert.builder.platforms.aws.clients import AwsClients
from aicert.builder.platforms.aws.deploy import AwsDeploySpec, deploy_image
from aicert.builder.platforms.aws.errors import CloudTransientError
from aicert.builder.platforms.aws.platform import run_aws
from aicert.builder.platforms.aws.run import DEFAULT_INSTANCE_TYPE, DEFAULT_SCRATCH_GIB, AwsRun
from aicert.builder.platforms.local.ca import LocalCa
from aicert.builder.platforms.local.qemu import free_port
from aicert.builder.platforms.local.swtpm import Swtpm
from aicert.verifier.aws.nitro_document import verify_nitro_document
from aicert.verifier.boot.uki import BOOT_PCRS
from aicert.verifier.cli import main as verify_main
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.errors import AicertError, CloudError, InputError
from aicert.verifier.tpm.quote import verify_quote_signature
from aicert.verifier.tpm.tpm2_structures import parse_tpm2b_public
from aws_fake import MotoAws, inject, owned
from aws_fixtures import aws_disk
from certgen import recipe_outputs
from click.testing import CliRunner
from conftest import ProvisionedSwtpm
from nitro_standin import NitroStandin, standin_for
from tpm_replay import OVMF_LOG, replay_log_into_tpm

CALLER = "52.174.10.20"
RUN = "aicert-run-test"


@pytest.fixture
def loopback_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's instances get 127.0.0.1 as their public address: where the agent listens."""
    import moto.ec2.models.elastic_network_interfaces as enis

    monkeypatch.setattr(enis, "random_public_ip", lambda: "127.0.0.1")


@pytest.fixture
def ami(aws: AwsClients, loopback_instances: None, tmp_path: Path) -> str:
    spec = AwsDeploySpec(disk=aws_disk(tmp_path / "disk.raw"), image_name="aicert-os-test")
    return deploy_image(aws, spec, say=lambda _l: None).image_id


def _job(tmp_path: Path, exit_status: int = 0) -> JobFile:
    return load_job_file(write_toy_job(tmp_path, exit_status))


def _recipe_for(tcti: str, path: Path) -> Path:
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        pcrs = tpm.read_pcrs(pcrs=BOOT_PCRS)
    path.write_text(
        json.dumps(
            {
                "inputs": {"profile": "aws"},
                "outputs": recipe_outputs(),
                "expected_pcrs": {"pcrs": {str(n): v.hex() for n, v in pcrs.items()}},
            }
        )
    )
    return path


def _nitro_recipe_for(tcti: str, path: Path) -> Path:
    """A recipe whose boot PCRs are the swtpm's, in SHA-256 and (for the Nitro document)
    SHA-384."""
    replay_log_into_tpm(tcti, OVMF_LOG.read_bytes())
    with AgentTpm(tcti, event_log_path=OVMF_LOG) as tpm:
        assert tpm.ak_source() == NITRO_AK
        banks = {alg: tpm.read_pcrs(alg, pcrs=BOOT_PCRS) for alg in ("sha256", "sha384")}
    pcrs = {alg: {str(n): v.hex() for n, v in values.items()} for alg, values in banks.items()}
    expected = {"pcrs": pcrs["sha256"], "sha384": {"pcrs": pcrs["sha384"], "secure_boot_pcrs": {}}}
    recipe = {"inputs": {"profile": "aws"}, "outputs": recipe_outputs(), "expected_pcrs": expected}
    path.write_text(json.dumps(recipe))
    return path


def _plain_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "recipe.json"
    pcrs = {str(n): "00" * 32 for n in BOOT_PCRS}
    recipe.write_text(json.dumps({"outputs": recipe_outputs(), "expected_pcrs": {"pcrs": pcrs}}))
    return recipe


def _spec(tmp_path: Path, ami: str | None, recipe: Path, port: int, **kw: Any) -> AwsRun:
    args: dict[str, Any] = {
        "region": "eu-west-1",
        "output": tmp_path / "out",
        "recipe": recipe,
        "caller_ip": CALLER,
        "image_id": ami,
        "agent_port": port,
        "boot_timeout": 10.0,
    }
    args.update(kw)
    return AwsRun(**args)


def _record(aws: AwsClients, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call boto3 makes."""
    calls: list[dict[str, Any]] = []
    aws.ec2.meta.events.register(
        f"provide-client-params.ec2.{operation}", lambda params, **_kw: calls.append(params)
    )
    return calls


@pytest.fixture
def agent_on_swtpm(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> Iterator[tuple[int, Path]]:
    recipe = _recipe_for(provisioned_swtpm.tcti, tmp_path / "recipe.json")
    with running_agent(provisioned_swtpm.tcti, provisioned_swtpm.ca, replay=False) as agent:
        yield agent.server.port, recipe


@pytest.mark.swtpm
def test_a_job_runs_on_an_instance_and_everything_is_deleted(
    aws: AwsClients,
    ami: str,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    before = owned(aws)
    launches = _record(aws, "RunInstances")
    ingress = _record(aws, "AuthorizeSecurityGroupIngress")
    spec = _spec(tmp_path, ami, recipe, port, trust_roots=(provisioned_swtpm.ca.root_certificate,))
    during: list[dict[str, set[str]]] = []
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("agent attested"):
            during.append(owned(aws))

    outcome = run_aws(
        spec, _job(tmp_path), clients=aws, say=say, log_sink=lambda _c: None, run_name=RUN
    )

    (launch,) = launches
    assert launch["ImageId"] == ami
    assert launch["InstanceType"] == DEFAULT_INSTANCE_TYPE
    assert launch["MetadataOptions"]["HttpTokens"] == "required"
    assert launch["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == DEFAULT_SCRATCH_GIB
    (rule,) = ingress[0]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (port, port)
    assert rule["IpRanges"][0]["CidrIp"] == f"{CALLER}/32"
    (seen,) = during
    assert len(seen["instances"] - before["instances"]) == 1
    assert len(seen["groups"] - before["groups"]) == 1
    assert owned(aws) == before  # the AMI from deploy stays, the run's resources are gone
    assert "deleted 2 resources of run/aicert-run-test" in said

    assert (outcome.output_dir / CERTIFICATE_NAME).is_file()
    assert (outcome.weights / "weights.bin").read_bytes() == b"w" * 1000
    assert outcome.report.ok
    assert outcome.report.provenance is not None
    assert outcome.report.provenance.subjects[0].sha256 == hash_tree(outcome.weights).digest
    statuses = {r.check: r.status.value for r in outcome.report.results}
    assert statuses["boot-pcrs"] == statuses["weights"] == "passed"
    assert outcome.report.root_of_trust is not None
    assert not outcome.report.root_of_trust.hardware


@pytest.fixture
def nitro_agent(
    running_swtpm: Swtpm, local_ca: LocalCa, tmp_path: Path
) -> Iterator[tuple[int, Path, NitroStandin]]:
    """An agent on a swtpm with no AK behind the NitroTPM stand-in."""
    with standin_for(running_swtpm) as standin:
        recipe = _nitro_recipe_for(standin.tcti, tmp_path / "recipe.json")
        with running_agent(standin.tcti, local_ca, replay=False) as agent:
            yield agent.server.port, recipe, standin


@pytest.mark.swtpm
def test_a_job_on_a_nitrotpm_yields_a_certificate_with_its_attestation_document(
    aws: AwsClients,
    ami: str,
    nitro_agent: tuple[int, Path, NitroStandin],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, recipe, standin = nitro_agent
    spec = _spec(tmp_path, ami, recipe, port, trust_roots=(standin.pki.root,))
    outcome = run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None, run_name=RUN)

    tpm = json.loads(outcome.certificate.read_text())["tpm"]
    assert tpm["akCertificates"] == []
    ak = parse_tpm2b_public(base64.b64decode(tpm["akPublic"]))
    verify_quote_signature(
        base64.b64decode(tpm["quote"]["attest"]), base64.b64decode(tpm["quote"]["signature"]), ak
    )
    document = verify_nitro_document(base64.b64decode(tpm["nitroDocument"]), [standin.pki.root])
    assert document.document.user_data == ak.name()
    # One document at agent start (the check that the TPM is a NitroTPM), one for the
    # attestation, and the certificate's, asked for right after its quote.
    assert len(standin.documents) == 3
    assert base64.b64decode(tpm["nitroDocument"]) == standin.documents[-1]

    assert outcome.report.ok, outcome.report.error
    statuses = {r.check: r.status.value for r in outcome.report.results}
    assert statuses["ak-chain"] == statuses["quote-signature"] == statuses["boot-pcrs"] == "passed"
    assert outcome.report.root_of_trust is not None
    assert not outcome.report.root_of_trust.hardware

    root_pem = tmp_path / "nitro-root.pem"
    root_pem.write_bytes(standin.pki.root_pem)
    args = [str(outcome.certificate), "--recipe", str(recipe), "--trust-root", str(root_pem)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        verify_main([*args, "--weights", str(outcome.weights), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert exited.value.code == 0, report
    (ak_chain,) = [r for r in report["checks"] if r["check"] == "ak-chain"]
    assert ak_chain["status"] == "passed"
    assert "Nitro document of i-0123456789abcdef0" in ak_chain["detail"]


@pytest.mark.swtpm
def test_a_nitrotpm_agent_whose_document_no_trusted_root_signed_is_refused(
    aws: AwsClients, ami: str, nitro_agent: tuple[int, Path, NitroStandin], tmp_path: Path
) -> None:
    """Without the stand-in's root the document chains to nothing trusted (the bundled
    AWS root did not sign it): the run stops before any input is sent."""
    port, recipe, _standin = nitro_agent
    before = owned(aws)
    with pytest.raises(AicertError) as info:
        run_aws(
            _spec(tmp_path, ami, recipe, port), _job(tmp_path), clients=aws, say=lambda _l: None
        )
    assert "Nitro attestation document" in str(info.value)
    assert "does not chain to a trusted root" in str(info.value)
    assert owned(aws) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.swtpm
def test_a_run_without_an_ami_publishes_one_for_itself_and_deregisters_it(
    aws: AwsClients,
    moto: MotoAws,
    loopback_instances: None,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    before = owned(aws)
    spec = _spec(
        tmp_path,
        None,
        recipe,
        port,
        disk=aws_disk(tmp_path / "disk.raw"),
        trust_roots=(provisioned_swtpm.ca.root_certificate,),
    )
    outcome = run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None, run_name=RUN)
    assert outcome.report.ok
    (registered,) = moto.registered
    assert registered["Name"] == f"run/{RUN}"
    assert owned(aws) == before


@pytest.mark.swtpm
def test_a_failed_job_deletes_everything_and_leaves_no_output(
    aws: AwsClients,
    ami: str,
    provisioned_swtpm: ProvisionedSwtpm,
    agent_on_swtpm: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, recipe = agent_on_swtpm
    before = owned(aws)
    spec = _spec(tmp_path, ami, recipe, port, trust_roots=(provisioned_swtpm.ca.root_certificate,))
    with pytest.raises(JobFailedError, match="no certificate"):
        run_aws(spec, _job(tmp_path, exit_status=3), clients=aws, say=lambda _l: None)
    assert owned(aws) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.swtpm
def test_without_a_trust_root_the_agent_is_refused_before_anything_is_sent(
    aws: AwsClients, ami: str, agent_on_swtpm: tuple[int, Path], tmp_path: Path
) -> None:
    port, recipe = agent_on_swtpm
    before = owned(aws)
    with pytest.raises(AicertError, match=r"(?i)root"):
        run_aws(
            _spec(tmp_path, ami, recipe, port), _job(tmp_path), clients=aws, say=lambda _l: None
        )
    assert owned(aws) == before
    assert not (tmp_path / "out").exists()


def test_an_agent_that_never_comes_up_deletes_everything(
    aws: AwsClients, ami: str, tmp_path: Path
) -> None:
    before = owned(aws)
    spec = _spec(tmp_path, ami, _plain_recipe(tmp_path), free_port(), boot_timeout=1.5)
    said: list[str] = []
    with pytest.raises(AgentRequestError, match="did not come up"):
        run_aws(spec, _job(tmp_path), clients=aws, say=said.append)
    assert owned(aws) == before
    assert any(line.startswith("terminating i-") for line in said)


def test_ctrl_c_deletes_everything(aws: AwsClients, ami: str, tmp_path: Path) -> None:
    before = owned(aws)
    spec = _spec(tmp_path, ami, _plain_recipe(tmp_path), free_port())

    def interrupt_once_launched(line: str) -> None:
        if line.startswith("instance ") and " launched " in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_aws(spec, _job(tmp_path), clients=aws, say=interrupt_once_launched, run_name=RUN)
    assert owned(aws) == before


def test_throttled_launches_are_retried(aws: AwsClients, ami: str, tmp_path: Path) -> None:
    throttle = inject(aws, "ec2", "RunInstances", 503, "RequestLimitExceeded", times=2)
    launches = _record(aws, "RunInstances")
    spec = _spec(tmp_path, ami, _plain_recipe(tmp_path), free_port(), boot_timeout=0)
    with pytest.raises(AgentRequestError, match="did not come up"):
        run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None, run_name=RUN)
    assert throttle.hits == 2
    assert {c["ClientToken"] for c in launches} == {RUN}  # one instance, however many tries


def test_throttling_that_does_not_stop_leaves_nothing(
    aws: AwsClients, ami: str, tmp_path: Path
) -> None:
    before = owned(aws)
    inject(aws, "ec2", "RunInstances", 503, "RequestLimitExceeded", times=None)
    spec = _spec(tmp_path, ami, _plain_recipe(tmp_path), free_port())
    with pytest.raises(CloudTransientError, match="kept throttling") as err:
        run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None)
    assert "\n" not in str(err.value)
    assert owned(aws) == before


def test_a_failed_deletion_names_the_command_that_finishes_it(
    aws: AwsClients, ami: str, tmp_path: Path
) -> None:
    inject(aws, "ec2", "DeleteSecurityGroup", 403, "UnauthorizedOperation", times=None)
    spec = _spec(tmp_path, ami, _plain_recipe(tmp_path), free_port(), boot_timeout=0)
    with pytest.raises(CloudError, match=rf"aicert-build destroy aws .*--deployment run/{RUN}"):
        run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None, run_name=RUN)
    assert len(owned(aws)["groups"]) == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"recipe": Path("/nonexistent/recipe.json")}, "does not exist"),
        ({"platform_profile": "no-such-profile"}, "neither a bundled profile"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(
    aws: AwsClients, ami: str, tmp_path: Path, change: dict[str, Any], error: str
) -> None:
    before = owned(aws)
    spec = dataclasses.replace(_spec(tmp_path, ami, _plain_recipe(tmp_path), 8443), **change)
    with pytest.raises(InputError, match=error):
        run_aws(spec, _job(tmp_path), clients=aws, say=lambda _l: None)
    assert owned(aws) == before


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"caller_ip": "192.168.1.10"}, "not a public address"),
        ({"image_id": "i-123"}, "not an AMI id"),
        ({"image_id": None}, "give the AMI id"),
        ({"scratch_gib": 0}, "scratch disk"),
    ],
)
def test_a_bad_run_spec_is_refused(tmp_path: Path, change: dict[str, Any], error: str) -> None:
    with pytest.raises(InputError, match=error):
        _spec(tmp_path, "ami-12345678", tmp_path / "recipe.json", 8443, **change)


# -- the command line ----------------------------------------------------------------------


def test_the_command_launches_waits_for_the_agent_and_deletes_everything(
    aws: AwsClients, moto: MotoAws, ami: str, tmp_path: Path
) -> None:
    _job(tmp_path)
    before = owned(aws)
    args = [
        "run", str(tmp_path / "job.toml"), "--platform", "aws", "--region", "eu-west-1",
        "--ami", ami, "--caller-ip", CALLER, "--recipe", str(_plain_recipe(tmp_path)),
        "--boot-timeout", "0", "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    result = CliRunner().invoke(build_main, args, obj={"aws_options": moto.options()})
    assert result.exit_code != 0
    assert "did not come up" in result.stderr
    assert "terminating i-" in result.stderr
    assert owned(aws) == before


def test_missing_aws_options_are_named_in_one_line(tmp_path: Path) -> None:
    _job(tmp_path)
    result = CliRunner().invoke(
        build_main, ["run", str(tmp_path / "job.toml"), "--platform", "aws"], env={"AWS_REGION": ""}
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()[-1:]
    assert "--region" in line
    assert "--caller-ip" in line


@pytest.mark.parametrize(
    ("platform", "option", "error"),
    [
        ("local", ("--ami", "ami-1"), "not for --platform local: --ami (only for aws)"),
        (
            "azure",
            ("--instance-type", "m6i.large"),
            "not for --platform azure: --instance-type (only for aws)",
        ),
        (
            "aws",
            ("--vm-size", "Standard_D2s_v5"),
            "not for --platform aws: --vm-size (only for azure, gcp)",
        ),
    ],
)
def test_options_of_another_platform_are_refused(
    tmp_path: Path, platform: str, option: tuple[str, str], error: str
) -> None:
    _job(tmp_path)
    result = CliRunner().invoke(
        build_main, ["run", str(tmp_path / "job.toml"), "--platform", platform, *option]
    )
    assert result.exit_code == 2
    assert error in result.output


def test_the_aws_defaults_are_the_same_in_both_places() -> None:
    assert DEFAULT_AWS_INSTANCE_TYPE == DEFAULT_INSTANCE_TYPE
    assert DEFAULT_AWS_SCRATCH_GIB == DEFAULT_SCRATCH_GIB
