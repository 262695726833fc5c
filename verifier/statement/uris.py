"""Where a measured input came from, as the URI in ``resolvedDependencies[].uri``.

SLSA's ResourceDescriptor ``uri`` is an RFC 3986 URI. The agent writes one of these forms
(docs/certificate-format.md lists them with examples) and the verifier refuses anything
that is not an absolute URI:

* an https download: the URL itself, ``https://example.org/mnist.npz``;
* a git checkout: ``git+<repository URL>@<commit>``, ``git+https://github.com/o/r.git@3f2c…``;
* an upload to the agent: ``urn:aicert:upload:<name>`` (evaluation inputs
  ``urn:aicert:upload:<evaluation>/<name>``);
* the job configuration, written by the agent from the job request: ``urn:aicert:job-request``;
* an OCI environment: its package URL, ``pkg:oci/trainer@sha256:…?repository_url=…``.
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import FormatError

JOB_REQUEST_URI: Final = "urn:aicert:job-request"
UPLOAD_URN_PREFIX: Final = "urn:aicert:upload:"
MAX_URI_LENGTH: Final = 8192

# RFC 3986 section 3: scheme ":" then only unreserved, reserved and percent-encoded octets.
_URI: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+"
)
_UPLOAD_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*(?:/[A-Za-z0-9][A-Za-z0-9._\-]*)?")


def check_uri(value: str, where: str) -> str:
    """``value`` if it is an absolute RFC 3986 URI; FormatError otherwise."""
    if len(value) > MAX_URI_LENGTH or not _URI.fullmatch(value):
        raise FormatError(
            f"{where} {value[:80]!r} is not a URI: use an https URL, git+URL@commit, "
            f"{UPLOAD_URN_PREFIX}NAME or {JOB_REQUEST_URI}"
        )
    return value


def upload_uri(name: str) -> str:
    """The URN of an input uploaded to the agent under ``name`` (``evaluation/name``)."""
    if not _UPLOAD_NAME.fullmatch(name):
        raise FormatError(f"upload name {name!r} cannot be written as a URN")
    return UPLOAD_URN_PREFIX + name


def git_uri(repository: str, commit: str) -> str:
    """The URI of ``commit`` of the git ``repository`` (a URL); FormatError if not a URI."""
    return check_uri(f"git+{repository}@{commit}", "git input")
