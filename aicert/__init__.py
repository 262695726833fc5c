"""aicert: TPM-rooted certificates for AI model weights.

The distribution holds three packages: ``aicert.verifier`` (the trust core and
``aicert-verify``), ``aicert.builder`` (``aicert-build``) and ``aicert.agent``
(``aicert-agent``, the service inside the measured image).
"""

__version__ = "0.1.0"
