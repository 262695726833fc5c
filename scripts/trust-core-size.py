#!/usr/bin/env python3
"""Print the code lines of the trust core (verifier/), per subpackage and in total.

A code line is a line that holds a Python token other than a comment, and is not part of
a docstring (a string that opens a module, class or function body). Blank lines,
comment lines and docstrings are what an auditor skims, so they are not counted.

Usage: scripts/trust-core-size.py [DIR]   (default: the verifier/ folder next to this script)
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

_SKIPPED = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            end = body[0].end_lineno or body[0].lineno
            lines.update(range(body[0].lineno, end + 1))
    return lines


def code_lines(source: str) -> int:
    """The number of code lines in one module's source."""
    docstrings = _docstring_lines(ast.parse(source))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _SKIPPED:
            continue
        # A multi-line token (a string) counts every line it spans.
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "verifier"
    if not root.is_dir():
        print(f"trust-core-size: error: {root} is not a directory", file=sys.stderr)
        return 2
    per_part: dict[str, int] = defaultdict(int)
    modules: dict[str, int] = defaultdict(int)
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        part = relative.parts[0] + "/" if len(relative.parts) > 1 else "(top level)"
        per_part[part] += code_lines(path.read_text(encoding="utf-8"))
        modules[part] += 1
    width = max(len(part) for part in per_part)
    for part in sorted(per_part, key=lambda name: (name == "(top level)", name)):
        print(f"{part:<{width}}  {per_part[part]:>6}  ({modules[part]} modules)")
    print(f"{'total':<{width}}  {sum(per_part.values()):>6}  ({sum(modules.values())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
