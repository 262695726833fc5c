"""Azure failures as one-line aicert errors that say what went wrong and what to do.

Every call into the Azure SDK runs inside :func:`azure_call`, which turns SDK
exceptions into :class:`~aicert.verifier.errors.CloudError` subclasses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from aicert.verifier.errors import CloudError
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

LOGIN_HINT = (
    "sign in with 'az login' (and 'az account set --subscription ...'), or set "
    "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal"
)


class CloudLoginError(CloudError):
    """No usable Azure credential: not logged in, or the token was rejected."""


class CloudPermissionError(CloudError):
    """The signed-in identity lacks a role needed for the operation (HTTP 403)."""


class CloudQuotaError(CloudError):
    """A subscription quota or limit stops the operation."""


class CloudUnsupportedError(CloudError):
    """The region, VM size or feature (e.g. Trusted Launch) does not support the request."""


class CloudConflictError(CloudError):
    """A resource exists in a state or with properties that conflict with the request."""


class CloudNotFoundError(CloudError):
    """A resource the operation needs does not exist (resource group, gallery, disk)."""


class CloudTransientError(CloudError):
    """The service or the network failed in a way that may succeed when retried."""


TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_QUOTA_CODES = frozenset({"QuotaExceeded", "OperationNotAllowed", "ResourceQuotaExceeded"})
_CONFLICT_CODES = frozenset({"Conflict", "ResourceExists", "OperationPreempted"})
_UNSUPPORTED_CODES = frozenset(
    {
        "SkuNotAvailable",
        "NotSupported",
        "FeatureNotSupported",
        "LocationNotAvailableForResourceType",
    }
)
_UNSUPPORTED_WORDS = ("trustedlaunch", "trusted launch", "securitytype", "security type")


def error_code(exc: HttpResponseError) -> str:
    """The service's error code (ARM ``error.code`` or the storage ``x-ms-error-code``)."""
    if exc.error is not None and exc.error.code:
        return str(exc.error.code)
    code = getattr(exc, "error_code", None)
    if code:
        # Storage gives an enum member; its value is the wire code.
        return str(getattr(code, "value", code))
    headers = getattr(exc.response, "headers", None) or {}
    return str(headers.get("x-ms-error-code", ""))


# The signature of an upload SAS grants write access to the disk: never print it.
_SAS_SIGNATURE = re.compile(r"(?i)\b(sig=)[^&\s'\"]+")


def _brief(text: str, limit: int = 300) -> str:
    line = _SAS_SIGNATURE.sub(r"\1REDACTED", " ".join(text.split()))
    for marker in (" Code:", " Content:", " RequestId:"):
        line = line.split(marker, 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _service_message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return _brief(str(exc.error.message))
    return _brief(exc.message or str(exc))


def translate(exc: Exception, action: str) -> CloudError:
    """The aicert error for an exception the Azure SDK raised while doing ``action``."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, ClientAuthenticationError) and exc.response is None:
        # Raised by the credential itself: no source (environment, managed identity,
        # Azure CLI, ...) could get a token.
        return CloudLoginError(f"not logged in to Azure (while {action}): {LOGIN_HINT}")
    if isinstance(exc, ClientAuthenticationError) and exc.status_code == 401:
        return CloudLoginError(
            f"Azure did not accept the credentials (while {action}, HTTP {exc.status_code}): "
            f"{LOGIN_HINT}"
        )
    if isinstance(exc, HttpResponseError):
        return _from_response(exc, action)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return CloudTransientError(f"cannot reach Azure while {action}: {_brief(str(exc))}")
    if isinstance(exc, AzureError):
        return CloudError(f"Azure failed while {action}: {_brief(str(exc))}")
    raise exc


def _from_response(exc: HttpResponseError, action: str) -> CloudError:
    status = exc.status_code or 0
    code = error_code(exc)
    message = _service_message(exc)
    detail = f"{code}: {message}" if code else message
    lowered = message.lower()
    if code == "AuthenticationFailed" and status == 403:
        # Storage refusing the upload SAS: expired, revoked, or the clock is off.
        return CloudPermissionError(
            f"the disk upload URL was refused while {action} ({detail}); it may have "
            "expired or been revoked: run the deploy again"
        )
    if code in ("AuthorizationFailed", "LinkedAuthorizationFailed") or status == 403:
        return CloudPermissionError(
            f"permission denied while {action} ({detail}); the signed-in identity needs the "
            "roles listed in docs/azure.md (e.g. Contributor on the resource group)"
        )
    if code in _QUOTA_CODES and ("quota" in lowered or code != "OperationNotAllowed"):
        return CloudQuotaError(
            f"quota exceeded while {action} ({detail}); request more quota for the region "
            "or pick another region or VM size"
        )
    if code in _UNSUPPORTED_CODES or any(word in lowered for word in _UNSUPPORTED_WORDS):
        return CloudUnsupportedError(
            f"not supported while {action} ({detail}); Trusted Launch needs a Gen2 VM size "
            "that supports it in the chosen region"
        )
    if code == "ResourceGroupNotFound":
        return CloudNotFoundError(
            f"{message} (while {action}); create it first with 'az group create'"
        )
    if status == 404:
        return CloudNotFoundError(f"not found while {action} ({detail})")
    if status == 409 or code in _CONFLICT_CODES:
        return CloudConflictError(f"conflict while {action} ({detail})")
    if status in TRANSIENT_STATUS:
        return CloudTransientError(f"Azure failed while {action} (HTTP {status}, {detail})")
    return CloudError(f"Azure refused the request while {action} (HTTP {status}, {detail})")


@contextmanager
def azure_call(action: str) -> Iterator[None]:
    """Run SDK calls, turning their exceptions into one-line CloudErrors naming ``action``."""
    try:
        yield
    except AzureError as exc:
        raise translate(exc, action) from exc
