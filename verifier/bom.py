"""A CycloneDX 1.6 ML-BOM derived from a verified certificate.

The model (subject weights), every data set and code input, and the evaluation
inputs become components with their tree digests (SHA-256); the training and
evaluation runs are workflows in ``formulation``; the certificate itself is an
external reference of type ``attestation``. Built with ``cyclonedx-python-lib``
(the ``bom`` extra); ``formulation``, which that library does not model yet, is
added to its JSON output and the result is validated against the 1.6 schema.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import InputError, ToolError
from .provenance import Artifact, TrainingProvenance

_COMPONENT_TYPES = {
    "code": "application",
    "eval-code": "application",
    "data": "data",
    "eval-data": "data",
    "config": "data",
    "base-model": "machine-learning-model",
    "weights": "machine-learning-model",
    "certificate": "data",
}


def export_cyclonedx(prov: TrainingProvenance, certificate_path: Path, out: Path) -> None:
    """Write the ML-BOM of ``prov`` (from a VERIFIED certificate) to ``out`` as JSON."""
    try:
        from cyclonedx.model import (  # noqa: PLC0415 - optional extra
            ExternalReference,
            ExternalReferenceType,
            HashAlgorithm,
            HashType,
            XsUri,
        )
        from cyclonedx.model.bom import Bom  # noqa: PLC0415
        from cyclonedx.model.component import Component, ComponentType  # noqa: PLC0415
        from cyclonedx.output.json import JsonV1Dot6  # noqa: PLC0415
        from cyclonedx.schema import SchemaVersion  # noqa: PLC0415
        from cyclonedx.validation.json import JsonStrictValidator  # noqa: PLC0415
    except ImportError:
        raise ToolError(
            "BOM export needs cyclonedx-python-lib: pip install 'aicert[bom]'"
        ) from None

    cert_sha256 = hashlib.sha256(certificate_path.read_bytes()).hexdigest()
    cert_ref = ExternalReference(
        type=ExternalReferenceType.ATTESTATION,
        url=XsUri(certificate_path.name),
        comment="aicert certificate (DSSE in-toto statement + TPM quote)",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=cert_sha256)],
    )

    def component(artifact: Artifact, role: str) -> Component:
        return Component(
            name=artifact.name,
            type=ComponentType(_COMPONENT_TYPES.get(role, "data")),
            bom_ref=_ref(role, artifact),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)],
            description=f"aicert {role} (tree digest)",
        )

    bom = Bom()
    model = prov.subjects[0]
    bom.metadata.component = Component(
        name=model.name,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=_ref("weights", model),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=model.sha256)],
        external_references=[cert_ref],
    )
    seen = {_ref("weights", model)}
    inputs = []
    for artifact, role in _all_inputs(prov):
        if _ref(role, artifact) not in seen:
            seen.add(_ref(role, artifact))
            inputs.append(component(artifact, role))
    bom.components.update(inputs)
    # The model depends on everything that made or measured it.
    bom.register_dependency(bom.metadata.component, inputs)
    bom.external_references.add(cert_ref)

    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["formulation"] = [_formula(prov)]
    text = json.dumps(doc, indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ToolError(f"the generated BOM does not validate against CycloneDX 1.6: {error}")
    try:
        out.write_text(text + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the BOM to {out}: {exc.strerror}") from None


def _ref(role: str, artifact: Artifact) -> str:
    return f"aicert:{role}:{artifact.name}:{artifact.sha256[:16]}"


def _all_inputs(prov: TrainingProvenance) -> list[tuple[Artifact, str]]:
    items = [(d, d.role) for d in prov.dependencies]
    items += [(i, i.role) for ev in prov.evaluations for i in ev.inputs]
    return items


def _formula(prov: TrainingProvenance) -> dict[str, Any]:
    model = prov.subjects[0]
    workflows: list[dict[str, Any]] = []
    if not prov.evaluation_only:
        workflows.append(
            {
                "bom-ref": f"aicert:run:training:{prov.boot_id}",
                "uid": f"{prov.boot_id}/training",
                "name": "training",
                "taskTypes": ["build"],
                "timeStart": prov.started_on,
                "timeEnd": prov.finished_on,
                "inputs": [{"resource": {"ref": _ref(d.role, d)}} for d in prov.dependencies],
                "outputs": [{"resource": {"ref": _ref("weights", model)}}],
                "steps": [{"name": "train", "commands": [{"executed": " ".join(prov.command)}]}],
            }
        )
    for ev in prov.evaluations:
        workflows.append(
            {
                "bom-ref": f"aicert:run:evaluation:{ev.name}:{prov.boot_id}",
                "uid": f"{prov.boot_id}/evaluation/{ev.name}",
                "name": f"evaluation {ev.name}",
                "taskTypes": ["test"],
                "inputs": [
                    {"resource": {"ref": _ref("weights", model)}},
                    *({"resource": {"ref": _ref(i.role, i)}} for i in ev.inputs),
                ],
                "steps": [{"name": ev.name, "commands": [{"executed": " ".join(ev.command)}]}],
                "properties": [
                    {"name": "aicert:results:sha256", "value": ev.results_sha256},
                    *(
                        {"name": f"aicert:metric:{k}", "value": json.dumps(v)}
                        for k, v in sorted(ev.metrics.items())
                    ),
                ],
            }
        )
    return {"bom-ref": f"aicert:formulation:{prov.boot_id}", "workflows": workflows}
