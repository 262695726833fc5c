"""AWS failures as one-line aicert errors, and retries with backoff for throttling.

Every boto3 call goes through :func:`call`, which retries what AWS reports as
throttling or a transient failure (with exponential backoff and jitter) and turns
what it finally raises into a :class:`~aicert.verifier.errors.CloudError` subclass
that names the action and what to do next.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aicert.verifier.errors import CloudError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

LOGIN_HINT = (
    "configure credentials with 'aws configure' or 'aws sso login', or set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_PROFILE or --profile to pick one)"
)


class CloudLoginError(CloudError):
    """No usable AWS credential, or AWS rejected it."""


class CloudPermissionError(CloudError):
    """The caller's IAM identity may not perform the operation."""


class CloudQuotaError(CloudError):
    """An account limit (vCPUs, snapshots, security groups) stops the operation."""


class CloudUnsupportedError(CloudError):
    """The region or instance type does not support the request (NitroTPM, UEFI)."""


class CloudConflictError(CloudError):
    """A resource exists in a state or with properties that conflict with the request."""


class CloudNotFoundError(CloudError):
    """A resource the operation needs does not exist."""


class CloudTransientError(CloudError):
    """AWS throttled or failed the request every time it was retried."""


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "InternalError",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
    }
)
_LOGIN_CODES = frozenset(
    {"AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken"}
)
_PERMISSION_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
_QUOTA_CODES = frozenset(
    {
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "SnapshotLimitExceeded",
        "RulesPerSecurityGroupLimitExceeded",
        "SecurityGroupLimitExceeded",
        "ResourceLimitExceeded",
        "ServiceQuotaExceededException",
        "InsufficientInstanceCapacity",
    }
)
_UNSUPPORTED_CODES = frozenset(
    {"Unsupported", "UnsupportedOperation", "InvalidParameterCombination"}
)
_CONFLICT_CODES = frozenset(
    {
        "InvalidGroup.Duplicate",
        "ConflictException",
        "InvalidAMIName.Duplicate",
        "DependencyViolation",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a throttled request."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """Full jitter over an exponential ceiling (attempt counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _brief(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def translate(exc: Exception, action: str) -> CloudError:
    """The aicert error for what boto3 raised while doing ``action``."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CloudLoginError(f"no AWS credentials (while {action}): {LOGIN_HINT}")
    if isinstance(exc, ProfileNotFound):
        return CloudLoginError(f"{exc} (while {action}): {LOGIN_HINT}")
    if isinstance(exc, NoRegionError):
        return CloudError(f"no AWS region (while {action}): pass --region or set AWS_REGION")
    if isinstance(exc, EndpointConnectionError):
        return CloudTransientError(f"cannot reach AWS while {action}: {_brief(str(exc))}")
    if isinstance(exc, ClientError):
        return _from_response(exc, action)
    if isinstance(exc, BotoCoreError):
        return CloudError(f"AWS failed while {action}: {_brief(str(exc))}")
    raise exc


def _from_response(exc: ClientError, action: str) -> CloudError:
    code = error_code(exc)
    message = _brief(str(exc.response.get("Error", {}).get("Message", "")) or str(exc))
    detail = f"{code}: {message}" if code else message
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _LOGIN_CODES:
        return CloudLoginError(
            f"AWS did not accept the credentials while {action} ({detail}): {LOGIN_HINT}"
        )
    if code in _PERMISSION_CODES or status == 403:
        return CloudPermissionError(
            f"permission denied while {action} ({detail}); the IAM identity needs the "
            "permissions listed in docs/aws.md"
        )
    if code in _QUOTA_CODES:
        return CloudQuotaError(
            f"limit reached while {action} ({detail}); request more quota for the region "
            "or pick another region or instance type"
        )
    if code in _UNSUPPORTED_CODES:
        return CloudUnsupportedError(
            f"not supported while {action} ({detail}); NitroTPM needs a Nitro instance type "
            "that supports it (e.g. m6i, c6i, r6i) booted in UEFI mode"
        )
    if code in _CONFLICT_CODES or status == 409:
        return CloudConflictError(f"conflict while {action} ({detail})")
    if code.endswith(".NotFound") or status == 404:
        return CloudNotFoundError(f"not found while {action} ({detail})")
    if code in THROTTLING_CODES or status in (429, 500, 502, 503, 504):
        return CloudTransientError(
            f"AWS kept throttling or failing while {action} ({detail}); wait a minute and "
            "run the command again"
        )
    return CloudError(f"AWS refused the request while {action} ({detail})")


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, EndpointConnectionError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(exc) in THROTTLING_CODES or status in (429, 500, 502, 503, 504)
    return False


def call(action: str, fn: Callable[..., Any], policy: RetryPolicy, /, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, retried with backoff while AWS throttles; one-line CloudError after."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            if attempt < policy.attempts and _retryable(exc):
                policy.sleep(policy.delay(attempt))
                continue
            raise translate(exc, action) from exc
    raise AssertionError("unreachable: the last attempt returns or raises")
