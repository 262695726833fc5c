"""The one top-level handler every aicert command line runs under.

It maps the error hierarchy to exit codes (docs/exit-codes.md) and prints a
single line on stderr: never a traceback for an error aicert raised on purpose.
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


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so `with` blocks stop VMs and remove temporary files.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_cli(group: click.Group, prog_name: str, argv: Sequence[str] | None = None) -> NoReturn:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except AicertError as exc:
        click.echo(f"{prog_name}: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(result if isinstance(result, int) else 0)
