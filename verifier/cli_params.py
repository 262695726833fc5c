"""Checks of command-line values shared by the aicert commands (click callbacks).

A value that is wrong on its face (e.g. a nonce that is not hex) is a usage error, exit 2,
raised while the command line is parsed and before any file is read; a file that is
missing or malformed is bad input, exit 3.
"""

from __future__ import annotations

import re
from typing import Final

import click

NONCE_PATTERN: Final = re.compile(r"(?:[0-9a-f]{2}){8,64}")


def nonce_value(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A freshness nonce: 8 to 64 bytes as hex, either case; returned in lowercase."""
    if value is None:
        return None
    text = value.lower()
    if not NONCE_PATTERN.fullmatch(text):
        raise click.BadParameter(f"{value!r} is not 8 to 64 bytes as hex digits")
    return text
