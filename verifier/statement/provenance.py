"""The certificate's statement: an in-toto Statement v1 with a SLSA Provenance v1 predicate.

``subject`` = one entry per file of the certified weights with its plain SHA-256, so
generic tools can match a file; the weights' tree digest, which binds the whole tree,
is ``predicate.aicert_weights``. ``resolvedDependencies`` = the measured inputs with
their tree digests and source URIs; ``builderDependencies`` = the booted image;
``externalParameters`` = what the client asked for (command, output path, nonce, and
what ran as ``/``: the image's own root or an environment input, with the environment's
Entrypoint when the job asked for it);
``aicert_gpus`` = the GPUs the agent saw, with their attestation evidence.
Facts only aicert has travel as ``aicert_*`` extension fields, which SLSA consumers
ignore. Digest sets name a tree digest ``aicert-tree-sha256``; ``sha256`` always is the
SHA-256 of a file's bytes. See docs/certificate-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..boot.image_identity import ImageIdentity
from ..digest.file_subjects import MAX_FILE_SUBJECTS, FileSubject
from ..errors import FormatError
from ..gpu.record import GpuRecord, parse_gpus
from ..logs.session_events import IMAGE_ROOT
from .canonical_json import JsonValue, canonicalize, parse_json
from .uris import check_uri

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:aicert:build-type:training-job:v1"
# A job that only evaluates existing weights (supplied as an input) runs no command.
EVALUATION_BUILD_TYPE = "urn:aicert:build-type:evaluation-job:v1"
BUILDER_ID = "urn:aicert:agent"
# Digest-set keys (in-toto allows algorithm names of one's own; "sha256" stays a file's).
TREE_DIGEST = "aicert-tree-sha256"
VERITY_DIGEST = "aicert-dm-verity-sha256"
AUTHENTICODE_DIGEST = "aicert-authenticode-sha256"
# An OCI environment is named by its image manifest's SHA-256: a file's digest, "sha256".
OCI_ROLES = ("environment", "eval-environment")
ROOT_FS_NAME = "root-filesystem"
UKI_NAME = "uki"


@dataclass(frozen=True)
class Artifact:
    """A named file tree and its aicert tree digest (hex); ``source`` is its URI.

    ``files`` is the number of files in a certified tree (``aicert_weights``).
    """

    name: str
    sha256: str
    role: str = ""
    source: str = ""
    files: int = 0


@dataclass(frozen=True)
class Evaluation:
    """One benchmark run on the certified weights, with its inputs and reported metrics."""

    name: str
    command: tuple[str, ...]
    inputs: tuple[Artifact, ...]
    weights_sha256: str
    results_sha256: str
    metrics: Mapping[str, int | float]
    exit_status: int
    root: str = IMAGE_ROOT
    entrypoint: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "name": self.name,
            "command": list(self.command),
            "root": self.root,
            "entrypoint": list(self.entrypoint),
            "inputs": [_dependency(i) for i in self.inputs],
            "weights": {TREE_DIGEST: self.weights_sha256},
            "results": {TREE_DIGEST: self.results_sha256},
            "metrics": dict(self.metrics),
            "exitStatus": self.exit_status,
        }


@dataclass(frozen=True)
class TrainingProvenance:
    """Everything the statement says, as typed data.

    ``subjects`` are the certified trees by tree digest (what the CEL ``output`` events
    and the evaluations name); ``file_subjects`` are the in-toto subjects, their files.
    """

    subjects: tuple[Artifact, ...]
    dependencies: tuple[Artifact, ...]
    command: tuple[str, ...]
    output_path: str
    nonce: str
    agent_version: str
    boot_id: str
    agent_key_sha256: str
    owner: str
    exit_status: int
    started_on: str
    finished_on: str
    evaluations: tuple[Evaluation, ...] = ()
    file_subjects: tuple[FileSubject, ...] = ()
    image: ImageIdentity = field(default_factory=ImageIdentity)
    gpus: tuple[GpuRecord, ...] = ()
    root: str = IMAGE_ROOT
    entrypoint: tuple[str, ...] = ()

    @property
    def evaluation_only(self) -> bool:
        """True for a job that ran no training command, only evaluations."""
        return not self.command

    def to_statement(self) -> dict[str, JsonValue]:
        params: dict[str, JsonValue] = {"nonce": self.nonce}
        if not self.evaluation_only:
            params |= {
                "command": list(self.command),
                "outputPath": self.output_path,
                "root": self.root,
                "entrypoint": list(self.entrypoint),
            }
        predicate: dict[str, JsonValue] = {
            "buildDefinition": {
                "buildType": EVALUATION_BUILD_TYPE if self.evaluation_only else BUILD_TYPE,
                "externalParameters": params,
                "resolvedDependencies": [_dependency(d) for d in self.dependencies],
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"aicert-agent": self.agent_version},
                    "builderDependencies": _image_dependencies(self.image),
                },
                "metadata": {
                    "invocationId": self.boot_id,
                    "startedOn": self.started_on,
                    "finishedOn": self.finished_on,
                },
            },
            "aicert_session": {
                "bootId": self.boot_id,
                "agentKeySha256": self.agent_key_sha256,
                "owner": self.owner,
            },
            "aicert_exitStatus": self.exit_status,
            "aicert_weights": [
                {"name": s.name, "digest": {TREE_DIGEST: s.sha256}, "fileCount": s.files}
                for s in self.subjects
            ],
        }
        if self.evaluations:
            predicate["aicert_evaluations"] = [e.to_json() for e in self.evaluations]
        if self.gpus:
            predicate["aicert_gpus"] = [g.to_json() for g in self.gpus]
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": f.name, "digest": {"sha256": f.sha256}} for f in self.file_subjects
            ],
            "predicateType": SLSA_PROVENANCE_V1,
            "predicate": predicate,
        }

    def statement_bytes(self) -> bytes:
        """The statement as signed and quoted: RFC 8785 canonical JSON."""
        return canonicalize(self.to_statement())


def _image_dependencies(image: ImageIdentity) -> list[JsonValue]:
    found: list[JsonValue] = []
    if image.roothash:
        found.append({"name": ROOT_FS_NAME, "digest": {VERITY_DIGEST: image.roothash}})
    if image.uki_authenticode:
        found.append({"name": UKI_NAME, "digest": {AUTHENTICODE_DIGEST: image.uki_authenticode}})
    return found


def _dependency(artifact: Artifact) -> dict[str, JsonValue]:
    entry: dict[str, JsonValue] = {
        "name": artifact.name,
        "digest": {_digest_key(artifact.role): artifact.sha256},
        "annotations": {"aicert_role": artifact.role},
    }
    if artifact.source:
        entry["uri"] = artifact.source
    return entry


def parse_statement(payload: bytes) -> TrainingProvenance:
    """Read the exact statement bytes that were quoted (never a re-serialisation)."""
    doc = _obj(parse_json(payload, "statement"), "statement")
    if doc.get("_type") != STATEMENT_TYPE:
        raise FormatError(f"statement _type is not {STATEMENT_TYPE}")
    if doc.get("predicateType") != SLSA_PROVENANCE_V1:
        raise FormatError(f"statement predicateType is not {SLSA_PROVENANCE_V1}")
    predicate = _obj(doc.get("predicate"), "predicate")
    build = _obj(predicate.get("buildDefinition"), "buildDefinition")
    build_type = build.get("buildType")
    if build_type not in (BUILD_TYPE, EVALUATION_BUILD_TYPE):
        raise FormatError(f"buildType {build_type!r} is not an aicert job type")
    params = _obj(build.get("externalParameters"), "externalParameters")
    if build_type == EVALUATION_BUILD_TYPE:
        if set(params) & {"command", "outputPath", "root", "entrypoint"}:
            raise FormatError("an evaluation-only statement cannot name a training command")
        params = {**params, "command": [], "outputPath": "", "root": IMAGE_ROOT, "entrypoint": []}
    run = _obj(predicate.get("runDetails"), "runDetails")
    builder = _obj(run.get("builder"), "runDetails.builder")
    if builder.get("id") != BUILDER_ID:
        raise FormatError(f"builder id is not {BUILDER_ID}")
    metadata = _obj(run.get("metadata"), "runDetails.metadata")
    session = _obj(predicate.get("aicert_session"), "aicert_session")
    trees = tuple(
        _tree(t, i) for i, t in enumerate(_list(predicate.get("aicert_weights"), "aicert_weights"))
    )
    files = tuple(_subject(s, i) for i, s in enumerate(_list(doc.get("subject"), "subject")))
    _check_subjects(trees, files)
    prov = TrainingProvenance(
        subjects=trees,
        file_subjects=files,
        image=_image(_list(builder.get("builderDependencies", []), "builderDependencies")),
        dependencies=tuple(
            _dep(d, i)
            for i, d in enumerate(_list(build.get("resolvedDependencies"), "resolvedDependencies"))
        ),
        command=tuple(_str(c, "command element") for c in _list(params.get("command"), "command")),
        output_path=_str(params.get("outputPath"), "outputPath"),
        root=_str(params.get("root"), "root"),
        entrypoint=_strings(params.get("entrypoint"), "entrypoint"),
        nonce=_str(params.get("nonce"), "nonce"),
        agent_version=_str(
            _obj(builder.get("version"), "builder.version").get("aicert-agent"), "agent version"
        ),
        boot_id=_str(session.get("bootId"), "aicert_session.bootId"),
        agent_key_sha256=_str(session.get("agentKeySha256"), "aicert_session.agentKeySha256"),
        owner=_str(session.get("owner"), "aicert_session.owner"),
        exit_status=_int(predicate.get("aicert_exitStatus"), "aicert_exitStatus"),
        started_on=_str(metadata.get("startedOn"), "startedOn"),
        finished_on=_str(metadata.get("finishedOn"), "finishedOn"),
        evaluations=tuple(
            _evaluation(e, i)
            for i, e in enumerate(_list(predicate.get("aicert_evaluations", []), "evaluations"))
        ),
        gpus=parse_gpus(predicate.get("aicert_gpus")),
    )
    if (build_type == EVALUATION_BUILD_TYPE) != prov.evaluation_only or (
        prov.evaluation_only and not prov.evaluations
    ):
        raise FormatError("statement: buildType does not fit the job it describes")
    if not prov.evaluation_only:
        _check_root("the training", prov.root, prov.entrypoint, prov.dependencies, "environment")
    for ev in prov.evaluations:
        _check_root(
            f"evaluation {ev.name!r}", ev.root, ev.entrypoint, ev.inputs, "eval-environment"
        )
    return prov


def _check_root(
    what: str, root: str, entrypoint: tuple[str, ...], inputs: tuple[Artifact, ...], role: str
) -> None:
    """A command runs in its one environment input if it has one, else in the image's root."""
    environments = [i.name for i in inputs if i.role == role]
    expected = environments[0] if len(environments) == 1 else IMAGE_ROOT
    if len(environments) > 1 or root != expected:
        raise FormatError(
            f"statement: {what} names root {root!r} but its environment inputs are "
            f"{environments or 'none'}"
        )
    if entrypoint and root == IMAGE_ROOT:
        raise FormatError(f"statement: {what} has an entrypoint but no environment")


