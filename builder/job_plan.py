"""What a job will send and have measured, checked on this machine before anything boots.

``aicert-build run`` calls :func:`plan_job` first, so a typo in a job's ``path`` costs
nothing instead of a VM boot; ``run --check`` stops after printing the plan. Local
inputs are listed with the rules the upload applies (regular files and directories
only, no links inside a tree, no devices or FIFOs), without reading their contents;
only an evaluation-only job's weights are hashed, against its linked certificate.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.builder.agent_client import check_linked_certificate
from aicert.builder.job_file import (
    ArchiveSource,
    GitSource,
    ImageSource,
    JobFile,
    JobInput,
    LocalSource,
    UrlSource,
)
from aicert.verifier.digest.treehash import list_tree
from aicert.verifier.errors import InputError
from aicert.verifier.progress import format_bytes


@dataclass(frozen=True)
class PlannedInput:
    """One input as it will reach the agent and be measured into PCR 15."""

    name: str
    """The input's name; ``EVALUATION/NAME`` for an evaluation's input."""
    role: str
    how: str
    """``upload`` (from this machine), ``git`` or ``url`` (fetched by the agent)."""
    source: str
    kind: str = ""
    """``file`` or ``directory`` for an upload."""
    files: int | None = None
    size_bytes: int | None = None
    expected_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "how": self.how,
            "source": self.source,
            "kind": self.kind or None,
            "files": self.files,
            "size_bytes": self.size_bytes,
            "expected_sha256": self.expected_sha256,
        }


@dataclass(frozen=True)
class JobPlan:
    job: Path
    nonce: str
    nonce_generated: bool
    command: tuple[str, ...]
    output: str
    inputs: tuple[PlannedInput, ...]
    evaluations: tuple[tuple[str, tuple[str, ...], str], ...]
    """Name, command and results file of each evaluation."""

    def to_json(self) -> dict[str, Any]:
        return {
            "job": str(self.job),
            "nonce": self.nonce,
            "nonce_generated": self.nonce_generated,
            "command": list(self.command),
            "output": self.output or None,
            "config_input": "job-config",
            "inputs": [item.to_json() for item in self.inputs],
            "evaluations": [
                {"name": name, "command": list(command), "results": results}
                for name, command, results in self.evaluations
            ],
        }


def plan_job(job: JobFile) -> JobPlan:
    """Check every local input of ``job`` (InputError naming file, input and path).

    A linked certificate must certify the job's weights (EvaluationError otherwise):
    that costs one hash of the weights here instead of a boot.
    """
    inputs = [_planned(item, item.name, job.path) for item in job.inputs]
    for evaluation in job.evaluations:
        inputs += [
            _planned(item, f"{evaluation.name}/{item.name}", job.path) for item in evaluation.inputs
        ]
    if job.linked_certificate is not None and job.weights is not None:
        weights = job.weights.source
        if not isinstance(weights, LocalSource):
            raise InputError(f"{job.path}: weights: an evaluation-only job's weights are local")
        try:
            check_linked_certificate(job.linked_certificate, weights.path)
        except InputError as exc:
            raise InputError(f"{job.path}: linked_certificate: {exc.message}") from None
    return JobPlan(
        job=job.path,
        nonce=job.nonce,
        nonce_generated=job.nonce_generated,
        command=job.command,
        output=job.output,
        inputs=tuple(inputs),
        evaluations=tuple((e.name, e.command, e.results) for e in job.evaluations),
    )


def _planned(item: JobInput, name: str, job_path: Path) -> PlannedInput:
    source = item.source
    common = {"name": name, "role": item.role, "expected_sha256": item.expected_sha256}
    if isinstance(source, LocalSource):
        try:
            kind, files, size = _local_tree(source.path)
        except InputError as exc:
            raise InputError(f"{job_path}: input {name}: {exc.message}") from None
        return PlannedInput(
            how="upload", source=str(source.path), kind=kind, files=files, size_bytes=size, **common
        )
    if isinstance(source, GitSource):
        return PlannedInput(how="git", source=f"{source.url}@{source.commit}", **common)
    if isinstance(source, UrlSource):
        return PlannedInput(how="url", source=f"{source.url} (sha256 {source.sha256})", **common)
    if isinstance(source, ImageSource):
        return PlannedInput(how="image", source=source.reference, **common)
    if isinstance(source, ArchiveSource):
        try:
            kind, files, size = _local_tree(source.path)
        except InputError as exc:
            raise InputError(f"{job_path}: input {name}: {exc.message}") from None
        if kind != "file":
            raise InputError(
                f"{job_path}: input {name}: {source.path} is a directory, not an OCI "
                "image-layout archive (make one with skopeo copy ... oci-archive:FILE)"
            )
        return PlannedInput(
            how="upload",
            source=str(source.path),
            kind="oci-archive",
            files=files,
            size_bytes=size,
            **common,
        )
    return PlannedInput(how="fetched by the agent", source=str(source), **common)


def _local_tree(path: Path) -> tuple[str, int, int]:
    """Kind, file count and bytes of a local input, refused as the upload would refuse it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        if path.is_symlink():
            raise InputError(f"{path} is a symbolic link to a directory; name the directory")
        listing = list_tree(path)
        kind = "directory"
    else:
        # A single file is opened through a link, as the upload does.
        listing = list_tree(path, follow_symlinks=True)
        kind = "file"
    for listed in listing.files:
        if not os.access(listed.os_path, os.R_OK):
            raise InputError(f"{listed.os_path}: cannot be read (permission denied)")
    return kind, len(listing.files), sum(f.snapshot.size for f in listing.files)


def render_plan(plan: JobPlan) -> str:
    """The plan as a table for people."""
    nonce = (
        f"{plan.nonce} (generated; each run makes its own unless --nonce or the job sets one)"
        if plan.nonce_generated
        else plan.nonce
    )
    lines = [f"job {plan.job}: checked; nothing was booted or sent", ""]
    if plan.command:
        lines.append(f"  command   {' '.join(plan.command)}")
        lines.append(f"  output    {plan.output} (its tree digest is the certificate's subject)")
    lines.append(f"  nonce     {nonce}")
    lines.append("  config    measured as input job-config")
    for name, command, results in plan.evaluations:
        lines.append(f"  evaluate  {name}: {' '.join(command)} -> {results}")
    rows = [("role", "name", "sent as", "size", "from")]
    for item in plan.inputs:
        if item.how == "upload":
            how = f"upload {item.kind}"
            count = f"{item.files} file" + ("" if item.files == 1 else "s")
            size = f"{count}, {format_bytes(item.size_bytes or 0)}"
        else:
            how, size = f"{item.how} (agent)", "-"
        if item.expected_sha256:
            size += f", expected {item.expected_sha256[:12]}…"
        rows.append((item.role, item.name, how, size, item.source))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines.append("")
    lines.append("  inputs, in the order they are sent and measured into PCR 15:")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append("    " + "  ".join([*cells, row[4]]))
    return "\n".join(lines)
