"""A local fake of Azure Resource Manager and the managed-disk upload (page blob) endpoint.

It is plugged into the real Azure SDK as its HTTP transport: a ``requests.Session``
whose ``https://`` adapter answers from memory. It keeps resources as ARM JSON,
answers with the status codes of the REST API specification (the SDK raises on any
other), runs long-running operations through ``Azure-AsyncOperation`` and
``Location`` polling, grants and revokes upload SAS URLs, and stores page writes so
tests can rebuild the uploaded blob. Requests to any other host fail like an
unreachable network and are recorded in :attr:`FakeAzure.refused`.

Faults can be injected per request (status, error code, how many times) and per
long-running operation (the operation ends "Failed").
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

ARM_HOST = "management.azure.com"
BLOB_HOST_SUFFIX = ".blob.storage.azure.net"
TOKEN = "fake-arm-token"  # noqa: S105 - a fixed token for the fake, not a secret
MIB = 1 << 20
MAX_PAGE_WRITE = 4 * MIB
MIN_UPLOAD_SIZE = 20 * MIB + 512
MAX_UPLOAD_SIZE = 32 * (1 << 40) + 512

# Resource types (ARM type, lower case) → status code of a successful create.
CREATE_STATUS = {
    "microsoft.compute/disks": 202,
    "microsoft.compute/galleries": 201,
    "microsoft.compute/galleries/images": 201,
    "microsoft.compute/galleries/images/versions": 201,
    "microsoft.network/networksecuritygroups": 201,
    "microsoft.network/publicipaddresses": 201,
    "microsoft.network/virtualnetworks": 201,
    "microsoft.network/networkinterfaces": 201,
    "microsoft.compute/virtualmachines": 201,
}


Reply = tuple[int, dict[str, str], bytes]


class FakeCredential:
    """A credential that hands out one fixed bearer token."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(TOKEN, int(time.time()) + 3600)


@dataclass
class Fault:
    """Answer matching requests with ``status`` (``times`` times; None = always)."""

    method: str
    pattern: str
    status: int
    code: str
    message: str
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, url: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return method == self.method and re.search(self.pattern, url) is not None


@dataclass
class Operation:
    """A long-running operation: InProgress for ``polls_left`` polls, then done."""

    id: str
    polls_left: int
    finish: Callable[[], None]  # run once, when the operation completes
    output: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    done: bool = False


@dataclass
class PageBlob:
    """The page blob behind an upload disk: its size and the page writes, in order."""

    size: int
    writes: list[tuple[int, bytes]] = field(default_factory=list)

    def write_to(self, path: Path) -> None:
        """Write the blob's bytes (zeros where never written) to ``path``, sparsely."""
        with path.open("wb") as f:
            f.truncate(self.size)
            for offset, data in self.writes:
                f.seek(offset)
                f.write(data)

    @property
    def bytes_written(self) -> int:
        return sum(len(data) for _, data in self.writes)


class _Adapter(HTTPAdapter):
    def __init__(self, fake: FakeAzure) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        status, headers, body = self.fake.handle(request)
        raw = HTTPResponse(
            body=io.BytesIO(body),
            headers=headers,
            status=status,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)


def _arm_error(status: int, code: str, message: str) -> Reply:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json", "x-ms-error-code": code}, body


