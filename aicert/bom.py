"""A CycloneDX 1.6 ML-BOM derived from a verified certificate.

The model is ``metadata.component``: its files are nested ``file`` components with their
plain SHA-256 (the statement's subjects), its evaluation metrics are in
``modelCard.quantitativeAnalysis.performanceMetrics``, its training data sets in
``modelCard.modelParameters.datasets``. Inputs (code, data, base model, configuration,
evaluation code and test sets) and the booted OS image are components; aicert's tree
digests and the image's root hash and UKI Authenticode digest are not the SHA-256 of any
one file, so they are properties (``aicert:tree-sha256``, ...), never ``hashes``; an OCI
environment's manifest digest is one file's SHA-256, so it is a ``hash`` as well. The
model ``dependsOn`` only what made it (the training inputs); the evaluations' inputs
appear in their ``formulation`` workflows. ``metadata.tools`` names aicert-verify, and
every command is kept as its argv, a JSON array in the property ``aicert:argv``, beside a
shell-quoted ``executed`` line. The certificate itself is an external reference of type
``attestation``. Built with ``cyclonedx-python-lib`` (the ``bom`` extra); ``formulation``
and ``modelCard``, which that library does not model yet, are added to its JSON output
and the result is validated against the 1.6 schema.
The GPUs the statement records are components of type ``device``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aicert import __version__
from aicert.verifier.errors import InputError, ToolError
from aicert.verifier.statement.provenance import Artifact, TrainingProvenance

_OCI_ROLES = ("environment", "eval-environment")
_COMPONENT_TYPES = {
    "code": "application",
    "eval-code": "application",
    "data": "data",
    "eval-data": "data",
    "config": "data",
    "base-model": "machine-learning-model",
    "weights": "machine-learning-model",
    "certificate": "data",
    "environment": "container",
    "eval-environment": "container",
}
TRAINING_ROLES = ("code", "data", "base-model", "config", "environment")
OS_IMAGE_REF = "aicert:os-image"


def export_cyclonedx(prov: TrainingProvenance, certificate_path: Path, out: Path) -> None:
    """Write the ML-BOM of ``prov`` (from a VERIFIED certificate) to ``out`` as JSON."""
    try:
        from cyclonedx.model import (  # noqa: PLC0415 - optional extra
            ExternalReference,
            ExternalReferenceType,
            HashAlgorithm,
            HashType,
            Property,
            XsUri,
        )
        from cyclonedx.model.bom import Bom  # noqa: PLC0415
        from cyclonedx.model.component import Component, ComponentType  # noqa: PLC0415
        from cyclonedx.output.json import JsonV1Dot6  # noqa: PLC0415
        from cyclonedx.schema import SchemaVersion  # noqa: PLC0415
        from cyclonedx.validation.json import JsonStrictValidator  # noqa: PLC0415
        from packageurl import PackageURL  # noqa: PLC0415 - cyclonedx's own dependency
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

    def source_references(artifact: Artifact) -> list[ExternalReference]:
        if artifact.source.startswith("https://"):
            kind = ExternalReferenceType.DISTRIBUTION
        elif artifact.source.startswith("git+"):
            kind = ExternalReferenceType.VCS
        else:
            return []
        return [ExternalReference(type=kind, url=XsUri(artifact.source))]

    def component(artifact: Artifact, role: str) -> Component:
        oci = role in _OCI_ROLES
        digest_name = "aicert:oci-manifest-sha256" if oci else "aicert:tree-sha256"
        props = [Property(name=digest_name, value=artifact.sha256)]
        if artifact.source:
            props.append(Property(name="aicert:source", value=artifact.source))
        return Component(
            name=artifact.name,
            type=ComponentType(_COMPONENT_TYPES.get(role, "data")),
            bom_ref=_ref(role, artifact),
            description=f"aicert {role} input" + (" (OCI image)" if oci else ""),
            properties=props,
            external_references=source_references(artifact),
            # An environment's digest is its image manifest's SHA-256: a real file hash.
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)] if oci else [],
            purl=_oci_purl(PackageURL, artifact, role),
        )

    bom = Bom()
    bom.metadata.tools.components.add(
        Component(
            type=ComponentType.APPLICATION,
            name="aicert-verify",
            version=__version__,
            description="verified the certificate and derived this BOM from it",
        )
    )
    model = prov.subjects[0]
    bom.metadata.component = Component(
        name=model.name,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=_ref("weights", model),
        properties=[
            Property(name="aicert:tree-sha256", value=model.sha256),
            Property(name="aicert:file-count", value=str(model.files)),
        ],
        external_references=[cert_ref],
        components=[
            Component(
                name=f.name,
                type=ComponentType.FILE,
                bom_ref=f"aicert:file:{f.name}",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)],
            )
            for f in prov.file_subjects
        ],
    )
    image = _os_image(prov, Component, ComponentType, Property)
    seen = {_ref("weights", model)}
    training: list[Component] = []
    for artifact, role in _all_inputs(prov):
        ref = _ref(role, artifact)
        if ref in seen:
            continue
        seen.add(ref)
        made = component(artifact, role)
        bom.components.add(made)
        if role in TRAINING_ROLES:
            training.append(made)
    if image is not None:
        bom.components.add(image)
    for gpu in prov.gpus:
        bom.components.add(
            Component(
                name=gpu.model,
                type=ComponentType.DEVICE,
                bom_ref=f"aicert:gpu:{gpu.uuid}",
                version=gpu.vbios_version,
                description="GPU the training ran with, as NVML reported it",
                properties=[
                    Property(name="aicert:gpu-uuid", value=gpu.uuid),
                    Property(name="aicert:driver-version", value=gpu.driver_version),
                    Property(name="aicert:vbios-version", value=gpu.vbios_version),
                    Property(name="aicert:cc-mode", value=gpu.cc_mode),
                    Property(
                        name="aicert:nvidia-attestation",
                        value="verified" if gpu.attestation is not None else "none",
                    ),
                ],
            )
        )
    # The model depends on what made it; evaluations only measured it (see formulation).
    bom.register_dependency(bom.metadata.component, training)
    bom.external_references.add(cert_ref)

    with warnings.catch_warnings():
        # An evaluation-only job's model has no dependencies the certificate knows of.
        warnings.filterwarnings("ignore", "The Component this BOM is describing", UserWarning)
        doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(prov)
    doc["formulation"] = [_formula(prov, image is not None)]
    text = json.dumps(doc, indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ToolError(f"the generated BOM does not validate against CycloneDX 1.6: {error}")
    try:
        out.write_text(text + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the BOM to {out}: {exc.strerror}") from None


def _os_image(prov: TrainingProvenance, component: Any, kind: Any, prop: Any) -> Any:
    """The booted OS image as a component, when the statement names it."""
    props = []
    if prov.image.roothash:
        props.append(prop(name="aicert:dm-verity-roothash", value=prov.image.roothash))
    if prov.image.uki_authenticode:
        props.append(prop(name="aicert:uki-authenticode-sha256", value=prov.image.uki_authenticode))
    if not props:
        return None
    return component(
        name="aicert OS image",
        type=kind.OPERATING_SYSTEM,
        bom_ref=OS_IMAGE_REF,
        description="the measured image the job ran in (dm-verity root, UKI)",
        properties=props,
    )


def _oci_purl(parse: Any, artifact: Artifact, role: str) -> Any:
    """An environment's package URL (its recorded source), when it is one."""
    if role not in _OCI_ROLES or not artifact.source.startswith("pkg:oci/"):
        return None
    try:
        return parse.from_string(artifact.source)
    except ValueError:
        raise InputError(
            f"environment {artifact.name}: {artifact.source!r} is not a purl"
        ) from None


