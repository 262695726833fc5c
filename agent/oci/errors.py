"""The one error an environment intake raises: the input is refused (HTTP 422 by default)."""

from __future__ import annotations

from aicert.agent.intake import IntakeError


class OciError(IntakeError):
    """An OCI image, or the way it was delivered, was refused; nothing of it is kept."""
