"""The job file: what an AI builder wants trained, in TOML (see docs/job-file.md).

::

    nonce = "9f2c..."                 # optional; a fresh one is generated when absent
    command = ["python3", "train.py", "--epochs", "3"]
    output = "model"

    [code]                            # exactly one of: path | git + commit | url + sha256
    path = "train/"

    [[data]]                          # any number; each needs a name
    name = "corpus"
    url = "https://example.org/corpus.tar"
    sha256 = "<sha256 of the file>"

    [base_model]                      # optional
    path = "base/"
    expected = "<tree digest>"        # optional on every input: refuse anything else

    [environment]                     # optional: exactly one of image (by digest) | path
    image = "registry.example/team/trainer@sha256:<manifest digest>"

    [config]                          # free-form; measured as the job configuration
    epochs = 3

    [azure]                           # optional: the VM for `run --platform azure`
    vm_size = "Standard_NC4as_T4_v3"
    scratch_gib = 256

    [[evaluation]]                    # any number: benchmarks run on the trained weights
    name = "accuracy"
    code = { path = "eval/" }         # an input as above (role eval-code)
    environment = { path = "eval-env.oci.tar" }   # optional, as above (role eval-environment)
    data = [{ name = "test-set", path = "test.csv" }]   # role eval-data
    command = ["python3", "eval.py"]
    results = "results.json"          # written under $AICERT_OUTPUT: {"metric": number, ...}

An evaluation-only job has no ``command``, ``output``, ``code``, ``data`` or
``base_model``; it evaluates existing weights::

    weights = { path = "model/", sha256 = "<expected tree digest, optional>" }
    linked_certificate = "model.aicert.json"   # optional: the weights' training certificate

Relative paths are relative to the job file's directory. Parsing fails with one line
naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aicert.builder.platforms.azure.sizes import VmSizeError, check_vm_size
from aicert.verifier.errors import FormatError, InputError
from aicert.verifier.input_file import MAX_JOB_FILE_BYTES, read_input_file

from aicert.oci_reference import ImageReferenceError, check_plain_http_registry, parse_reference

NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SHA256: Final = re.compile(r"[0-9a-f]{64}")
COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
NONCE: Final = re.compile(r"(?:[0-9a-f]{2}){8,64}")
NONCE_BYTES: Final = 32
MAX_JSON_INT: Final = 2**53 - 1
RESERVED_NAMES: Final = frozenset({"job-config"})
WEIGHTS_INPUT: Final = "weights"
CERTIFICATE_INPUT: Final = "training-certificate"
ENVIRONMENT_INPUT: Final = "environment"

_TOP_KEYS: Final = frozenset(
    {
        "nonce",
        "command",
        "output",
        "code",
        "data",
        "base_model",
        "environment",
        "config",
        "evaluation",
        "weights",
        "linked_certificate",
        "azure",
    }
)
_TRAINING_KEYS: Final = ("command", "output", "code", "data", "base_model", "environment")
_INPUT_KEYS: Final = frozenset({"name", "path", "git", "commit", "url", "sha256", "expected"})
_EVALUATION_KEYS: Final = frozenset({"name", "code", "data", "command", "results", "environment"})
_AZURE_KEYS: Final = frozenset({"vm_size", "scratch_gib"})
# Azure size names: "Standard_" and the family, vCPUs, features and version.
VM_SIZE: Final = re.compile(r"Standard_[A-Za-z0-9_]{1,60}")
MAX_SCRATCH_GIB: Final = 32767  # the largest managed disk Azure creates


@dataclass(frozen=True)
class LocalSource:
    """A file or directory on this machine, uploaded to the agent."""

    path: Path


@dataclass(frozen=True)
class GitSource:
    """A git repository the agent clones and checks out at ``commit``."""

    url: str
    commit: str


@dataclass(frozen=True)
class UrlSource:
    """One file the agent downloads over https; its SHA-256 must be ``sha256``."""

    url: str
    sha256: str


@dataclass(frozen=True)
class ImageSource:
    """An OCI image the agent pulls from its registry by digest:
    ``REGISTRY/NAME@sha256:HEX`` (checked with the agent's own reference rules)."""

    reference: str
    plain_http: bool = False  # a local test registry without TLS (see docs/environments.md)


@dataclass(frozen=True)
class ArchiveSource:
    """An OCI image-layout archive (``skopeo copy ... oci-archive:FILE``) on this machine,
    uploaded to the agent."""

    path: Path


InputSource = LocalSource | GitSource | UrlSource | ImageSource | ArchiveSource


@dataclass(frozen=True)
class AzurePlacement:
    """The ``[azure]`` table: the VM a job asks for on Azure (not measured; the
    command line's --vm-size and --scratch-gib take precedence)."""

    vm_size: str | None = None
    scratch_gib: int | None = None


@dataclass(frozen=True)
class JobInput:
    name: str
    role: str
    source: InputSource
    expected_sha256: str | None = None


@dataclass(frozen=True)
class EvaluationRun:
    """What the agent runs for one evaluation: ``command`` writes ``results``;
    ``use_entrypoint`` runs its environment's Entrypoint before the command."""

    name: str
    command: tuple[str, ...]
    results: str
    use_entrypoint: bool = dataclasses.field(default=False, kw_only=True)


@dataclass(frozen=True)
class JobEvaluation(EvaluationRun):
    """An ``[[evaluation]]`` table: the run and its inputs (code, then data sets)."""

    code: JobInput
    data: tuple[JobInput, ...] = ()
    environment: JobInput | None = None

    @property
    def inputs(self) -> tuple[JobInput, ...]:
        """The environment (if any), the code, then the data sets."""
        environment = () if self.environment is None else (self.environment,)
        return (*environment, self.code, *self.data)


@dataclass(frozen=True)
class JobFile:
    """A checked job file; an evaluation-only job has no code or command but ``weights``."""

    path: Path
    code: JobInput | None
    data: tuple[JobInput, ...]
    base_model: JobInput | None
    command: tuple[str, ...]
    output: str
    config: Mapping[str, Any]
    nonce: str
    nonce_generated: bool
    evaluations: tuple[JobEvaluation, ...] = ()
    weights: JobInput | None = None
    linked_certificate: Path | None = None
    azure: AzurePlacement = AzurePlacement()
    environment: JobInput | None = None
    use_entrypoint: bool = False  # run the environment's Entrypoint before the command

    @property
    def evaluation_only(self) -> bool:
        return self.weights is not None

    @property
    def inputs(self) -> tuple[JobInput, ...]:
        """Every job input in the order they are sent: the environment (if any), code,
        base model, data sets, or (evaluation only) weights and the linked certificate."""
        if self.weights is not None:
            linked = ()
            if self.linked_certificate is not None:
                linked = (
                    JobInput(
                        CERTIFICATE_INPUT, "certificate", LocalSource(self.linked_certificate)
                    ),
                )
            return (self.weights, *linked)
        assert self.code is not None  # noqa: S101 - parse_job requires code for training
        base = () if self.base_model is None else (self.base_model,)
        environment = () if self.environment is None else (self.environment,)
        return (*environment, self.code, *base, *self.data)


class _Where:
    """Error messages that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> FormatError:
        return FormatError(f"{self.path}: {key}: {message}")


def load_job_file(path: Path) -> JobFile:
    """Read and check a job file; FormatError (or InputError) naming file and key."""
    text = read_input_file(path, "job file", MAX_JOB_FILE_BYTES)
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{path}: not valid TOML: {exc}") from None
    return parse_job(doc, path)


def parse_job(doc: Mapping[str, Any], path: Path) -> JobFile:
    """Check a parsed TOML document; relative paths resolve against ``path``'s directory."""
    where = _Where(path)
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise where.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    base = path.parent
    evaluations = _evaluations(doc.get("evaluation", []), base, where)
    if "weights" in doc:
        training = next((k for k in _TRAINING_KEYS if k in doc), None)
        if training is not None:
            raise where.fail(training, "an evaluation-only job (with weights) has no training")
        if not evaluations:
            raise where.fail("evaluation", "an evaluation-only job needs [[evaluation]] tables")
        weights = _weights(doc["weights"], base, where)
        linked = _linked_certificate(doc.get("linked_certificate"), base, where)
        code, data, base_model, command, output = None, (), None, (), ""
        environment = None
    else:
        if "linked_certificate" in doc:
            raise where.fail("linked_certificate", "only goes with weights (evaluation only)")
        weights, linked = None, None
        code, data, base_model = _training_inputs(doc, base, where)
        environment = _environment(
            doc.get("environment"), "environment", "environment", base, where
        )
        _unique(
            [
                ("environment", environment),
                ("code", code),
                ("base_model", base_model),
                *_keyed("data", data),
            ],
            where,
        )
        command = _command(doc.get("command"), "command", where)
        output = doc.get("output")
        if not isinstance(output, str) or not NAME.fullmatch(output):
            raise where.fail("output", _name_rule())
    config = doc.get("config", {})
    if not isinstance(config, dict):
        raise where.fail("config", "must be a table ([config])")
    _check_json(config, "config", where)
    nonce = doc.get("nonce")
    generated = nonce is None
    if nonce is None:
        nonce = secrets.token_hex(NONCE_BYTES)
    elif not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise where.fail("nonce", "must be 8 to 64 bytes as lowercase hex")
    return JobFile(
        path=path,
        code=code,
        data=data,
        base_model=base_model,
        command=command,
        output=output,
        config=config,
        nonce=nonce,
        nonce_generated=generated,
        evaluations=evaluations,
        weights=weights,
        linked_certificate=linked,
        azure=_azure(doc.get("azure", {}), where),
        environment=environment,
        use_entrypoint=_use_entrypoint(doc.get("environment"), "environment", where),
    )


def _azure(raw: object, where: _Where) -> AzurePlacement:
    if not isinstance(raw, dict):
        raise where.fail("azure", "must be a table ([azure])")
    unknown = sorted(set(raw) - _AZURE_KEYS)
    if unknown:
        raise where.fail(
            f"azure.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_AZURE_KEYS))})"
        )
    vm_size = raw.get("vm_size")
    if vm_size is not None and not (isinstance(vm_size, str) and VM_SIZE.fullmatch(vm_size)):
        raise where.fail("azure.vm_size", "an Azure VM size such as Standard_NC4as_T4_v3")
    if vm_size is not None:
        try:
            check_vm_size(vm_size)
        except VmSizeError as exc:
            raise where.fail("azure.vm_size", exc.message) from None
    scratch_gib = raw.get("scratch_gib")
    if scratch_gib is not None and not (
        type(scratch_gib) is int and 1 <= scratch_gib <= MAX_SCRATCH_GIB
    ):
        raise where.fail("azure.scratch_gib", f"a whole number of GiB, 1 to {MAX_SCRATCH_GIB}")
    return AzurePlacement(vm_size, scratch_gib)


def _training_inputs(
    doc: Mapping[str, Any], base: Path, where: _Where
) -> tuple[JobInput, tuple[JobInput, ...], JobInput | None]:
    if "code" not in doc:
        raise where.fail("code", "missing: the training code is required")
    code = _input(doc["code"], "code", "code", "code", base, where)
    data_raw = doc.get("data", [])
    if not isinstance(data_raw, list):
        raise where.fail("data", "must be an array of tables ([[data]])")
    data = tuple(
        _input(item, f"data[{i}]", "data", None, base, where) for i, item in enumerate(data_raw)
    )
    base_model = None
    if "base_model" in doc:
        base_model = _input(
            doc["base_model"], "base_model", "base-model", "base-model", base, where
        )
    return code, data, base_model


def _unique(items: list[tuple[str, JobInput | None]], where: _Where) -> None:
    names: dict[str, str] = {}
    for key, item in items:
        if item is None:
            continue
        if item.name in names:
            raise where.fail(key, f"name {item.name!r} is also used by {names[item.name]}")
        names[item.name] = key


def _command(command: object, key: str, where: _Where) -> tuple[str, ...]:
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) and a and "\x00" not in a for a in command)
    ):
        raise where.fail(key, "must be a non-empty array of non-empty strings")
    return tuple(command)


