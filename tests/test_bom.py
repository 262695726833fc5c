"""CycloneDX 1.6 ML-BOM export: schema-valid and naming the certificate's digests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aicert.verifier.boot.image_identity import ImageIdentity
from aicert.verifier.digest.file_subjects import FileSubject
from aicert.verifier.statement.provenance import Artifact, Evaluation, TrainingProvenance
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from aicert.bom import export_cyclonedx

PROV = TrainingProvenance(
    subjects=(Artifact("weights", "cd" * 32, files=2),),
    file_subjects=(
        FileSubject("weights/config.json", "a1" * 32),
        FileSubject("weights/model.bin", "b2" * 32),
    ),
    image=ImageIdentity("5a" * 32, "5f" * 32),
    dependencies=(
        Artifact("code", "ab" * 32, "code", "urn:aicert:upload:code"),
        Artifact("digits", "ef" * 32, "data", "https://example.org/digits.npz"),
        Artifact("job-config", "0c" * 32, "config", "urn:aicert:job-request"),
    ),
    command=("python3", "train.py", "--note", "two words", "it's"),
    output_path="weights",
    nonce="00" * 16,
    agent_version="0.1.0",
    boot_id="b" * 32,
    agent_key_sha256="12" * 32,
    owner="34" * 32,
    exit_status=0,
    started_on="2026-11-25T10:00:00Z",
    finished_on="2026-11-25T10:05:00Z",
    evaluations=(
        Evaluation(
            name="accuracy",
            command=("python3", "eval.py"),
            inputs=(
                Artifact(
                    "accuracy/code", "56" * 32, "eval-code", "urn:aicert:upload:accuracy/code"
                ),
                Artifact(
                    "accuracy/test-set",
                    "78" * 32,
                    "eval-data",
                    "urn:aicert:upload:accuracy/test-set",
                ),
            ),
            weights_sha256="cd" * 32,
            results_sha256="9a" * 32,
            metrics={"accuracy": 0.93, "samples": 360},
            exit_status=0,
        ),
    ),
)


CERT_BYTES = b"{}"


def _export(prov: TrainingProvenance, tmp_path: Path) -> dict[str, Any]:
    cert = tmp_path / "job.aicert.json"
    cert.write_bytes(CERT_BYTES)
    out = tmp_path / "bom.json"
    export_cyclonedx(prov, cert, out)
    text = out.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    return json.loads(text)  # type: ignore[no-any-return]


def _hashes(doc: dict[str, object]) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("alg") == "SHA-256":
                found.add(str(node["content"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def _properties(node: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in node.get("properties", [])}


def test_only_file_sha256_is_labelled_sha256(tmp_path: Path) -> None:
    doc = _export(PROV, tmp_path)
    assert doc["specVersion"] == "1.6"
    files = {f.sha256 for f in PROV.file_subjects}
    assert _hashes(doc) == files | {hashlib.sha256(CERT_BYTES).hexdigest()}
    model = doc["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert "hashes" not in model
    assert _properties(model)["aicert:tree-sha256"] == "cd" * 32
    assert {c["name"]: c["hashes"][0]["content"] for c in model["components"]} == {
        f.name: f.sha256 for f in PROV.file_subjects
    }
    trees = {_properties(c).get("aicert:tree-sha256") for c in doc["components"]}
    inputs = [*PROV.dependencies, *PROV.evaluations[0].inputs]
    assert {a.sha256 for a in inputs} <= trees
    assert model["externalReferences"][0]["type"] == "attestation"


def test_metrics_are_in_the_model_card(tmp_path: Path) -> None:
    card = _export(PROV, tmp_path)["metadata"]["component"]["modelCard"]
    assert card["quantitativeAnalysis"]["performanceMetrics"] == [
        {"type": "accuracy", "value": "0.93", "slice": "accuracy"},
        {"type": "samples", "value": "360", "slice": "accuracy"},
    ]
    (dataset,) = card["modelParameters"]["datasets"]
    assert dataset["ref"].startswith("aicert:data:digits:")


def test_the_model_depends_only_on_what_made_it(tmp_path: Path) -> None:
    doc = _export(PROV, tmp_path)
    model_ref = doc["metadata"]["component"]["bom-ref"]
    (entry,) = [d for d in doc["dependencies"] if d["ref"] == model_ref]
    roles = sorted(ref.split(":")[1] for ref in entry["dependsOn"])
    assert roles == ["code", "config", "data"]


def test_the_os_image_and_the_tool_are_named(tmp_path: Path) -> None:
    doc = _export(PROV, tmp_path)
    (image,) = [c for c in doc["components"] if c["type"] == "operating-system"]
    assert _properties(image) == {
        "aicert:dm-verity-roothash": "5a" * 32,
        "aicert:uki-authenticode-sha256": "5f" * 32,
    }
    tools = doc["metadata"]["tools"]["components"]
    assert "aicert-verify" in {t["name"] for t in tools}
    training = doc["formulation"][0]["workflows"][0]
    assert {"resource": {"ref": image["bom-ref"]}} in training["inputs"]


def test_commands_keep_their_argv(tmp_path: Path) -> None:
    workflows = _export(PROV, tmp_path)["formulation"][0]["workflows"]
    assert [w["name"] for w in workflows] == ["training", "evaluation accuracy"]
    (command,) = workflows[0]["steps"][0]["commands"]
    assert json.loads(_properties(command)["aicert:argv"]) == list(PROV.command)
    assert command["executed"] == "python3 train.py --note 'two words' 'it'\"'\"'s'"
    props = _properties(workflows[1])
    assert props["aicert:metric:accuracy"] == "0.93"
    assert props["aicert:results:tree-sha256"] == "9a" * 32


def test_a_bom_without_image_facts_has_no_os_component(tmp_path: Path) -> None:
    doc = _export(dataclasses.replace(PROV, image=ImageIdentity()), tmp_path)
    assert all(c["type"] != "operating-system" for c in doc["components"])


def test_evaluation_only_bom_has_no_training_run(tmp_path: Path) -> None:
    prov = dataclasses.replace(
        PROV,
        command=(),
        output_path="",
        dependencies=(Artifact("weights", "cd" * 32, "weights", "urn:aicert:upload:weights"),),
    )
    workflows = _export(prov, tmp_path)["formulation"][0]["workflows"]  # type: ignore[index]
    assert [w["name"] for w in workflows] == ["evaluation accuracy"]


def test_unwritable_destination_is_an_input_error(tmp_path: Path) -> None:
    from aicert.verifier.errors import InputError

    cert = tmp_path / "c.json"
    cert.write_text("{}")
    with pytest.raises(InputError):
        export_cyclonedx(PROV, cert, tmp_path / "missing-dir" / "bom.json")
