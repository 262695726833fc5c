"""The SLSA statement and its event-by-event match against the PCR 15 log."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
from aicert.verifier.boot.image_identity import ImageIdentity
from aicert.verifier.digest.file_subjects import MAX_FILE_SUBJECTS, FileSubject, selected_files
from aicert.verifier.digest.treemanifest import FileEntry, TreeManifest
from aicert.verifier.errors import FormatError, StatementMismatchError
from aicert.verifier.logs.cel import make_record
from aicert.verifier.logs.session_events import IMAGE_ROOT, CommandExited, parse_event
from aicert.verifier.statement.provenance import Artifact, TrainingProvenance, parse_statement
from aicert.verifier.statement.statement_match import expected_events, match_statement
from aicert.verifier.statement.uris import JOB_REQUEST_URI, check_uri, git_uri, upload_uri
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

H = "ab" * 32


def _prov(**changes: object) -> TrainingProvenance:
    base = TrainingProvenance(
        subjects=(Artifact("weights", "cd" * 32, files=2),),
        file_subjects=(
            FileSubject("weights/config.json", "a1" * 32),
            FileSubject("weights/model.bin", "b2" * 32),
        ),
        image=ImageIdentity("5a" * 32, "5f" * 32),
        dependencies=(
            Artifact("train", H, "code", "urn:aicert:upload:train"),
            Artifact("mnist", "ef" * 32, "data", "https://example.org/mnist.npz"),
            Artifact("repo", "01" * 32, "code", f"git+https://example.org/r.git@{'3f' * 20}"),
            Artifact("job-config", "02" * 32, "config", JOB_REQUEST_URI),
        ),
        command=("python3", "train.py", "--epochs", "1"),
        output_path="out",
        nonce="00" * 16,
        agent_version="0.1.0",
        boot_id="b" * 32,
        agent_key_sha256="12" * 32,
        owner="34" * 32,
        exit_status=0,
        started_on="2026-11-25T10:00:00Z",
        finished_on="2026-11-25T10:05:00Z",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _records(prov: TrainingProvenance) -> list:  # type: ignore[type-arg]
    return [make_record(i, e.to_content()) for i, e in enumerate(expected_events(prov))]


def test_statement_round_trips_and_is_standard() -> None:
    prov = _prov()
    raw = prov.statement_bytes()
    doc = json.loads(raw)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [
        {"name": "weights/config.json", "digest": {"sha256": "a1" * 32}},
        {"name": "weights/model.bin", "digest": {"sha256": "b2" * 32}},
    ]
    predicate = doc["predicate"]
    assert predicate["aicert_weights"] == [
        {"name": "weights", "digest": {"aicert-tree-sha256": "cd" * 32}, "fileCount": 2}
    ]
    assert predicate["runDetails"]["builder"]["builderDependencies"] == [
        {"name": "root-filesystem", "digest": {"aicert-dm-verity-sha256": "5a" * 32}},
        {"name": "uki", "digest": {"aicert-authenticode-sha256": "5f" * 32}},
    ]
    deps = predicate["buildDefinition"]["resolvedDependencies"]
    assert {d["uri"] for d in deps} == {a.source for a in prov.dependencies}
    assert all(set(d["digest"]) == {"aicert-tree-sha256"} for d in deps)
    assert parse_statement(raw) == prov


def test_an_honest_log_matches() -> None:
    prov = _prov()
    match_statement(_records(prov), prov)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonce": "11" * 16}, "record 1 is session-claim"),
        ({"subjects": (Artifact("weights", "00" * 32, files=2),)}, "record 8 is output"),
        ({"command": ("python3", "evil.py")}, "record 6 is command"),
        ({"dependencies": ()}, "record 2 is input"),
    ],
)
def test_statement_claims_not_in_the_log_fail(change: dict[str, object], message: str) -> None:
    honest = _prov()
    with pytest.raises(StatementMismatchError, match=message):
        match_statement(_records(honest), _prov(**change))


def test_extra_or_missing_records_fail() -> None:
    prov = _prov()
    records = _records(prov)
    extra = [*records, make_record(len(records), CommandExited(1).to_content())]
    with pytest.raises(StatementMismatchError, match="after the lock event"):
        match_statement(extra, prov)
    with pytest.raises(StatementMismatchError, match="ends after"):
        match_statement(records[:-1], prov)


def test_unknown_events_and_fields_are_refused() -> None:
    with pytest.raises(FormatError, match="unknown aicert event"):
        parse_event({"event": "telemetry"}, "r")
    with pytest.raises(FormatError, match="unknown fields"):
        parse_event({"event": "command-exit", "exitStatus": 0, "note": "x"}, "r")
    with pytest.raises(FormatError, match="must be of type int"):
        parse_event({"event": "command-exit", "exitStatus": "0"}, "r")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("_type"),
        lambda d: d.update(predicateType="https://slsa.dev/provenance/v0.2"),
        lambda d: d["subject"][0]["digest"].update(sha256="XYZ"),
        lambda d: d["subject"].pop(),
        lambda d: d["subject"].append({"name": "weights/x", "digest": {"sha256": "cd" * 32}}),
        lambda d: d["subject"].append({"name": "other", "digest": {"sha256": "cd" * 32}}),
        lambda d: d["subject"][1].update(name="weights/config.json"),
        lambda d: d["predicate"]["aicert_weights"][0].update(fileCount=3),
        lambda d: d["predicate"]["aicert_weights"][0].update(digest={"sha256": "cd" * 32}),
        lambda d: d["predicate"].pop("aicert_weights"),
        lambda d: d["predicate"]["buildDefinition"]["resolvedDependencies"][0].update(
            digest={"sha256": H}
        ),
        lambda d: d["predicate"]["buildDefinition"]["resolvedDependencies"][0].update(uri="upload"),
        lambda d: d["predicate"]["buildDefinition"]["resolvedDependencies"][0].update(
            uri="job request"
        ),
        lambda d: d["predicate"]["runDetails"]["builder"]["builderDependencies"].append(
            {"name": "kernel", "digest": {"sha256": H}}
        ),
        lambda d: d["predicate"]["runDetails"]["builder"]["builderDependencies"][0].update(
            digest={"aicert-dm-verity-sha256": "5A" * 32}
        ),
        lambda d: d["predicate"].update(aicert_exitStatus="0"),
        lambda d: d["predicate"]["runDetails"]["builder"].update(id="someone-else"),
    ],
)
def test_malformed_statements_are_format_errors(mutate: object) -> None:
    doc = json.loads(_prov().statement_bytes())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(FormatError):
        parse_statement(json.dumps(doc).encode())


@given(st.binary(max_size=300))
def test_random_statement_bytes_raise_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_statement(data)


def test_an_image_fact_may_be_unknown() -> None:
    prov = _prov(image=ImageIdentity("5a" * 32))
    doc = json.loads(prov.statement_bytes())
    assert doc["predicate"]["runDetails"]["builder"]["builderDependencies"] == [
        {"name": "root-filesystem", "digest": {"aicert-dm-verity-sha256": "5a" * 32}}
    ]
    assert parse_statement(prov.statement_bytes()) == prov


def test_a_single_file_tree_is_its_own_subject() -> None:
    prov = _prov(
        subjects=(Artifact("model.gguf", "cd" * 32, files=1),),
        file_subjects=(FileSubject("model.gguf", "a1" * 32),),
    )
    assert parse_statement(prov.statement_bytes()) == prov
    two = _prov(
        subjects=(Artifact("weights", "cd" * 32, files=2),),
        file_subjects=(FileSubject("weights", "a1" * 32), FileSubject("weights/x", "b2" * 32)),
    )
    with pytest.raises(FormatError, match="subjects name them"):
        parse_statement(two.statement_bytes())


def _many_files(count: int) -> TreeManifest:
    files = tuple(
        FileEntry(f"f{i:05d}", i % 7 + (i == 1234) * 10**6, "ab" * 32) for i in range(count)
    )
    return TreeManifest(0, files, ())


def test_a_large_tree_lists_its_largest_files_up_to_the_cap() -> None:
    manifest = _many_files(MAX_FILE_SUBJECTS + 500)
    chosen = selected_files(manifest)
    assert len(chosen) == MAX_FILE_SUBJECTS
    assert [f.path for f in chosen] == sorted(f.path for f in chosen)
    assert "f01234" in {f.path for f in chosen}  # the largest file is always listed
    smallest_chosen = min(f.size for f in chosen)
    assert all(f.size <= smallest_chosen for f in manifest.files if f not in chosen)
    subjects = tuple(FileSubject(f"weights/{f.path}", f.digest) for f in chosen)
    prov = _prov(
        subjects=(Artifact("weights", "cd" * 32, files=len(manifest.files)),),
        file_subjects=subjects,
    )
    assert parse_statement(prov.statement_bytes()) == prov
    with pytest.raises(FormatError, match="expected 1000"):
        parse_statement(dataclasses.replace(prov, file_subjects=subjects[:-1]).statement_bytes())
    assert len(selected_files(_many_files(MAX_FILE_SUBJECTS))) == MAX_FILE_SUBJECTS


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.org/mnist.npz",
        "https://huggingface.co/o/m/resolve/main/model.safetensors?download=true",
        "git+https://github.com/o/r.git@" + "3f" * 20,
        "git+file:///srv/repo@" + "3f" * 20,
        "urn:aicert:upload:code",
        "urn:aicert:upload:accuracy/test-set",
        JOB_REQUEST_URI,
        "https://example.org/a%20b",
    ],
)
def test_source_uris_are_uris(uri: str) -> None:
    assert check_uri(uri, "uri") == uri


@pytest.mark.parametrize(
    "value",
    ["upload", "job request", "", "https://example.org/a b", "1http://x", ":x", "x:%zz", "é:x"],
)
def test_non_uris_are_refused(value: str) -> None:
    with pytest.raises(FormatError, match="is not a URI"):
        check_uri(value, "uri")


def test_uri_builders() -> None:
    assert upload_uri("accuracy/code") == "urn:aicert:upload:accuracy/code"
    assert (
        git_uri("https://example.org/r.git", "ab" * 20)
        == f"git+https://example.org/r.git@{'ab' * 20}"
    )
    with pytest.raises(FormatError):
        upload_uri("../x")
    with pytest.raises(FormatError):
        git_uri("https://example.org/my repo", "ab" * 20)


@given(st.text(max_size=80))
def test_check_uri_raises_only_format_errors(value: str) -> None:
    with contextlib.suppress(FormatError):
        assert check_uri(value, "uri") == value


def test_in_toto_and_slsa_protobufs_read_the_statement() -> None:
    """The reference in-toto Statement v1 and SLSA Provenance v1 protobufs parse it strictly
    (the predicate without its aicert_* extension fields, which SLSA consumers ignore)."""
    doc = json.loads(_prov().statement_bytes())
    statement = json_format.Parse(json.dumps(doc), statement_pb2.Statement())
    Statement.copy_from_pb(statement).validate()
    assert all(set(s.digest) == {"sha256"} for s in statement.subject)
    standard = {k: v for k, v in doc["predicate"].items() if not k.startswith("aicert_")}
    provenance = json_format.Parse(json.dumps(standard), provenance_pb2.Provenance())
    builder = provenance.run_details.builder
    assert [d.name for d in builder.builder_dependencies] == ["root-filesystem", "uki"]
    for dependency in provenance.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(dependency).validate()
        assert check_uri(dependency.uri, "uri")


@given(
    st.lists(
        st.sampled_from(["weights", "weights/a", "weights/b/c", "weights/", "other/a", "w"]),
        max_size=5,
    ),
    st.integers(min_value=-1, max_value=4),
)
def test_subjects_parse_only_when_they_are_exactly_the_trees_files(
    names: list[str], count: int
) -> None:
    doc = json.loads(_prov().statement_bytes())
    doc["subject"] = [{"name": n, "digest": {"sha256": "a1" * 32}} for n in names]
    doc["predicate"]["aicert_weights"][0]["fileCount"] = count
    try:
        prov = parse_statement(json.dumps(doc).encode())
    except FormatError:
        return
    assert len(prov.file_subjects) == count == len(set(names))
    assert all(n == "weights" or (n.startswith("weights/") and n != "weights/") for n in names)


ENV = Artifact("env", "0e" * 32, "environment", f"pkg:oci/env@sha256:{'0e' * 32}")


def test_the_root_a_command_ran_in_round_trips_and_is_in_the_log() -> None:
    plain = parse_statement(_prov().statement_bytes())
    assert (plain.root, plain.entrypoint) == (IMAGE_ROOT, ())
    params = json.loads(_prov().statement_bytes())["predicate"]["buildDefinition"]
    assert params["externalParameters"]["root"] == IMAGE_ROOT
    boxed = _prov(dependencies=(*_prov().dependencies, ENV), root="env", entrypoint=("/entry.sh",))
    assert parse_statement(boxed.statement_bytes()) == boxed
    match_statement(_records(boxed), boxed)
    # The log says it ran in the image's root, the statement claims the environment.
    honest = dataclasses.replace(boxed, entrypoint=())
    with pytest.raises(StatementMismatchError, match="record 7 is command"):
        match_statement(_records(honest), boxed)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"root": "env"}, "names root 'env' but its environment inputs are none"),
        ({"dependencies": (ENV,), "root": IMAGE_ROOT}, r"inputs are \['env'\]"),
        ({"entrypoint": ("/entry.sh",)}, "has an entrypoint but no environment"),
        (
            {"dependencies": (ENV, dataclasses.replace(ENV, name="e2")), "root": "env"},
            "names root 'env'",
        ),
    ],
)
def test_a_root_that_does_not_fit_the_inputs_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        parse_statement(_prov(**changes).statement_bytes())