def _evaluations(raw: object, base: Path, where: _Where) -> tuple[JobEvaluation, ...]:
    if not isinstance(raw, list):
        raise where.fail("evaluation", "must be an array of tables ([[evaluation]])")
    evaluations: list[JobEvaluation] = []
    for i, item in enumerate(raw):
        key = f"evaluation[{i}]"
        if not isinstance(item, dict):
            raise where.fail(key, "must be a table")
        unknown = sorted(set(item) - _EVALUATION_KEYS)
        if unknown:
            raise where.fail(f"{key}.{unknown[0]}", "unknown key")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise where.fail(f"{key}.name", _name_rule())
        if any(e.name == name for e in evaluations):
            raise where.fail(f"{key}.name", f"another evaluation is named {name!r}")
        if "code" not in item:
            raise where.fail(f"{key}.code", "missing: the evaluation's code is required")
        code = _input(item["code"], f"{key}.code", "eval-code", "code", base, where)
        data_raw = item.get("data", [])
        if not isinstance(data_raw, list):
            raise where.fail(f"{key}.data", "must be an array of tables")
        data = tuple(
            _input(d, f"{key}.data[{j}]", "eval-data", None, base, where)
            for j, d in enumerate(data_raw)
        )
        environment = _environment(
            item.get("environment"), f"{key}.environment", "eval-environment", base, where
        )
        _unique(
            [
                (f"{key}.environment", environment),
                (f"{key}.code", code),
                *_keyed(f"{key}.data", data),
            ],
            where,
        )
        results = item.get("results")
        if (
            not isinstance(results, str)
            or not results
            or not all(NAME.fullmatch(part) for part in results.split("/"))
        ):
            raise where.fail(
                f"{key}.results", "must be a relative path of names (" + _name_rule() + ")"
            )
        command = _command(item.get("command"), f"{key}.command", where)
        use_entrypoint = _use_entrypoint(item.get("environment"), f"{key}.environment", where)
        evaluations.append(
            JobEvaluation(
                name, command, results, code, data, environment, use_entrypoint=use_entrypoint
            )
        )
    return tuple(evaluations)