def _evaluation(raw: object, i: int) -> Evaluation:
    where = f"evaluation {i}"
    obj = _obj(raw, where)
    metrics = _obj(obj.get("metrics"), f"{where} metrics")
    for key, value in metrics.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise FormatError(f"statement: {where} metric {key!r} must be a number")
    return Evaluation(
        name=_str(obj.get("name"), f"{where} name"),
        command=tuple(_str(c, f"{where} command") for c in _list(obj.get("command"), where)),
        inputs=tuple(_dep(d, j) for j, d in enumerate(_list(obj.get("inputs"), f"{where} inputs"))),
        weights_sha256=_hex(
            _obj(obj.get("weights"), f"{where} weights"), TREE_DIGEST, f"{where} weights"
        ),
        results_sha256=_hex(
            _obj(obj.get("results"), f"{where} results"), TREE_DIGEST, f"{where} results"
        ),
        metrics=dict(metrics),
        exit_status=_int(obj.get("exitStatus"), f"{where} exitStatus"),
        root=_str(obj.get("root"), f"{where} root"),
        entrypoint=_strings(obj.get("entrypoint"), f"{where} entrypoint"),
    )


def _subject(raw: object, i: int) -> FileSubject:
    obj = _obj(raw, f"subject {i}")
    digest = _obj(obj.get("digest"), f"subject {i} digest")
    name = _str(obj.get("name"), f"subject {i} name")
    if not name:
        raise FormatError(f"statement: subject {i} has an empty name")
    return FileSubject(name, _hex(digest, "sha256", f"subject {i}"))


