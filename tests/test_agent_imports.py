"""The agent runs on the image's Debian packages: it must not need the verifier's checks.

Debian trixie ships python3-cryptography 43, which lacks the X.509 verification API
that the AK-chain check uses; the agent produces evidence and never verifies chains.
Dependencies point one way: the builder and the agent never import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def test_the_agent_does_not_import_the_verification_checks() -> None:
    probe = (
        "import sys, aicert.agent.cli, aicert.agent.server, aicert.agent.job;"
        "print(sorted(m for m in sys.modules if m.startswith('aicert.verifier.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    # logs.tcg_log, pure Python, is allowed: the agent reads the UKI's digest from the firmware log.
    # aws.cbor is allowed: the agent decodes NitroTPM's answer; the document's checks are not.
    for module in (
        "tpm.ak_chain",
        "verify",
        "tpm.quote",
        "boot.uki",
        "aws.nitro_document",
        "aws.nitro_ak",
    ):
        assert f"'aicert.verifier.{module}'" not in loaded, loaded


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("package", "forbidden"), [("builder", "agent"), ("agent", "builder")])
def test_builder_and_agent_do_not_import_each_other(package: str, forbidden: str) -> None:
    # Both import the verifier and the small shared modules of aicert/, never each other.
    root = Path(__file__).resolve().parent.parent / package
    offenders = sorted(
        f"{path.relative_to(root.parent)} imports {name}"
        for path in root.rglob("*.py")
        for name in _imported_modules(path)
        if name == f"aicert.{forbidden}" or name.startswith(f"aicert.{forbidden}.")
    )
    assert offenders == []
