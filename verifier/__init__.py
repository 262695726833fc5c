"""aicert's trust core: certificate format, PCR prediction, event logs, quote and chain checks.

Pure Python over ``cryptography``: no TPM library, no network. ``aicert.builder``
and ``aicert.agent`` import it; it imports neither.
"""
