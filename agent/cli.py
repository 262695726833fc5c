"""The ``aicert-agent`` command line."""

from __future__ import annotations

import click

from aicert import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aicert-agent")
def main() -> None:
    """The aicert agent: runs inside the measured image, measures one training job into the TPM."""
