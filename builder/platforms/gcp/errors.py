"""Google Cloud failures as one-line aicert errors, and retries of throttled calls.

Every call into the Google Cloud SDKs runs through :func:`gcp_call`: throttling and
unavailability (HTTP 429, 503; also 500, 502, 504) are retried with exponential
backoff, then reported, like every other SDK error, as a
:class:`~aicert.verifier.errors.CloudError` subclass (exit 6).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from aicert.verifier.errors import CloudError
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

LOGIN_HINT = (
    "sign in with 'gcloud auth application-default login', or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
)

_T = TypeVar("_T")


class CloudLoginError(CloudError):
    """No usable Google credential, or it was rejected (HTTP 401)."""


class CloudPermissionError(CloudError):
    """The identity lacks a permission the operation needs (HTTP 403)."""


class CloudNotFoundError(CloudError):
    """A resource the operation needs does not exist (project, bucket, zone, image)."""


class CloudConflictError(CloudError):
    """A resource exists with properties that conflict with the request."""


class CloudTransientError(CloudError):
    """Throttled or unavailable, still so after every retry."""


TRANSIENT = (
    gexc.TooManyRequests,
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.GatewayTimeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``first`` seconds, doubled each time up to ``longest``."""

    attempts: int = 6
    first: float = 1.0
    longest: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delays(self) -> list[float]:
        return [min(self.first * 2**n, self.longest) for n in range(self.attempts - 1)]


def gcp_call(action: str, call: Callable[[], _T], retry: RetryPolicy) -> _T:
    """``call()``, retried while Google throttles it; any failure as a CloudError."""
    delays = retry.delays()
    for attempt in range(len(delays) + 1):
        try:
            return call()
        except TRANSIENT as exc:
            if attempt == len(delays):
                raise CloudTransientError(
                    f"Google Cloud kept refusing while {action} (HTTP {exc.code},"
                    f" {attempt + 1} attempts): {_brief(exc.message)}; try again later"
                ) from None
            retry.sleep(delays[attempt])
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, action) from None
        except (requests.exceptions.ConnectionError, auth_exc.TransportError) as exc:
            if attempt == len(delays):
                raise CloudTransientError(
                    f"cannot reach Google Cloud while {action} ({attempt + 1} attempts):"
                    f" {_brief(str(exc))}"
                ) from None
            retry.sleep(delays[attempt])
        except auth_exc.DefaultCredentialsError:
            raise CloudLoginError(f"no Google credentials (while {action}): {LOGIN_HINT}") from None
        except auth_exc.GoogleAuthError as exc:
            raise CloudLoginError(
                f"Google did not accept the credentials (while {action}): {_brief(str(exc))};"
                f" {LOGIN_HINT}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def translate(exc: gexc.GoogleAPICallError, action: str) -> CloudError:
    detail = f"HTTP {exc.code}: {_brief(exc.message)}"
    if isinstance(exc, gexc.Unauthorized):
        return CloudLoginError(f"Google rejected the credentials while {action}: {LOGIN_HINT}")
    if isinstance(exc, gexc.Forbidden):
        return CloudPermissionError(
            f"permission denied while {action} ({detail}); grant the roles in docs/gcp.md"
        )
    if isinstance(exc, gexc.NotFound):
        return CloudNotFoundError(f"not found while {action} ({detail})")
    if isinstance(exc, gexc.Conflict):
        return CloudConflictError(f"conflict while {action} ({detail})")
    return CloudError(f"Google Cloud failed while {action} ({detail})")


def _brief(text: str | None, limit: int = 300) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