def _ref(role: str, artifact: Artifact) -> str:
    return f"aicert:{role}:{artifact.name}:{artifact.sha256[:16]}"


def _all_inputs(prov: TrainingProvenance) -> list[tuple[Artifact, str]]:
    items = [(d, d.role) for d in prov.dependencies]
    items += [(i, i.role) for ev in prov.evaluations for i in ev.inputs]
    return items


def _model_card(prov: TrainingProvenance) -> dict[str, Any]:
    metrics = [
        {"type": name, "value": json.dumps(value), "slice": ev.name}
        for ev in prov.evaluations
        for name, value in sorted(ev.metrics.items())
    ]
    card: dict[str, Any] = {"bom-ref": f"aicert:model-card:{prov.boot_id}"}
    datasets = [{"ref": _ref(d.role, d)} for d in prov.dependencies if d.role == "data"]
    if datasets:
        card["modelParameters"] = {"datasets": datasets}
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    return card


def _command(argv: Sequence[str]) -> dict[str, Any]:
    return {
        "executed": shlex.join(argv),
        "properties": [{"name": "aicert:argv", "value": json.dumps(list(argv))}],
    }


def _formula(prov: TrainingProvenance, has_image: bool) -> dict[str, Any]:
    model = prov.subjects[0]
    environment = [{"resource": {"ref": OS_IMAGE_REF}}] if has_image else []
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
                "inputs": [
                    *environment,
                    *({"resource": {"ref": _ref(d.role, d)}} for d in prov.dependencies),
                ],
                "outputs": [{"resource": {"ref": _ref("weights", model)}}],
                "steps": [{"name": "train", "commands": [_command(prov.command)]}],
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
                    *environment,
                    {"resource": {"ref": _ref("weights", model)}},
                    *({"resource": {"ref": _ref(i.role, i)}} for i in ev.inputs),
                ],
                "steps": [{"name": ev.name, "commands": [_command(ev.command)]}],
                "properties": [
                    {"name": "aicert:results:tree-sha256", "value": ev.results_sha256},
                    *(
                        {"name": f"aicert:metric:{k}", "value": json.dumps(v)}
                        for k, v in sorted(ev.metrics.items())
                    ),
                ],
            }
        )
    return {"bom-ref": f"aicert:formulation:{prov.boot_id}", "workflows": workflows}
