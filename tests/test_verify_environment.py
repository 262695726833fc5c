"""A certificate whose job ran in an OCI environment: the verifier accepts the
``environment`` roles, prints them with their package URL, and the BOM lists them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from aicert.agent.oci.environment import pull_environment
from aicert.agent.session import MeasuredSession, SessionError
from aicert.agent.tpm import AgentTpm
from aicert.verifier.digest.file_subjects import plain_sha256s
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.weights import tree_digest_of
from aicert.verifier.report import render_text
from aicert.verifier.verify import Policy, verify_certificate
from certgen import KERNEL_CMDLINE, write_weights
from conftest import ProvisionedSwtpm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from oci_support import file, layer_tar, make_image, running_registry
from tpm_replay import OVMF_LOG, replay_log_into_tpm

from aicert.bom import export_cyclonedx
from aicert.oci_reference import parse_reference

pytestmark = pytest.mark.swtpm


def test_environment_inputs_verify_and_are_reported(
    provisioned_swtpm: ProvisionedSwtpm, tmp_path: Path
) -> None:
    image = make_image([layer_tar([file("usr/bin/python3", b"#!/bin/true\n", 0o755)])])
    with running_registry(tmp_path / "registry") as registry:
        reference = parse_reference(registry.push("team/trainer", image))
        env = pull_environment(
            reference, tmp_path / "env", max_bytes=1 << 30, plain_http=frozenset({registry.host})
        )
    manifest_hex = env.manifest_digest.removeprefix("sha256:")
    weights = write_weights(tmp_path)
    replay_log_into_tpm(provisioned_swtpm.tcti, OVMF_LOG.read_bytes())
    nonce = secrets.token_hex(16)
    intermediate = provisioned_swtpm.ca.intermediate_certificate.public_bytes(
        serialization.Encoding.DER
    )
    with AgentTpm(provisioned_swtpm.tcti, event_log_path=OVMF_LOG) as tpm:
        session = MeasuredSession(
            tpm,
            agent_version="0.1.0",
            boot_id=secrets.token_hex(16),
            key=ec.generate_private_key(ec.SECP256R1()),
            intermediates=(intermediate,),
            kernel_cmdline=KERNEL_CMDLINE,
        )
        session.claim(owner=secrets.token_hex(32), nonce=nonce)
        session.add_input("environment", "environment", manifest_hex, env.source("environment"))
        session.add_input("code", "code", "ab" * 32, "urn:aicert:upload:code")
        session.start_command(
            ["python3", "train.py"], "weights", "environment", ("/usr/bin/entry", "--x")
        )
        session.command_exited(0)
        manifest = hash_tree(weights)
        digest = manifest.digest
        session.add_output("weights", manifest, plain_sha256s(weights, manifest))
        session.add_evaluation_input(
            "accuracy", "eval-environment", "environment", manifest_hex, env.source("x")
        )
        session.add_evaluation_input(
            "accuracy", "eval-code", "code", "cd" * 32, "urn:aicert:upload:accuracy/code"
        )
        with pytest.raises(SessionError, match="eval-environment"):
            session.add_evaluation_input("accuracy", "environment", "e2", manifest_hex)
        session.add_evaluation(
            "accuracy",
            ["python3", "eval.py"],
            digest,
            "ef" * 32,
            {"a": 1},
            "accuracy/environment",
        )
        certificate = session.finish()
    path = tmp_path / "job.aicert.json"
    path.write_text(json.dumps(certificate.to_json()))
    report = verify_certificate(
        certificate,
        Policy(
            trust_roots=(provisioned_swtpm.ca.root_certificate,),
            expected_nonce=nonce,
            accept_any_image=True,
            weights_path=weights,
            tree_digest=tree_digest_of,
        ),
    )
    assert report.ok, report.error
    assert report.provenance is not None
    [dep] = [d for d in report.provenance.dependencies if d.role == "environment"]
    assert (dep.sha256, dep.source) == (manifest_hex, reference.purl())
    # The statement names the manifest digest as what it is, a plain SHA-256.
    statement = json.loads(certificate.envelope.payload)
    [entry] = [
        d
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["annotations"]["aicert_role"] == "environment"
    ]
    assert entry["digest"] == {"sha256": manifest_hex}
    assert entry["uri"] == reference.purl()
    text = render_text(report, path, color=False)
    assert f"environment environment              sha256:{manifest_hex}" in text
    assert reference.purl() in text
    assert "runs in      environment environment, after its entrypoint /usr/bin/entry --x" in text
    assert "runs in    environment accuracy/environment\n" in text
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert (params["root"], params["entrypoint"]) == ("environment", ["/usr/bin/entry", "--x"])
    assert statement["predicate"]["aicert_evaluations"][0]["root"] == "accuracy/environment"
    bom = tmp_path / "bom.json"
    export_cyclonedx(report.provenance, path, bom)
    components = json.loads(bom.read_text())["components"]
    containers = [c for c in components if c["type"] == "container"]
    assert {c["hashes"][0]["content"] for c in containers} == {manifest_hex}
    assert all(c["description"].endswith("input (OCI image)") for c in containers)
    for c in containers:
        props = {p["name"]: p["value"] for p in c["properties"]}
        assert props["aicert:oci-manifest-sha256"] == manifest_hex
    model_deps = next(
        d["dependsOn"]
        for d in json.loads(bom.read_text())["dependencies"]
        if d["ref"] == json.loads(bom.read_text())["metadata"]["component"]["bom-ref"]
    )
    assert any(ref.startswith("aicert:environment:") for ref in model_deps)
    assert {c["purl"] for c in containers} == {reference.purl(), env.source("x")}
