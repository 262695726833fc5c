"""CycloneDX 1.6 ML-BOM export: schema-valid and naming the certificate's digests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from aicert.verifier.bom import export_cyclonedx
from aicert.verifier.provenance import Artifact, Evaluation, TrainingProvenance
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

PROV = TrainingProvenance(
    subjects=(Artifact("weights", "cd" * 32),),
    dependencies=(
        Artifact("code", "ab" * 32, "code", "upload"),
        Artifact("digits", "ef" * 32, "data", "upload"),
    ),
    command=("python3", "train.py"),
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
                Artifact("accuracy/code", "56" * 32, "eval-code", "upload"),
                Artifact("accuracy/test-set", "78" * 32, "eval-data", "upload"),
            ),
            weights_sha256="cd" * 32,
            results_sha256="9a" * 32,
            metrics={"accuracy": 0.93, "samples": 360},
            exit_status=0,
        ),
    ),
)


def _export(prov: TrainingProvenance, tmp_path: Path) -> dict[str, object]:
    cert = tmp_path / "job.aicert.json"
    cert.write_text("{}")
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


def test_bom_is_valid_and_names_every_digest(tmp_path: Path) -> None:
    doc = _export(PROV, tmp_path)
    assert doc["specVersion"] == "1.6"
    model = doc["metadata"]["component"]  # type: ignore[index]
    assert model["type"] == "machine-learning-model"
    digests = {a.sha256 for a in PROV.dependencies} | {PROV.subjects[0].sha256}
    digests |= {i.sha256 for i in PROV.evaluations[0].inputs}
    assert digests <= _hashes(doc)
    workflows = doc["formulation"][0]["workflows"]  # type: ignore[index]
    assert [w["name"] for w in workflows] == ["training", "evaluation accuracy"]
    props = {p["name"]: p["value"] for p in workflows[1]["properties"]}
    assert props["aicert:metric:accuracy"] == "0.93"
    assert props["aicert:results:sha256"] == "9a" * 32
    refs = model["externalReferences"]
    assert refs[0]["type"] == "attestation"


def test_evaluation_only_bom_has_no_training_run(tmp_path: Path) -> None:
    prov = dataclasses.replace(
        PROV,
        command=(),
        output_path="",
        dependencies=(Artifact("weights", "cd" * 32, "weights", "upload"),),
    )
    workflows = _export(prov, tmp_path)["formulation"][0]["workflows"]  # type: ignore[index]
    assert [w["name"] for w in workflows] == ["evaluation accuracy"]


def test_unwritable_destination_is_an_input_error(tmp_path: Path) -> None:
    from aicert.verifier.errors import InputError

    cert = tmp_path / "c.json"
    cert.write_text("{}")
    with pytest.raises(InputError):
        export_cyclonedx(PROV, cert, tmp_path / "missing-dir" / "bom.json")