def _storage_error(status: int, code: str, message: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    return status, {"Content-Type": "application/xml", "x-ms-error-code": code}, body


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Reply:
    out = {"Content-Type": "application/json", **(headers or {})}
    return status, out, json.dumps(obj).encode() if obj is not None else b""


class FakeAzure:
    """In-memory Azure: resource groups, compute and network resources, upload blobs."""

    def __init__(self, *, subscription: str = "00000000-0000-0000-0000-000000000000") -> None:
        self.subscription = subscription
        self.lock = threading.RLock()
        self.resource_groups: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, PageBlob] = {}
        self.retired_blobs: dict[str, PageBlob] = {}  # blobs of deleted disks, for inspection
        self.sas: dict[str, str] = {}  # signature → lower-case disk id
        self.operations: dict[str, Operation] = {}
        self.failing_operations: dict[str, dict[str, str]] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.put_bodies: dict[str, list[dict[str, Any]]] = {}
        self.lro_polls = 1
        self.page_latency = 0.0
        self.page_in_flight = 0
        self.max_page_in_flight = 0
        self.page_write_count = 0
        # The address every new public IP gets (None: a fresh 20.50.x.y each); tests that
        # stand a local agent in for the VM's set it to 127.0.0.1.
        self.public_ip_address: str | None = None
        self._ids = itertools.count(1)
        self.session = requests.Session()
        self.session.mount("https://", _Adapter(self))
        self.session.mount("http://", _Adapter(self))

    # ---- set-up and inspection used by tests -------------------------------------------

    def transport(self) -> RequestsTransport:
        return RequestsTransport(session=self.session, session_owner=False)

    def add_resource_group(self, name: str, location: str = "westeurope") -> None:
        rid = f"/subscriptions/{self.subscription}/resourceGroups/{name}"
        self.resource_groups[name.lower()] = {
            "id": rid,
            "name": name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": location,
            "properties": {"provisioningState": "Succeeded"},
        }

    def put_resource(self, rid: str, body: dict[str, Any]) -> None:
        """Create a resource directly (as if made by someone else), already provisioned."""
        parsed = _parse_resource_path(urlsplit(rid).path)
        if parsed is None:
            raise ValueError(rid)
        _, rtype, name = parsed
        self.resources[rid.lower()] = self._stored(rid, rtype, name, body, "Succeeded")

    def inject(
        self,
        method: str,
        pattern: str,
        status: int,
        code: str = "InternalServerError",
        message: str = "injected failure",
        *,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        fault = Fault(method, pattern, status, code, message, times, headers or {})
        self.faults.append(fault)
        return fault

    def fail_operations_of(self, arm_type: str, code: str, message: str) -> None:
        """Make every long-running create of ``arm_type`` end Failed with ``code``."""
        self.failing_operations[arm_type.lower()] = {"code": code, "message": message}

    def settle(self) -> None:
        """Complete every pending long-running operation (time passes)."""
        with self.lock:
            for op in self.operations.values():
                self._complete(op)

    def get(self, rid: str) -> dict[str, Any] | None:
        return self.resources.get(rid.lower())

    def types(self) -> set[str]:
        """The ARM types of every resource that exists."""
        return {r["type"] for r in self.resources.values()}

    def of_type(self, arm_type: str) -> list[dict[str, Any]]:
        return [r for r in self.resources.values() if r["type"].lower() == arm_type.lower()]

    def blob_of(self, disk_id: str) -> PageBlob:
        """The page blob of a disk, live or deleted."""
        key = disk_id.lower()
        return self.blobs[key] if key in self.blobs else self.retired_blobs[key]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, u in self.requests if m == method and re.search(pattern, u))

    # ---- request handling --------------------------------------------------------------

    def handle(self, req: requests.PreparedRequest) -> Reply:
        url = str(req.url)
        method = str(req.method)
        parts = urlsplit(url)
        host = parts.hostname or ""
        with self.lock:
            self.requests.append((method, url))
            if host != ARM_HOST and not host.endswith(BLOB_HOST_SUFFIX):
                self.refused.append(url)
                raise requests.ConnectionError(f"fake Azure: no route to host {host}")
            for fault in self.faults:
                if fault.matches(method, url):
                    fault.hits += 1
                    maker = _arm_error if host == ARM_HOST else _storage_error
                    status, headers, body = maker(fault.status, fault.code, fault.message)
                    return status, {**headers, **fault.headers}, body
        body = req.body if isinstance(req.body, bytes) else (req.body or "").encode()
        if host == ARM_HOST:
            if req.headers.get("Authorization") != f"Bearer {TOKEN}":
                return _arm_error(401, "AuthenticationFailed", "no valid bearer token")
            with self.lock:
                return self._arm(method, parts.path, parse_qs(parts.query), body)
        return self._blob(method, parts.path, parse_qs(parts.query), req.headers, body)

    # ---- ARM ---------------------------------------------------------------------------

    def _arm(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Reply:
        if "api-version" not in query:
            return _arm_error(400, "MissingApiVersionParameter", "api-version is required")
        segs = [s for s in path.split("/") if s]
        low = [s.lower() for s in segs]
        if low[2:3] == ["providers"] and "operations" in low:
            return self._operation(segs[-1], monitor="monitor" in query)
        if low[:1] != ["subscriptions"] or len(low) < 4 or low[2] != "resourcegroups":
            return _arm_error(404, "NotFound", f"no route for {path}")
        rg = low[3]
        if len(low) == 4:
            return self._resource_group(method, segs[3], body)
        if rg not in self.resource_groups:
            return _arm_error(
                404, "ResourceGroupNotFound", f"Resource group '{segs[3]}' could not be found."
            )
        if len(low) == 5 and low[4] == "resources":
            return self._list_resources(rg, query)
        action = None
        if low[-1] in ("begingetaccess", "endgetaccess"):
            action = low[-1]
            segs, low = segs[:-1], low[:-1]
        parsed = _parse_resource_path("/" + "/".join(segs))
        if parsed is None:
            return _arm_error(404, "NotFound", f"no route for {path}")
        _, rtype, name = parsed
        rid = "/" + "/".join(segs)
        if action == "begingetaccess" and method == "POST":
            return self._grant_access(rid, body)
        if action == "endgetaccess" and method == "POST":
            return self._revoke_access(rid)
        if method == "GET":
            found = self.resources.get(rid.lower())
            if found is None:
                return _not_found(rtype, name, segs[3])
            return _json(200, found)
        if method == "PUT":
            return self._put(rid, rtype, name, json.loads(body or b"{}"))
        if method == "PATCH":
            return self._patch(rid, rtype, name, json.loads(body or b"{}"))
        if method == "DELETE":
            return self._delete(rid, rtype)
        return _arm_error(405, "MethodNotAllowed", f"{method} {path}")

    def _resource_group(self, method: str, name: str, body: bytes) -> Reply:
        rg = self.resource_groups.get(name.lower())
        if method in ("GET", "HEAD"):
            if rg is None:
                return _arm_error(
                    404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
                )
            return (204, {}, b"") if method == "HEAD" else _json(200, rg)
        if method == "PUT":
            self.add_resource_group(name, json.loads(body)["location"])
            return _json(201 if rg is None else 200, self.resource_groups[name.lower()])
        return _arm_error(405, "MethodNotAllowed", f"{method} on a resource group")

    def _list_resources(self, rg: str, query: dict[str, list[str]]) -> Reply:
        wanted: tuple[str, str | None] | None = None
        flt = query.get("$filter", [""])[0]
        if flt:
            m = re.fullmatch(r"tagName eq '([^']*)'(?: and tagValue eq '([^']*)')?", flt.strip())
            if m is None:
                return _arm_error(400, "InvalidFilterInQueryString", f"unsupported $filter {flt}")
            wanted = (m.group(1), m.group(2))
        out = []
        for res in self.resources.values():
            if res["id"].lower().split("/")[4] != rg:
                continue
            tags = res.get("tags") or {}
            item = {k: res[k] for k in ("id", "type", "location")}
            # The generic list names a nested resource by its path: "gallery/image/1.0.0".
            item["name"] = "/".join(res["id"].split("/")[8::2])
            if wanted is None:
                item["tags"] = tags
            elif wanted[0] not in tags or (wanted[1] is not None and tags[wanted[0]] != wanted[1]):
                continue
            out.append(item)
        return _json(200, {"value": out})

    def _stored(
        self, rid: str, rtype: str, name: str, body: dict[str, Any], state: str
    ) -> dict[str, Any]:
        stored = json.loads(json.dumps(body))
        stored.update({"id": rid, "name": name, "type": _canonical_type(rtype)})
        props = stored.setdefault("properties", {})
        props["provisioningState"] = state
        if rtype == "microsoft.compute/disks":
            props.setdefault("diskState", "Unattached")
            props["uniqueId"] = str(uuid.uuid4())
            props["timeCreated"] = "2026-01-01T00:00:00Z"
        elif rtype == "microsoft.network/publicipaddresses":
            props["ipAddress"] = (
                self.public_ip_address
                or f"20.50.{len(self.resources) % 250}.{next(self._ids) % 250 + 1}"
            )
        elif rtype == "microsoft.network/virtualnetworks":
            for subnet in props.get("subnets", []):
                subnet["id"] = f"{rid}/subnets/{subnet['name']}"
                subnet.setdefault("properties", {})["provisioningState"] = "Succeeded"
        elif rtype == "microsoft.compute/virtualmachines":
            props["vmId"] = str(uuid.uuid4())
        return stored

    def _put(self, rid: str, rtype: str, name: str, body: dict[str, Any]) -> Reply:
        if rtype not in CREATE_STATUS:
            return _arm_error(400, "NoRegisteredProviderFound", f"unknown type {rtype}")
        if "location" not in body:
            return _arm_error(400, "LocationRequired", "The location property is required.")
        parent = rid.rsplit("/", 2)[0]
        if rtype.count("/") > 1 and parent.lower() not in self.resources:
            return _arm_error(
                404,
                "ParentResourceNotFound",
                f"Can not perform requested operation on nested "
                f"resource. Parent resource '{parent.rsplit('/', 1)[-1]}' not found.",
            )
        self.put_bodies.setdefault(rid.lower(), []).append(body)
        existing = self.resources.get(rid.lower())
        problem = _VALIDATORS.get(rtype, _no_check)(self, body, existing)
        if problem is not None:
            return _arm_error(*problem)
        stored = self._stored(
            rid, rtype, name, body, "Creating" if existing is None else "Updating"
        )
        if rtype == "microsoft.compute/disks":
            creation = body["properties"]["creationData"]
            if existing is not None:
                stored["properties"]["diskState"] = existing["properties"]["diskState"]
            elif creation["createOption"] == "Upload":
                stored["properties"]["diskState"] = "ReadyToUpload"
                stored["properties"]["diskSizeBytes"] = creation["uploadSizeBytes"] - 512
        self.resources[rid.lower()] = stored
        if rtype == "microsoft.compute/virtualmachines" and existing is None:
            self._make_vm_disks(stored)
        failure = self.failing_operations.get(rtype)

        def finish() -> None:
            current = self.resources.get(rid.lower())
            if current is not None:
                current["properties"]["provisioningState"] = "Failed" if failure else "Succeeded"

        op = self._new_operation(finish, error=failure)
        status = CREATE_STATUS[rtype] if existing is None else 200
        return _json(status, stored, self._async_headers(op, location=False))

    def _make_vm_disks(self, vm: dict[str, Any]) -> None:
        """The VM's OS and data disks, as ARM makes them: named after the VM, untagged."""
        storage = vm["properties"]["storageProfile"]
        storage["osDisk"].setdefault("managedDisk", {})["id"] = self._make_disk(
            vm, f"{vm['name']}_OsDisk_1_{uuid.uuid4().hex}", "FromImage", None
        )
        for data_disk in storage.get("dataDisks", []):
            data_disk.setdefault("managedDisk", {})["id"] = self._make_disk(
                vm,
                f"{vm['name']}_DataDisk_{data_disk['lun']}_{uuid.uuid4().hex}",
                "Empty",
                data_disk["diskSizeGB"],
            )

    def _make_disk(
        self, vm: dict[str, Any], name: str, create_option: str, size_gib: int | None
    ) -> str:
        rg_path = vm["id"].split("/providers/")[0]
        rid = f"{rg_path}/providers/Microsoft.Compute/disks/{name}"
        properties: dict[str, Any] = {"creationData": {"createOption": create_option}}
        if size_gib is not None:
            properties["diskSizeGB"] = size_gib
        body = {"location": vm["location"], "properties": properties}
        disk = self._stored(rid, "microsoft.compute/disks", name, body, "Succeeded")
        disk["properties"]["diskState"] = "Attached"
        self.resources[rid.lower()] = disk
        return rid

    def _patch(self, rid: str, rtype: str, name: str, body: dict[str, Any]) -> Reply:
        found = self.resources.get(rid.lower())
        if found is None:
            return _not_found(rtype, name, rid.split("/")[4])
        if "tags" in body:
            found["tags"] = body["tags"]
        return _json(200, found)

    def _delete(self, rid: str, rtype: str) -> Reply:
        found = self.resources.get(rid.lower())
        if found is None:
            return 204, {}, b""
        prefix = rid.lower() + "/"
        if any(other.startswith(prefix) for other in self.resources):
            return _arm_error(
                409, "CannotDeleteResource", f"{found['name']} contains nested resources"
            )
        if rtype.startswith("microsoft.network/"):
            users = [
                other["id"]
                for key, other in self.resources.items()
                if key != rid.lower()
                and not key.startswith(prefix)
                and rid.lower() in json.dumps(other.get("properties", {})).lower()
            ]
            if users:
                return _arm_error(
                    400, "InUseCannotBeDeleted", f"{found['name']} is in use by {users[0]}"
                )
        if rtype == "microsoft.compute/disks" and found["properties"]["diskState"] in (
            "ActiveUpload",
            "ActiveSAS",
        ):
            return _arm_error(
                409,
                "OperationNotAllowed",
                f"Disk {found['name']} is in state {found['properties']['diskState']}; "
                "revoke access (endGetAccess) before deleting it.",
            )
        found["properties"]["provisioningState"] = "Deleting"

        def finish() -> None:
            self.resources.pop(rid.lower(), None)
            if rtype == "microsoft.compute/virtualmachines":
                for nic in found["properties"]["networkProfile"]["networkInterfaces"]:
                    if nic.get("properties", {}).get("deleteOption") == "Delete":
                        self.resources.pop(nic["id"].lower(), None)
                storage = found["properties"]["storageProfile"]
                for disk in [storage["osDisk"], *storage.get("dataDisks", [])]:
                    if disk.get("deleteOption") == "Delete":
                        self.resources.pop(disk["managedDisk"]["id"].lower(), None)
            blob = self.blobs.pop(rid.lower(), None)
            if blob is not None:
                self.retired_blobs[rid.lower()] = blob

        op = self._new_operation(finish)
        return 202, self._async_headers(op, location=True), b""

    def _grant_access(self, rid: str, body: bytes) -> Reply:
        disk = self.resources.get(rid.lower())
        if disk is None:
            return _not_found("microsoft.compute/disks", rid.rsplit("/", 1)[-1], rid.split("/")[4])
        request = json.loads(body)
        state = disk["properties"]["diskState"]
        if request.get("access") != "Write" or state != "ReadyToUpload":
            return _arm_error(
                409,
                "OperationNotAllowed",
                f"Cannot grant {request.get('access')} access to disk in state {state}.",
            )
        if not 0 < int(request.get("durationInSeconds", 0)) <= 5 * 86400:
            return _arm_error(400, "InvalidParameter", "durationInSeconds out of range")
        disk["properties"]["diskState"] = "ActiveUpload"
        sig = uuid.uuid4().hex
        account = f"md-impexp-{uuid.uuid4().hex[:12]}"
        container = uuid.uuid4().hex[:12]
        sas = (
            f"https://{account}.z1{BLOB_HOST_SUFFIX}/{container}/abcd"
            f"?sv=2018-03-28&sr=b&si={uuid.uuid4()}&sig={sig}"
        )
        self.sas[sig] = rid.lower()
        self.blobs[rid.lower()] = PageBlob(disk["properties"]["creationData"]["uploadSizeBytes"])
        op = self._new_operation(lambda: None, output={"accessSAS": sas})
        return 202, self._async_headers(op, location=True), b""

    def _revoke_access(self, rid: str) -> Reply:
        disk = self.resources.get(rid.lower())
        if disk is None:
            return _not_found("microsoft.compute/disks", rid.rsplit("/", 1)[-1], rid.split("/")[4])
        for sig in [s for s, d in self.sas.items() if d == rid.lower()]:
            del self.sas[sig]
        if disk["properties"]["diskState"] == "ActiveUpload":
            disk["properties"]["diskState"] = "Unattached"
        op = self._new_operation(lambda: None)
        return 202, self._async_headers(op, location=True), b""

    def _new_operation(
        self,
        finish: Callable[[], None],
        *,
        output: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> Operation:
        op = Operation(str(next(self._ids)), self.lro_polls, finish, output, error)
        self.operations[op.id] = op
        return op

    def _async_headers(self, op: Operation, *, location: bool) -> dict[str, str]:
        base = (
            f"https://{ARM_HOST}/subscriptions/{self.subscription}/providers/"
            f"Microsoft.Compute/locations/westeurope/operations/{op.id}"
        )
        headers = {
            "Azure-AsyncOperation": f"{base}?api-version=2024-03-02",
            "Retry-After": "0",
        }
        if location:
            headers["Location"] = f"{base}?monitor=true&api-version=2024-03-02"
        return headers

    def _complete(self, op: Operation) -> None:
        if not op.done:
            op.done = True
            op.finish()

    def _operation(self, op_id: str, *, monitor: bool) -> Reply:
        op = self.operations.get(op_id)
        if op is None:
            return _arm_error(404, "NotFound", f"operation {op_id}")
        if op.polls_left > 0 and not op.done:
            op.polls_left -= 1
            if monitor:
                return 202, {"Location": "", "Retry-After": "0"}, b""
            return _json(200, {"name": op.id, "status": "InProgress"}, {"Retry-After": "0"})
        self._complete(op)
        if monitor:
            return _json(200, op.output) if op.output is not None else (200, {}, b"")
        status: dict[str, Any] = {"name": op.id, "status": "Failed" if op.error else "Succeeded"}
        if op.error:
            status["error"] = op.error
        if op.output is not None:
            status["properties"] = {"output": op.output}
        return _json(200, status)

    # ---- blob --------------------------------------------------------------------------

    def _blob(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        sig = query.get("sig", [""])[0]
        with self.lock:
            disk_id = self.sas.get(sig)
            blob = self.blobs.get(disk_id) if disk_id else None
        if blob is None:
            return _storage_error(
                403, "AuthenticationFailed", "Server failed to authenticate the request."
            )
        if "Authorization" in headers:
            return _storage_error(400, "InvalidAuthenticationInfo", "SAS and bearer token")
        if method != "PUT" or query.get("comp") != ["page"]:
            return _storage_error(405, "UnsupportedHttpVerb", f"{method} {path}")
        if headers.get("x-ms-page-write") != "update":
            return _storage_error(400, "InvalidHeaderValue", "x-ms-page-write must be update")
        m = re.fullmatch(
            r"bytes=(\d+)-(\d+)", headers.get("x-ms-range") or headers.get("Range", "")
        )
        if m is None:
            return _storage_error(400, "InvalidHeaderValue", "x-ms-range is missing or malformed")
        start, end = int(m.group(1)), int(m.group(2))
        length = end - start + 1
        if start % 512 or length % 512 or length <= 0:
            return _storage_error(416, "InvalidPageRange", "range is not 512-byte aligned")
        if length > MAX_PAGE_WRITE:
            return _storage_error(413, "RequestBodyTooLarge", "page write larger than 4 MiB")
        if end >= blob.size:
            return _storage_error(416, "InvalidPageRange", "range beyond the end of the blob")
        if len(body) != length or int(headers.get("Content-Length", -1)) != length:
            return _storage_error(400, "InvalidHeaderValue", "Content-Length differs from range")
        with self.lock:
            self.page_in_flight += 1
            self.max_page_in_flight = max(self.max_page_in_flight, self.page_in_flight)
        try:
            if self.page_latency:
                time.sleep(self.page_latency)
            with self.lock:
                blob.writes.append((start, bytes(body)))
                self.page_write_count += 1
        finally:
            with self.lock:
                self.page_in_flight -= 1
        return (
            201,
            {
                "ETag": f'"0x8D{self.page_write_count:013X}"',
                "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT",
                "x-ms-blob-sequence-number": "0",
                "x-ms-request-server-encrypted": "true",
                "x-ms-version": "2025-01-05",
                "Content-Length": "0",
            },
            b"",
        )


def _canonical_type(rtype: str) -> str:
    known = {
        "microsoft.compute/disks": "Microsoft.Compute/disks",
        "microsoft.compute/galleries": "Microsoft.Compute/galleries",
        "microsoft.compute/galleries/images": "Microsoft.Compute/galleries/images",
        "microsoft.compute/galleries/images/versions": (
            "Microsoft.Compute/galleries/images/versions"
        ),
        "microsoft.compute/virtualmachines": "Microsoft.Compute/virtualMachines",
        "microsoft.network/networksecuritygroups": "Microsoft.Network/networkSecurityGroups",
        "microsoft.network/publicipaddresses": "Microsoft.Network/publicIPAddresses",
        "microsoft.network/virtualnetworks": "Microsoft.Network/virtualNetworks",
        "microsoft.network/networkinterfaces": "Microsoft.Network/networkInterfaces",
    }
    return known.get(rtype, rtype)


def _parse_resource_path(path: str) -> tuple[str, str, str] | None:
    """(resource group, lower-case type, name) of an ARM resource id path."""
    segs = [s for s in path.split("/") if s]
    low = [s.lower() for s in segs]
    if len(segs) < 8 or low[0] != "subscriptions" or low[2] != "resourcegroups":
        return None
    if low[4] != "providers" or len(segs[6:]) % 2:
        return None
    rtype = "/".join([low[5], *low[6::2]])
    return low[3], rtype, segs[-1]


def _not_found(rtype: str, name: str, rg: str) -> Reply:
    return _arm_error(
        404,
        "ResourceNotFound",
        f"The Resource '{_canonical_type(rtype)}/{name}' under resource group '{rg}' "
        "was not found.",
    )


def _no_check(fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None) -> None:
    return None


def _check_disk(
    fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[int, str, str] | None:
    props = body.get("properties", {})
    creation = props.get("creationData", {})
    if existing is not None:
        if creation != existing["properties"]["creationData"]:
            return (
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'creationData' is not allowed.",
            )
        return None
    if creation.get("createOption") == "Upload":
        size = creation.get("uploadSizeBytes")
        if not isinstance(size, int) or not MIN_UPLOAD_SIZE <= size <= MAX_UPLOAD_SIZE:
            return 400, "InvalidParameter", f"uploadSizeBytes {size} out of range"
        if (size - 512) % MIB:
            return (
                400,
                "InvalidParameter",
                "The specified upload size minus the 512-byte footer must be a multiple of 1 MiB",
            )
    security = props.get("securityProfile", {}).get("securityType")
    if security is not None and security not in ("TrustedLaunch",):
        return 400, "InvalidParameter", f"security type {security} needs UploadWithSecurityData"
    if security == "TrustedLaunch" and props.get("hyperVGeneration") != "V2":
        return 400, "InvalidParameter", "TrustedLaunch security type requires HyperVGeneration V2"
    return None


def _check_image(
    fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[int, str, str] | None:
    props = body.get("properties", {})
    for key in ("osType", "osState", "identifier"):
        if key not in props:
            return 400, "InvalidParameter", f"Required parameter '{key}' is missing"
    if existing is not None:
        old = existing["properties"]
        for key in ("osType", "osState", "identifier", "hyperVGeneration"):
            if old.get(key) != props.get(key):
                return 409, "PropertyChangeNotAllowed", f"Changing property '{key}' is not allowed."
    return None


def _check_version(
    fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[int, str, str] | None:
    source = body.get("properties", {}).get("storageProfile", {}).get("osDiskImage", {})
    source_id = str(source.get("source", {}).get("id", ""))
    disk = fake.resources.get(source_id.lower())
    if disk is None:
        return 404, "NotFound", f"Source disk '{source_id}' was not found"
    if disk["properties"]["diskState"] not in ("Unattached", "Reserved"):
        return (
            409,
            "OperationNotAllowed",
            f"Source disk is in state {disk['properties']['diskState']}",
        )
    uefi = body["properties"].get("securityProfile", {}).get("uefiSettings")
    if uefi is not None:
        return _check_uefi(uefi)
    return None


UEFI_TEMPLATES = frozenset(
    {"NoSignatureTemplate", "MicrosoftUefiCertificateAuthorityTemplate", "MicrosoftWindowsTemplate"}
)


def _check_uefi(uefi: dict[str, Any]) -> tuple[int, str, str] | None:
    for name in uefi.get("signatureTemplateNames", []):
        if name not in UEFI_TEMPLATES:
            return 400, "InvalidParameter", f"unknown signature template {name}"
    for db_key in uefi.get("additionalSignatures", {}).get("db", []):
        if db_key.get("type") not in ("x509", "sha256"):
            return 400, "InvalidParameter", f"unknown UEFI key type {db_key.get('type')}"
        for value in db_key.get("value", []):
            try:
                raw = base64.b64decode(value, validate=True)
            except ValueError:
                return 400, "InvalidParameter", "UEFI key value is not base64"
            if db_key["type"] == "x509" and raw[:1] != b"\x30":
                return 400, "InvalidParameter", "UEFI x509 key is not a DER certificate"
    return None


# Sizes without Gen2 / Trusted Launch support, as Azure answers for them.
GEN1_ONLY_SIZES = frozenset({"Standard_A1_v2", "Standard_A2_v2", "Basic_A1"})


def _check_vm(
    fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[int, str, str] | None:
    props = body.get("properties", {})
    size = props.get("hardwareProfile", {}).get("vmSize", "")
    image_id = props.get("storageProfile", {}).get("imageReference", {}).get("id", "")
    version = fake.resources.get(str(image_id).lower())
    if version is None or version["properties"]["provisioningState"] != "Succeeded":
        return 404, "GalleryImageNotFound", f"The gallery image {image_id} is not available."
    definition = fake.resources[str(image_id).lower().rsplit("/versions/", 1)[0]]["properties"]
    security = props.get("securityProfile", {})
    if security.get("securityType") == "TrustedLaunch":
        if size in GEN1_ONLY_SIZES:
            return (
                400,
                "BadRequest",
                f"The VM size '{size}' is not supported for creation of VMs and Virtual "
                "Machine Scale Set with 'TrustedLaunch' security type.",
            )
        features = {f["name"]: f["value"] for f in definition.get("features", [])}
        if not str(features.get("SecurityType", "")).startswith("TrustedLaunch"):
            return (
                400,
                "BadRequest",
                "Use of TrustedLaunch setting is not supported for the provided image.",
            )
    luns = set()
    for data_disk in props.get("storageProfile", {}).get("dataDisks", []):
        lun, size = data_disk.get("lun"), data_disk.get("diskSizeGB")
        if not isinstance(lun, int) or not 0 <= lun <= 63 or lun in luns:
            return 400, "InvalidParameter", f"Data disk LUN {lun!r} is invalid or used twice."
        luns.add(lun)
        if data_disk.get("createOption") != "Empty" or not isinstance(size, int):
            return 400, "InvalidParameter", "Data disks here must be Empty, with a diskSizeGB."
        if not 1 <= size <= 32767:
            return 400, "InvalidParameter", f"Data disk size {size} GB is out of range."
    if definition.get("osState") == "Specialized" and props.get("osProfile"):
        return 400, "InvalidParameter", "osProfile cannot be set with a specialized image"
    for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
        if nic["id"].lower() not in fake.resources:
            return 404, "NotFound", f"Resource {nic['id']} not found."
    return None


def _check_nic(
    fake: FakeAzure, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[int, str, str] | None:
    text = json.dumps(body)
    for ref in re.findall(r'"id": "([^"]+)"', text):
        parent = ref.lower().split("/subnets/")[0]
        if parent not in fake.resources:
            return 400, "InvalidResourceReference", f"Resource {ref} referenced by the NIC"
    return None


_VALIDATORS: dict[str, Any] = {
    "microsoft.compute/virtualmachines": _check_vm,
    "microsoft.network/networkinterfaces": _check_nic,
    "microsoft.compute/disks": _check_disk,
    "microsoft.compute/galleries/images": _check_image,
    "microsoft.compute/galleries/images/versions": _check_version,
}
