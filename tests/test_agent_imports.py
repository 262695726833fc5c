"""The agent runs on the image's Debian packages: it must not need the verifier's checks.

Debian trixie ships python3-cryptography 43, which lacks the X.509 verification API
that the AK-chain check uses; the agent produces evidence and never verifies chains.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_agent_does_not_import_the_verification_checks() -> None:
    probe = (
        "import sys, aicert.agent.cli, aicert.agent.server, aicert.agent.job;"
        "print(sorted(m for m in sys.modules if m.startswith('aicert.verifier.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    # tcg_log, pure Python, is allowed: the agent reads the UKI's digest from the firmware log.
    for module in ("ak_chain", "verify", "quote", "uki"):
        assert f"'aicert.verifier.{module}'" not in loaded, loaded
