"""Rendering a verification report for people (text) and machines (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .boot.platform_profile import PcrMatch
from .logs.session_events import IMAGE_ROOT
from .statement.provenance import TrainingProvenance
from .verify import LOCAL_TEST_PLATFORM, Report, Status

_MARKS = {
    Status.PASSED: ("PASS", "green"),
    Status.FAILED: ("FAIL", "red"),
    Status.SKIPPED: ("SKIP", "yellow"),
    Status.NOT_ESTABLISHED: ("NONE", "yellow"),
    Status.NOT_RUN: ("----", None),
}


def render_text(report: Report, certificate: Path, *, color: bool) -> str:
    lines = [f"aicert certificate {certificate}", ""]
    width = max(len(r.check) for r in report.results)
    for result in report.results:
        mark, fg = _MARKS[result.status]
        detail = result.detail or "not run (an earlier check failed)"
        lines.append(
            f"  {click.style(mark, fg=fg) if color else mark}  {result.check:<{width}}  {detail}"
        )
    if report.root_of_trust is not None:
        trust = report.root_of_trust
        lines += ["", f"Root of trust  {trust.root}: {trust.description}"]
    if len(report.lineage) > 1 or report.reaches_training is False:
        reach = "a training run" if report.reaches_training else "NO training run"
        chain = " → ".join(str(link) for link in report.lineage)
        lines += [f"Linked chain   {chain}: reaches {reach}"]
    if report.pcr_sources:
        lines += ["", *_pcr_lines(report)]
    if report.profile_matches:
        lines += ["", "Platform profile (the accepted variant each firmware PCR matched)"]
        lines += [f"  {m.describe()}" for m in report.profile_matches]
    if report.provenance is not None:
        lines += ["", *_provenance_lines(report.provenance)]
    lines.append("")
    if report.error is None:
        verdict = "VERIFIED: every check that ran passed"
        if report.root_of_trust is not None and not report.root_of_trust.hardware:
            verdict = f"VERIFIED on a {LOCAL_TEST_PLATFORM}: every check that ran passed"
        unestablished = [r.check for r in report.results if r.status is Status.NOT_ESTABLISHED]
        if unestablished:
            verdict = (
                f"NO ROOT OF TRUST: {', '.join(unestablished)} not established, so nothing "
                "shows the evidence came from a TPM; every other check that ran passed"
            )
        skipped = [r.check for r in report.results if r.status is Status.SKIPPED]
        if skipped:
            verdict += f" (skipped: {', '.join(skipped)})"
        lines.append(click.style(verdict, fg="green", bold=True) if color else verdict)
    else:
        failed = next(r.check for r in report.results if r.status is Status.FAILED)
        verdict = f"NOT VERIFIED: {failed}: {report.error.message}"
        lines.append(click.style(verdict, fg="red", bold=True) if color else verdict)
    return "\n".join(lines)


def _provenance_lines(prov: TrainingProvenance) -> list[str]:
    lines = ["Provenance (as the statement claims; trusted only if VERIFIED)"]
    lines.append(f"  command      {' '.join(prov.command)}")
    if not prov.evaluation_only:
        lines.append(f"  runs in      {_root(prov.root, prov.entrypoint)}")
    lines.append(f"  exit status  {prov.exit_status}")
    lines.append(f"  agent        aicert-agent {prov.agent_version}, boot {prov.boot_id}")
    lines.append(f"  ran          {prov.started_on} .. {prov.finished_on}")
    lines.append(f"  nonce        {prov.nonce}")
    lines.append("  inputs")
    for dep in prov.dependencies:
        source = f"  from {dep.source}" if dep.source else ""
        lines.append(f"    {dep.role:<10} {dep.name:<24} sha256:{dep.sha256}{source}")
    lines.append("  gpus" if prov.gpus else "  gpus       none")
    for gpu in prov.gpus:
        attested = "attested" if gpu.attestation is not None else "no attestation"
        lines.append(
            f"    {gpu.model} {gpu.uuid}  driver {gpu.driver_version}, "
            f"VBIOS {gpu.vbios_version}, CC {gpu.cc_mode}, {attested}"
        )
    lines.append("  outputs" if not prov.evaluation_only else "  evaluated weights")
    for subject in prov.subjects:
        lines.append(f"    {'':<10} {subject.name:<24} sha256:{subject.sha256}")
    for ev in prov.evaluations:
        lines.append(f"  evaluation {ev.name!r}: {' '.join(ev.command)}")
        lines.append(f"    {'runs in':<10} {_root(ev.root, ev.entrypoint)}")
        for item in ev.inputs:
            lines.append(f"    {item.role:<10} {item.name:<24} sha256:{item.sha256}")
        lines.append(f"    {'results':<10} {'':<24} sha256:{ev.results_sha256}")
        for metric, value in sorted(ev.metrics.items()):
            lines.append(f"    {'metric':<10} {metric:<24} {value}")
    return lines


def _pcr_lines(report: Report) -> list[str]:
    lines = ["PCRs (what each quoted value was checked against)"]
    lines += [f"  {pcr:>2}  {how}" for pcr, how in sorted(report.pcr_sources.items())]
    return lines


def _match_json(match: PcrMatch) -> dict[str, Any]:
    if match.skipped is not None:
        return {"pcr": match.pcr, "status": Status.SKIPPED.value, "reason": match.skipped}
    provenance = match.provenance.to_json() if match.provenance else None
    return {
        "pcr": match.pcr,
        "status": Status.PASSED.value,
        "variant": match.variant,
        "provenance": provenance,
    }


def render_json(report: Report, certificate: Path) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "certificate": str(certificate),
        "verified": report.ok,
        "checks": [
            {"check": r.check, "status": r.status.value, "detail": r.detail} for r in report.results
        ],
        "pcrs": {str(pcr): how for pcr, how in sorted(report.pcr_sources.items())},
        "root_of_trust": None
        if report.root_of_trust is None
        else {
            "hardware": report.root_of_trust.hardware,
            "root": report.root_of_trust.root,
            "description": report.root_of_trust.description,
        },
        "linked_chain": {
            "certificates": [
                {
                    "certificate": link.certificate,
                    "kind": link.kind,
                    "hardware_root_of_trust": None
                    if link.root_of_trust is None
                    else link.root_of_trust.hardware,
                }
                for link in report.lineage
            ],
            "reaches_training": report.reaches_training,
        },
        "platform_profile": [_match_json(m) for m in report.profile_matches],
        "provenance": report.provenance.to_statement() if report.provenance else None,
        "error": None,
    }
    if report.error is not None:
        failed = next(r.check for r in report.results if r.status is Status.FAILED)
        doc["error"] = {
            "check": failed,
            "type": type(report.error).__name__,
            "message": report.error.message,
            "exit_code": report.error.exit_code,
        }
    return doc


def _root(root: str, entrypoint: tuple[str, ...]) -> str:
    if root == IMAGE_ROOT:
        return "the image's own root file system (no environment)"
    used = f", after its entrypoint {' '.join(entrypoint)}" if entrypoint else ""
    return f"environment {root}{used}"
