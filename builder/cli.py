"""The ``aicert-build`` command line."""

from __future__ import annotations

import logging

import click
from aicert.verifier.cli_runner import AicertGroup, run_cli

from aicert import __version__

from .environment_cli import environment_command
from .image_cli import COMMANDS as IMAGE_COMMANDS
from .platforms.aws import cli as aws_cli
from .platforms.azure import cli as azure_cli
from .platforms.commands import deploy, destroy
from .platforms.gcp import cli as gcp_cli
from .profile_cli import profile_group
from .publish_cli import maintainer_key_command, publish_command
from .run_cli import run_command


@click.group(
    "aicert-build", cls=AicertGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="aicert-build")
@click.option("-v", "--verbose", is_flag=True, help="Log every external command run.")
def main(verbose: bool) -> None:
    """Build the measured aicert OS image, predict its PCRs, and run or deploy it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


for _platform_cli in (azure_cli, gcp_cli, aws_cli):
    deploy.add_command(_platform_cli.deploy_command)
    destroy.add_command(_platform_cli.destroy_command)

for _command in (
    *IMAGE_COMMANDS,
    environment_command,
    run_command,
    deploy,
    destroy,
    profile_group,
    publish_command,
    maintainer_key_command,
):
    main.add_command(_command)


def run() -> None:
    """Entry point: one top-level handler maps errors to a line and an exit code."""
    run_cli(main, "aicert-build")
