"""The boto3 clients aicert uses (EC2 and the EBS direct APIs), built in one place.

botocore's own retries are off: :func:`aicert.builder.platforms.aws.errors.call`
retries throttled requests itself, with backoff, so that the policy (and the
one-line error once it gives up) is the same for every call. Tests pass the
endpoint of a local moto server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from .errors import RetryPolicy, call, translate

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class ClientOptions:
    """How the clients talk to AWS: ``endpoint_url`` replaces AWS's endpoints (tests)."""

    endpoint_url: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class AwsClients:
    """EC2 and EBS clients of one region and credential."""

    region: str
    session: Any
    options: ClientOptions = field(default_factory=ClientOptions)
    ec2: Any = field(init=False)
    ebs: Any = field(init=False)

    def __post_init__(self) -> None:
        config = Config(
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
        )
        kwargs: dict[str, Any] = {"region_name": self.region, "config": config}
        if self.options.endpoint_url is not None:
            kwargs["endpoint_url"] = self.options.endpoint_url
        self.ec2 = self.session.client("ec2", **kwargs)
        self.ebs = self.session.client("ebs", **kwargs)

    @property
    def retry(self) -> RetryPolicy:
        return self.options.retry

    def ec2_call(self, action: str, operation: str, **kwargs: Any) -> Any:
        """EC2 ``operation`` (e.g. ``run_instances``), retried and translated as :func:`call`."""
        return call(action, getattr(self.ec2, operation), self.retry, **kwargs)

    def ebs_call(self, action: str, operation: str, **kwargs: Any) -> Any:
        return call(action, getattr(self.ebs, operation), self.retry, **kwargs)


def connect(
    region: str, *, profile: str | None = None, options: ClientOptions | None = None
) -> AwsClients:
    """Clients for ``region``, after one cheap call (EC2 DescribeRegions) that checks the
    credential, so a bad login fails before any upload."""
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:  # e.g. a --profile that ~/.aws/config does not name
        raise translate(exc, "reading the AWS configuration") from exc
    clients = AwsClients(region=region, session=session, options=options or ClientOptions())
    clients.ec2_call(f"signing in to EC2 in {region}", "describe_regions", RegionNames=[region])
    return clients
