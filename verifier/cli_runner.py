"""The one error handling every aicert command line runs under.

:class:`AicertGroup` maps the error hierarchy to exit codes (docs/exit-codes.md)
and prints a single line on stderr — never a traceback for an error aicert raised
on purpose — whether the group runs from a console script or in a test's
CliRunner. :func:`run_cli` adds what only a real process needs: SIGTERM and
Ctrl-C unwind (so VMs stop and temporary files go) and exit with status 5.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from .errors import AicertError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 5


class AicertGroup(click.Group):
    """A click group whose commands' AicertErrors become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AicertError as exc:
            click.echo(f"{ctx.find_root().info_name}: error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so `with` blocks stop VMs and remove temporary files.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_cli(group: click.Group, prog_name: str, argv: Sequence[str] | None = None) -> NoReturn:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except AicertError as exc:  # raised outside a command (e.g. while parsing options)
        click.echo(f"{prog_name}: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(result if isinstance(result, int) else 0)
