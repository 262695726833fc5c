"""The Azure SDK clients aicert uses, built in one place.

Every client takes the same credential and, when given, the same HTTP transport:
tests pass a transport that talks to a local fake of Azure Resource Manager and
the blob page endpoint, so no test reaches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.identity import DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.storage.blob import BlobClient
from requests.adapters import HTTPAdapter

from .errors import azure_call

MANAGEMENT_SCOPE = "https://management.azure.com/.default"


@dataclass(frozen=True)
class ClientOptions:
    """How the clients talk to Azure.

    ``transport`` replaces the HTTP transport of every client (tests).
    ``polling_interval`` is the wait between polls of a long-running operation when
    Azure sends no Retry-After; the SDK default of 30 s would add minutes to a deploy
    made of a dozen short operations.
    """

    transport: HttpTransport[Any, Any] | None = None
    polling_interval: float = 5.0

    def sdk_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"polling_interval": self.polling_interval}
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return kwargs


def default_credential(options: ClientOptions | None = None) -> TokenCredential:
    """azure-identity's DefaultAzureCredential (environment, managed identity, Azure CLI, ...)."""
    opts = options or ClientOptions()
    if opts.transport is not None:
        return DefaultAzureCredential(transport=opts.transport)
    return DefaultAzureCredential()


def check_login(credential: TokenCredential) -> None:
    """Fail early, with one line, when no credential yields a management token."""
    with azure_call("signing in to Azure Resource Manager"):
        credential.get_token(MANAGEMENT_SCOPE)


@dataclass
class AzureClients:
    """The management clients of one subscription, plus page-blob clients for upload SAS URLs."""

    subscription_id: str
    credential: TokenCredential
    options: ClientOptions = field(default_factory=ClientOptions)
    compute: ComputeManagementClient = field(init=False)
    network: NetworkManagementClient = field(init=False)
    resources: ResourceManagementClient = field(init=False)

    def __post_init__(self) -> None:
        kwargs = self.options.sdk_kwargs()
        self.compute = ComputeManagementClient(self.credential, self.subscription_id, **kwargs)
        self.network = NetworkManagementClient(self.credential, self.subscription_id, **kwargs)
        self.resources = ResourceManagementClient(self.credential, self.subscription_id, **kwargs)

    def page_blob(self, sas_url: str, *, connections: int = 8) -> BlobClient:
        """A client for the upload SAS of a managed disk, pooling ``connections`` connections
        (one per parallel writer; requests' default pool of 10 would churn above that).

        The SDK's own retries are off: :mod:`aicert.builder.platforms.azure.upload` retries each
        page write itself, with backoff, and counts the attempts.
        """
        transport = self.options.transport
        if transport is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(connections, 10))
            session.mount("https://", adapter)
            transport = RequestsTransport(session=session, session_owner=True)
        return BlobClient.from_blob_url(sas_url, transport=transport, retry_total=0)


def connect(
    subscription_id: str,
    *,
    credential: TokenCredential | None = None,
    options: ClientOptions | None = None,
) -> AzureClients:
    """Clients for ``subscription_id``, after checking that the credential works."""
    opts = options or ClientOptions()
    cred = credential if credential is not None else default_credential(opts)
    check_login(cred)
    return AzureClients(subscription_id=subscription_id, credential=cred, options=opts)
