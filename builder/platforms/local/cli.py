"""The local half of ``aicert-build run``: QEMU + OVMF + swtpm on this machine."""

from __future__ import annotations

import click
from aicert.builder.job_file import JobFile
from aicert.builder.job_runner import JobOutcome, run_on
from aicert.builder.platforms.base import Say
from aicert.builder.platforms.commands import RunOptions

from .platform import LocalPlatform
from .run import DEFAULT_SCRATCH_BYTES, LOCAL_CA_ROOT_NAME, LocalRun, default_ca_dir

DEFAULT_LOCAL_SCRATCH_GIB = DEFAULT_SCRATCH_BYTES >> 30
RUN_OPTIONS = frozenset({"ca_dir"})
"""The ``run`` options --platform local takes besides the common ones."""


def run_job(
    _ctx: click.Context, job: JobFile, options: RunOptions, say: Say
) -> tuple[JobOutcome, str]:
    """``run --platform local``: boot the image directory here, run ``job``, stop it all."""
    spec = LocalRun(
        image=options.image,
        output=options.output,
        ca_dir=options.ca_dir or default_ca_dir(),
        scratch_bytes=(options.scratch_gib or DEFAULT_LOCAL_SCRATCH_GIB) << 30,
        boot_timeout=options.boot_timeout,
    )
    outcome = run_on(LocalPlatform(), spec, job, options.output, say=say)
    hint = (
        f"--recipe {options.image / 'recipe.json'} --platform-profile qemu "
        f"--trust-root {outcome.output_dir / LOCAL_CA_ROOT_NAME}"
    )
    return outcome, hint
