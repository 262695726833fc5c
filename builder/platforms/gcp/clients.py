"""The Google Cloud clients one command uses, and how they wait for operations.

``endpoint`` points every client at one base URL (tests: a fake on 127.0.0.1, given
with ``http://``); None uses Google's. Credentials default to Application Default
Credentials.

Operations are polled here, through operations clients made with the same endpoint:
google-cloud-compute's own ``ExtendedOperation.result()`` polls through an operations
client that its transport builds without the caller's client options, so it would
poll compute.googleapis.com whatever endpoint was given (seen with 1.57.0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import google.auth
from aicert.builder.platforms.gcp.errors import CloudTransientError, RetryPolicy, gcp_call
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.extended_operation import ExtendedOperation
from google.auth.credentials import Credentials
from google.cloud import compute_v1, storage

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


@dataclass(frozen=True)
class GcpClients:
    project: str
    images: compute_v1.ImagesClient
    instances: compute_v1.InstancesClient
    firewalls: compute_v1.FirewallsClient
    storage: storage.Client
    global_operations: compute_v1.GlobalOperationsClient
    zone_operations: compute_v1.ZoneOperationsClient
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_interval: float = 2.0
    operation_timeout: float = 1800.0

    def call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` through :func:`gcp_call`."""
        return gcp_call(action, lambda: function(*args, **kwargs), self.retry)

    def wait(self, action: str, operation: ExtendedOperation, zone: str | None = None) -> None:
        """Poll ``operation`` (global, or in ``zone``) until DONE; its error as a CloudError."""
        deadline = time.monotonic() + self.operation_timeout
        name = operation.name
        while True:
            if zone is None:
                state = self.call(
                    action, self.global_operations.get, project=self.project, operation=name
                )
            else:
                state = self.call(
                    action,
                    self.zone_operations.get,
                    project=self.project,
                    zone=zone,
                    operation=name,
                )
            if state.status == compute_v1.Operation.Status.DONE:
                break
            if time.monotonic() > deadline:
                raise CloudTransientError(
                    f"{action}: operation {name} not done after {self.operation_timeout:.0f} s"
                )
            time.sleep(self.poll_interval)
        if state.error and state.error.errors:
            first = state.error.errors[0]
            status = state.http_error_status_code or 400
            message = f"{first.code}: {first.message}"

            def failed() -> None:
                raise gexc.from_http_status(status, message)

            # Through gcp_call for the same mapping; a failed operation is not re-run.
            gcp_call(action, failed, RetryPolicy(attempts=1))


def connect(
    project: str,
    *,
    endpoint: str | None = None,
    credentials: Credentials | None = None,
    retry: RetryPolicy | None = None,
    poll_interval: float = 2.0,
) -> GcpClients:
    policy = retry or RetryPolicy()
    if credentials is None:
        credentials, _ = gcp_call(
            "looking up Application Default Credentials",
            lambda: google.auth.default(scopes=list(_SCOPES)),
            policy,
        )
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    compute: dict[str, Any] = {"credentials": credentials, "client_options": options}
    return GcpClients(
        project=project,
        images=compute_v1.ImagesClient(**compute),
        instances=compute_v1.InstancesClient(**compute),
        firewalls=compute_v1.FirewallsClient(**compute),
        storage=storage.Client(
            project=project,
            credentials=credentials,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        ),
        global_operations=compute_v1.GlobalOperationsClient(**compute),
        zone_operations=compute_v1.ZoneOperationsClient(**compute),
        retry=policy,
        poll_interval=poll_interval,
    )