def _environment(raw: object, key: str, role: str, base: Path, where: _Where) -> JobInput | None:
    """An ``environment`` table: exactly one of ``image`` (by digest) or ``path``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise where.fail(
            key,
            'must be a table: { image = "REGISTRY/NAME@sha256:..." } or { path = "env.oci.tar" }',
        )
    unknown = sorted(set(raw) - {"image", "path", "use_entrypoint", "plain_http"})
    if unknown:
        raise where.fail(
            f"{key}.{unknown[0]}", "unknown key (allowed: image, path, use_entrypoint, plain_http)"
        )
    plain_http = raw.get("plain_http", False)
    if not isinstance(plain_http, bool):
        raise where.fail(f"{key}.plain_http", "must be true or false")
    sources = {k: v for k, v in raw.items() if k not in ("use_entrypoint", "plain_http")}
    if len(sources) != 1:
        raise where.fail(key, "give exactly one of image (REGISTRY/NAME@sha256:DIGEST) or path")
    ((field, value),) = sources.items()
    if not isinstance(value, str) or not value:
        raise where.fail(f"{key}.{field}", "must be a non-empty string")
    source: InputSource
    if field == "image":
        try:
            reference = parse_reference(value)
            if plain_http:
                check_plain_http_registry(reference.registry)
        except ImageReferenceError as exc:
            raise where.fail(
                f"{key}.{'plain_http' if plain_http else 'image'}", exc.message
            ) from None
        source = ImageSource(value, plain_http)
    else:
        if plain_http:
            raise where.fail(f"{key}.plain_http", "only an image pulled from a registry has it")
        source = ArchiveSource(_resolve(value, base))
    return JobInput(ENVIRONMENT_INPUT, role, source)


def _use_entrypoint(raw: object, key: str, where: _Where) -> bool:
    """An environment's ``use_entrypoint`` (default false: the job's command runs alone)."""
    value = raw.get("use_entrypoint", False) if isinstance(raw, dict) else False
    if not isinstance(value, bool):
        raise where.fail(f"{key}.use_entrypoint", "must be true or false")
    return value


def _weights(raw: object, base: Path, where: _Where) -> JobInput:
    if not isinstance(raw, dict):
        raise where.fail("weights", "must be a table: { path = ..., sha256 = ... }")
    unknown = sorted(set(raw) - {"path", "sha256"})
    if unknown:
        raise where.fail(f"weights.{unknown[0]}", "unknown key")
    local = raw.get("path")
    if not isinstance(local, str) or not local:
        raise where.fail("weights.path", "missing: the path of the weights to evaluate")
    expected = raw.get("sha256")
    if expected is not None and (not isinstance(expected, str) or not SHA256.fullmatch(expected)):
        raise where.fail("weights.sha256", "must be a tree digest (64 lowercase hex)")
    return JobInput(WEIGHTS_INPUT, "weights", LocalSource(_resolve(local, base)), expected)


def _linked_certificate(raw: object, base: Path, where: _Where) -> Path | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise where.fail("linked_certificate", "must be the path of an aicert certificate")
    return _resolve(raw, base)


def _resolve(raw: str, base: Path) -> Path:
    local = Path(raw).expanduser()
    return local if local.is_absolute() else base / local


def _keyed(key: str, data: tuple[JobInput, ...]) -> list[tuple[str, JobInput | None]]:
    return [(f"{key}[{i}]", item) for i, item in enumerate(data)]


def _name_rule() -> str:
    return "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _input(
    raw: object, key: str, role: str, default_name: str | None, base: Path, where: _Where
) -> JobInput:
    if not isinstance(raw, dict):
        raise where.fail(key, "must be a table")
    unknown = sorted(set(raw) - _INPUT_KEYS)
    if unknown:
        raise where.fail(f"{key}.{unknown[0]}", "unknown key")
    for field, value in raw.items():
        if not isinstance(value, str):
            raise where.fail(f"{key}.{field}", "must be a string")
    name = raw.get("name", default_name)
    if name is None:
        raise where.fail(f"{key}.name", "missing: every data set needs a name")
    if not NAME.fullmatch(name):
        raise where.fail(f"{key}.name", _name_rule())
    if name in RESERVED_NAMES:
        raise where.fail(f"{key}.name", f"{name!r} is reserved for the job configuration")
    kinds = [k for k in ("path", "git", "url") if k in raw]
    if len(kinds) != 1:
        raise where.fail(key, "give exactly one of path, git (with commit) or url (with sha256)")
    source: InputSource
    if kinds[0] == "path":
        for extra in ("commit", "sha256"):
            if extra in raw:
                raise where.fail(f"{key}.{extra}", "only goes with git or url")
        source = LocalSource(_resolve(raw["path"], base))
    elif kinds[0] == "git":
        commit = raw.get("commit")
        if commit is None or not COMMIT.fullmatch(commit):
            raise where.fail(f"{key}.commit", "a git input needs the full commit id (hex)")
        if "sha256" in raw:
            raise where.fail(f"{key}.sha256", "only goes with url; use expected for a tree digest")
        if not raw["git"].startswith("https://"):
            raise where.fail(f"{key}.git", "must be an https:// URL")
        source = GitSource(raw["git"], commit)
    else:
        sha256 = raw.get("sha256")
        if sha256 is None or not SHA256.fullmatch(sha256):
            raise where.fail(f"{key}.sha256", "a url input needs the file's SHA-256 (64 hex)")
        if "commit" in raw:
            raise where.fail(f"{key}.commit", "only goes with git")
        if not raw["url"].startswith("https://"):
            raise where.fail(f"{key}.url", "must be an https:// URL")
        source = UrlSource(raw["url"], sha256)
    expected = raw.get("expected")
    if expected is not None and not SHA256.fullmatch(expected):
        raise where.fail(f"{key}.expected", "must be a tree digest (64 lowercase hex)")
    return JobInput(name, role, source, expected)


def _check_json(value: object, key: str, where: _Where) -> None:
    """Refuse what TOML has but JSON has not (dates, times, non-finite floats)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(v, f"{key}.{k}", where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{key}[{i}]", where)
    elif isinstance(value, datetime.date | datetime.time):
        raise where.fail(key, "dates and times are not JSON: write them as strings")
    elif isinstance(value, float) and not math.isfinite(value):
        raise where.fail(key, "inf and nan are not JSON numbers")
    elif isinstance(value, int) and abs(value) > MAX_JSON_INT:
        raise where.fail(key, "integers beyond 2**53-1 lose precision in JSON: use a string")


def with_nonce(job: JobFile, nonce: str) -> JobFile:
    """``job`` with the caller's nonce (e.g. from the command line) instead of its own."""
    if not NONCE.fullmatch(nonce):
        raise InputError(f"nonce {nonce!r} must be 8 to 64 bytes as lowercase hex")
    return dataclasses.replace(job, nonce=nonce, nonce_generated=False)