def _tree(raw: object, i: int) -> Artifact:
    where = f"aicert_weights {i}"
    obj = _obj(raw, where)
    files = _int(obj.get("fileCount"), f"{where} fileCount")
    if files < 1:
        raise FormatError(f"statement: {where} must hold at least one file")
    return Artifact(
        name=_str(obj.get("name"), f"{where} name"),
        sha256=_hex(_obj(obj.get("digest"), f"{where} digest"), TREE_DIGEST, where),
        files=files,
    )


def _check_subjects(trees: tuple[Artifact, ...], files: tuple[FileSubject, ...]) -> None:
    """Each certified tree lists its files (all, or the largest MAX_FILE_SUBJECTS) as subjects
    named ``<tree>/<path>`` (a tree that is one file: ``<tree>``), and nothing else is one."""
    if not trees:
        raise FormatError("statement: aicert_weights names no certified weights")
    names = {t.name for t in trees}
    if len(names) != len(trees) or any(not n or "/" in n for n in names):
        raise FormatError("statement: aicert_weights names must be unique and contain no '/'")
    if len({f.name for f in files}) != len(files):
        raise FormatError("statement: subject names repeat")
    count = dict.fromkeys(names, 0)
    whole = set()
    for f in files:
        tree, slash, path = f.name.partition("/")
        if tree not in count or (slash and not path):
            raise FormatError(f"statement: subject {f.name!r} belongs to no certified weights")
        count[tree] += 1
        if not slash:
            whole.add(tree)
    for t in trees:
        want = min(t.files, MAX_FILE_SUBJECTS)
        if count[t.name] != want or (t.name in whole and t.files != 1):
            raise FormatError(
                f"statement: weights {t.name!r} hold {t.files} files, but {count[t.name]} "
                f"subjects name them (expected {want})"
            )


