"""The one error hierarchy of aicert.

Every error raised on purpose derives from :class:`AicertError`; its message is a
single line that says what is wrong and, where it helps, what to do next. Each CLI
has one top-level handler that maps these classes to exit codes (see
:data:`EXIT_CODES` and ``docs/exit-codes.md``).
"""

from __future__ import annotations


class AicertError(Exception):
    """Base class of every error aicert raises deliberately."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep messages on one line so a CLI can print them verbatim.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class InputError(AicertError):
    """A file or argument given by the user is missing, unreadable or not what it claims."""

    exit_code = 3


class FormatError(InputError):
    """Untrusted bytes (event log, TPM structure, PE file, certificate) are malformed."""


class ToolError(AicertError):
    """An external program is missing or failed."""

    exit_code = 4


class TpmError(ToolError):
    """The TPM refused a command, or does not hold the key or certificate expected."""


class CloudError(AicertError):
    """A cloud provider refused or failed a request (login, permissions, quota, conflict)."""

    exit_code = 6


class VerificationError(AicertError):
    """A verification check failed: the evidence does not prove what it claims.

    ``check`` names the failed step, as shown in reports and ``--json`` output.
    """

    exit_code = 1
    check = "verification"


class AkChainError(VerificationError):
    """The attestation key certificate chain is not valid to a trusted root."""

    check = "ak-chain"


class AkMismatchError(VerificationError):
    """The AK certificate does not certify the AK that signed the quote."""

    check = "ak-chain"


class QuoteSignatureError(VerificationError):
    """The quote signature does not verify under the attestation key."""

    check = "quote-signature"


class QuoteStructureError(VerificationError):
    """The quote is not a TPM-generated quote (magic, type) or selects the wrong PCRs."""

    check = "quote-signature"


class BindingError(VerificationError):
    """The quote's extraData does not bind the certificate's statement."""

    check = "binding"


class EnvelopeSignatureError(VerificationError):
    """No signature of the DSSE envelope verifies under the attested agent key."""

    check = "envelope-signature"


class NonceError(VerificationError):
    """The statement's nonce differs from the one the verifier expects."""

    check = "nonce"


class PcrDigestError(VerificationError):
    """The PCR values in the certificate do not hash to the quoted pcrDigest."""

    check = "pcr-digest"


class FirmwareLogError(VerificationError):
    """The firmware event log does not replay to the quoted PCR values."""

    check = "firmware-log"


class CelLogError(VerificationError):
    """The application (CEL) log does not replay to PCR 15."""

    check = "cel-log"


class StatementMismatchError(VerificationError):
    """The CEL log and the statement tell different stories."""

    check = "cel-log"


class EvaluationError(VerificationError):
    """An evaluation did not run on the certified weights, or failed."""

    check = "evaluations"


class BootPcrError(VerificationError):
    """A boot PCR differs from the value predicted for the published image."""

    check = "boot-pcrs"


class ImageIdentityError(VerificationError):
    """The image the statement names is not the reference image, or not the one booted."""

    check = "boot-pcrs"


class PlatformProfileError(VerificationError):
    """A firmware PCR differs from the platform reference profile."""

    check = "platform-profile"


class ReferenceBundleError(VerificationError):
    """A reference bundle is not the maintainers' current one: wrong signature, expired."""

    check = "reference-bundle"


class InputDigestError(VerificationError):
    """An input file the auditor holds is not the one the certificate measured."""

    check = "files"


class WeightsError(VerificationError):
    """The weights on disk do not hash to the certificate's subject."""

    check = "weights"


class GpuEvidenceError(VerificationError):
    """A GPU's attestation evidence contradicts the statement's record of that GPU."""

    check = "gpus"


class GpuNonceError(GpuEvidenceError):
    """A GPU attestation report answers another nonce than the one bound to this session."""


class GpuChainError(GpuEvidenceError):
    """A GPU's device certificate chain does not lead to a trusted NVIDIA device root."""


class GpuSignatureError(GpuEvidenceError):
    """A GPU attestation report's signature does not verify under its device certificate."""


class GpuMeasurementError(GpuEvidenceError):
    """A GPU measurement differs from the golden value of the RIM files supplied."""


class GpuCcModeError(GpuEvidenceError):
    """A GPU is not in confidential-computing mode (or in DEVTOOLS mode) but the policy
    requires CC, or claims CC without attestation evidence."""


class GpuMissingError(GpuEvidenceError):
    """The certificate records fewer GPUs than the policy requires."""


EXIT_CODES: dict[int, str] = {
    0: "every check passed",
    1: "a verification check failed",
    2: "usage error (bad command-line arguments or option values)",
    3: "bad input: a file is missing, unreadable, the wrong kind, too large or malformed",
    4: "an external tool is missing or failed",
    5: "interrupted",
    6: "the cloud provider refused or failed a request",
}
