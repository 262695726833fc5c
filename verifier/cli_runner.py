"""The one error handling every aicert command line runs under.

:class:`AicertGroup` maps every failure to an exit code (docs/exit-codes.md) and
prints exactly one line on stderr — never a traceback for an error aicert raised on
purpose — whether the group runs from a console script or in a test's CliRunner.
With ``--json`` on the command line, stdout also carries a JSON object naming the
error, so a machine reading stdout always gets JSON. :func:`run_cli` adds what
only a real process needs: SIGTERM unwinds like Ctrl-C (so VMs stop and temporary
files go) and exits with status 5.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

import click

from .errors import AicertError, InputError, VerificationError

EXIT_USAGE = 2
EXIT_INPUT = InputError.exit_code
EXIT_INTERRUPTED = 5


# click 8.2 raises this for a group called without a command; click 8.1 has none.
_NO_ARGS_IS_HELP: tuple[type[BaseException], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


class ReportedError(Exception):
    """A failure whose full report the command has already printed on stdout.

    The handler still prints the one-line error on stderr and exits with the
    error's code, but prints no second JSON object.
    """

    def __init__(self, error: AicertError, check: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.check = check


@dataclass(frozen=True)
class Failure:
    """What the handler reports for one failure."""

    exit_code: int
    type: str
    message: str
    check: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "type": self.type,
            "message": self.message,
            "exit_code": self.exit_code,
        }


def failure_of(exc: BaseException) -> Failure | None:
    """The exit code and message for ``exc``; None for what is no failure aicert knows."""
    if isinstance(exc, ReportedError):
        return Failure(exc.error.exit_code, type(exc.error).__name__, exc.error.message, exc.check)
    if isinstance(exc, AicertError):
        check = exc.check if isinstance(exc, VerificationError) else None
        return Failure(exc.exit_code, type(exc).__name__, exc.message, check)
    if isinstance(exc, click.FileError):
        return Failure(EXIT_INPUT, "InputError", " ".join(exc.format_message().split()))
    if (
        isinstance(exc, click.BadParameter)
        and not isinstance(exc, click.MissingParameter)
        and isinstance(getattr(exc.param, "type", None), click.Path)
    ):
        # click.Path only checks the file system (exists, file or directory, readable):
        # a problem with a named file is bad input, not a malformed command line.
        return Failure(EXIT_INPUT, "InputError", " ".join(exc.format_message().split()))
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())
        return Failure(EXIT_USAGE, "UsageError", message + hint)
    if isinstance(exc, click.ClickException):
        return Failure(EXIT_USAGE, "UsageError", " ".join(exc.format_message().split()))
    if isinstance(exc, OSError):
        # A file operation aicert did not wrap; still the user's file, still one line.
        where = f"{exc.filename}: " if exc.filename else ""
        return Failure(EXIT_INPUT, "InputError", f"{where}{exc.strerror or exc}")
    if isinstance(exc, click.Abort | KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "Interrupted", "interrupted")
    return None


def wants_json(args: Sequence[str]) -> bool:
    """Whether ``--json`` was given (before any ``--``), even if parsing then failed."""
    options = list(args)
    if "--" in options:
        options = options[: options.index("--")]
    return "--json" in options


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


class AicertGroup(click.Group):
    """A click group whose every failure becomes one stderr line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        """Run and always exit (``standalone_mode`` is ignored: this is the handler)."""
        argv = list(sys.argv[1:] if args is None else args)
        prog = prog_name or self.name or "aicert"
        try:
            result = super().main(argv, prog, complete_var, standalone_mode=False, **extra)
        except BaseException as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP) and isinstance(exc, click.UsageError):
                # A bare group shows its help, as with click 8.1 (the image's) and --help.
                click.echo(exc.format_message())
                sys.exit(0)
            failure = failure_of(exc)
            if failure is None:
                raise
            if wants_json(argv) and not isinstance(exc, ReportedError):
                click.echo(json.dumps({"error": failure.to_json()}, indent=2))
            if failure.exit_code == EXIT_INTERRUPTED:
                click.echo(f"{prog}: interrupted", err=True)
            else:
                shown = f"{failure.check}: {failure.message}" if failure.check else failure.message
                click.echo(f"{prog}: error: {shown}", err=True)
            sys.exit(failure.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so `with` blocks stop VMs and remove temporary files.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_cli(group: AicertGroup, prog_name: str, argv: Sequence[str] | None = None) -> NoReturn:
    signal.signal(signal.SIGTERM, _interrupt)
    group.main(args=argv, prog_name=prog_name)