def _image(raw: list[Any]) -> ImageIdentity:
    facts = {ROOT_FS_NAME: VERITY_DIGEST, UKI_NAME: AUTHENTICODE_DIGEST}
    found: dict[str, str] = {}
    for i, entry in enumerate(raw):
        obj = _obj(entry, f"builderDependencies {i}")
        name = _str(obj.get("name"), f"builderDependencies {i} name")
        if name not in facts or name in found or set(obj) != {"name", "digest"}:
            raise FormatError(f"statement: builderDependencies {i} ({name!r}) is not an image fact")
        digest = _obj(obj.get("digest"), f"builderDependencies {i} digest")
        if set(digest) != {facts[name]}:
            raise FormatError(f"statement: builderDependencies {i} digest must be {facts[name]}")
        found[name] = _hex(digest, facts[name], f"builderDependencies {i}")
    return ImageIdentity(found.get(ROOT_FS_NAME, ""), found.get(UKI_NAME, ""))


def _dep(raw: object, i: int) -> Artifact:
    obj = _obj(raw, f"dependency {i}")
    digest = _obj(obj.get("digest"), f"dependency {i} digest")
    annotations = _obj(obj.get("annotations"), f"dependency {i} annotations")
    role = _str(annotations.get("aicert_role"), f"dependency {i} aicert_role")
    source = ""
    if "uri" in obj:
        source = check_uri(
            _str(obj["uri"], f"dependency {i} uri"), f"statement: dependency {i} uri"
        )
    return Artifact(
        name=_str(obj.get("name"), f"dependency {i} name"),
        sha256=_hex(digest, _digest_key(role), f"dependency {i}"),
        role=role,
        source=source,
    )


def _digest_key(role: str) -> str:
    return "sha256" if role in OCI_ROLES else TREE_DIGEST


def _hex(digest: Mapping[str, Any], alg: str, where: str) -> str:
    value = _str(digest.get(alg), f"{where} {alg} digest")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise FormatError(f"statement: {where} {alg} digest must be 64 lowercase hex digits")
    return value


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"statement: {where} must be an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"statement: {where} must be an array")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where} element") for v in _list(value, where))


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"statement: {where} must be a string")
    return value


def _int(value: object, where: str) -> int:
    if type(value) is not int:
        raise FormatError(f"statement: {where} must be an integer")
    return value
