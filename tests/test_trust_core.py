"""The trust core stays self-contained, and scripts/trust-core-size.py counts it by its rule."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
VERIFIER = REPO / "verifier"
# The command line reaches the outputs an auditor does not need (BOM, EAR, digest).
ENTRY_POINT = VERIFIER / "cli.py"


def _absolute_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_checks_import_nothing_of_aicert_outside_the_trust_core() -> None:
    offenders = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in VERIFIER.rglob("*.py")
        if path != ENTRY_POINT
        for name in _absolute_imports(path)
        if name.startswith("aicert.") and not name.startswith("aicert.verifier.")
    )
    assert offenders == []


def _size_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "trust_core_size", REPO / "scripts/trust-core-size.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_code_lines_leave_out_blank_comment_and_docstring_lines() -> None:
    source = '''"""Module docstring,
over two lines."""

# a comment
X = 1  # a trailing comment keeps the line


def f() -> str:
    """Function docstring."""
    text = """a string
that is code"""
    return text


class C:
    """Class docstring."""

    y = 2
'''
    # X, def f, text (2 lines), return, class C, y
    assert _size_script().code_lines(source) == 7
