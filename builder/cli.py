"""The ``aicert-build`` command line."""

from __future__ import annotations

import click

from aicert import __version__

from .azure_cli import deploy, destroy_command
from .image_cli import COMMANDS as IMAGE_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aicert-build")
def main() -> None:
    """Build the measured aicert OS image, predict its PCRs, and run or deploy it."""


main.add_command(deploy)
main.add_command(destroy_command)

for _command in IMAGE_COMMANDS:
    main.add_command(_command)
