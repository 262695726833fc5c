"""A moto server on 127.0.0.1 for the AWS tests, plus the one call moto lacks.

moto (in server mode, started here) serves EC2 and the EBS direct APIs to the real
boto3. Its RegisterImage takes only a name and a description: the parameters that
matter here (BootMode, TpmSupport, UefiData, the root snapshot, the tags) are
dropped, and DescribeImages never reports TpmSupport. :class:`MotoAws` replaces
that one handler in moto's process with a small one of its own that records the
request and applies what DescribeImages reports. Throttling is injected on the
client side, as a botocore response the real SDK parses.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
from aicert.builder.platforms.aws.clients import AwsClients, ClientOptions
from aicert.builder.platforms.aws.errors import RetryPolicy
from botocore.awsrequest import AWSResponse
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.amis import Ami
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.utils import random_ami_id
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class MotoAws:
    """One moto server; :meth:`reset` empties it between tests."""

    url: str
    registered: list[dict[str, Any]] = field(default_factory=list)
    """The parameters of every RegisterImage, as moto parsed them."""

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.registered.clear()

    def options(self, **retry: Any) -> ClientOptions:
        policy = RetryPolicy(**{"base_delay": 0.0, "sleep": lambda _s: None, **retry})
        return ClientOptions(endpoint_url=self.url, retry=policy)


def _register_image(self: AmisResponse) -> Any:
    """RegisterImage with the parameters real EC2 keeps (moto's own drops them)."""
    from moto.core.responses import ActionResult

    params = {
        key: self._get_param(key)
        for key in (
            "Name",
            "Description",
            "Architecture",
            "BootMode",
            "TpmSupport",
            "UefiData",
            "ImdsSupport",
            "EnaSupport",
            "VirtualizationType",
            "RootDeviceName",
            "BlockDeviceMappings",
            "TagSpecifications",
        )
    }
    MOTO.registered.append(params)
    backend = self.ec2_backend
    if any(ami.name == params["Name"] for ami in backend.amis.values()):
        raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {params['Name']} is in use")
    ami = Ami(
        backend,
        random_ami_id(),
        name=params["Name"],
        description=params["Description"],
        architecture=params["Architecture"],
        virtualization_type=params["VirtualizationType"],
        root_device_name=params["RootDeviceName"] or "/dev/sda1",
        root_device_type="ebs",
        boot_mode=params["BootMode"] or "legacy-bios",
    )
    ami.tpm_support = params["TpmSupport"]
    backend.amis[ami.id] = ami
    for spec in params["TagSpecifications"] or []:
        if spec["ResourceType"] == "image":
            backend.create_tags([ami.id], {t["Key"]: t["Value"] for t in spec["Tags"]})
    return ActionResult({"ImageId": ami.id})


MOTO = MotoAws(url="")


@contextlib.contextmanager
def moto_server() -> Iterator[MotoAws]:
    original = AmisResponse.register_image
    AmisResponse.register_image = _register_image  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        MOTO.url = f"http://{host}:{port}"
        yield MOTO
    finally:
        server.stop()
        AmisResponse.register_image = original  # type: ignore[method-assign]


def _error_response(request: Any, status: int, code: str) -> AWSResponse:
    if "ebs." in request.url or "/snapshots" in request.url:
        body = f'{{"message": "injected {code}"}}'.encode()
        headers = {"x-amzn-ErrorType": code, "content-type": "application/json"}
    else:
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>injected {code}</Message>"
            "</Error></Errors><RequestID>x</RequestID></Response>"
        ).encode()
        headers = {"content-type": "text/xml"}
    return AWSResponse(request.url, status, headers, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kw: Any) -> Iterator[bytes]:
        yield self.body


@dataclass
class Injected:
    remaining: int | None
    hits: int = 0


def inject(
    clients: AwsClients,
    service: str,
    operation: str,
    status: int,
    code: str,
    *,
    times: int | None = 1,
) -> Injected:
    """Answer the next ``times`` (None: every) ``operation`` calls with an error."""
    state = Injected(times)
    client = clients.ec2 if service == "ec2" else clients.ebs

    def before_send(request: Any, **_kw: Any) -> AWSResponse | None:
        if state.remaining is not None and state.remaining <= 0:
            return None
        state.hits += 1
        if state.remaining is not None:
            state.remaining -= 1
        return _error_response(request, status, code)

    client.meta.events.register(f"before-send.{service}.{operation}", before_send)
    return state


def owned(clients: AwsClients) -> dict[str, set[str]]:
    """What the account holds that a test could have left: images, snapshots, groups,
    instances not terminated."""
    ec2 = clients.ec2
    instances = {
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    }
    groups = {
        g["GroupId"]
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] != "default"
    }
    return {
        "images": {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
        "snapshots": {
            s["SnapshotId"]
            for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            if not re.match(r"Auto-created snapshot for AMI", s.get("Description", ""))
        },
        "groups": groups,
        "instances": instances,
    }
