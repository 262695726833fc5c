"""A local fake of the Compute Engine and Cloud Storage JSON APIs, over real HTTP.

The real google-cloud-compute and google-cloud-storage clients talk to it through
their own transports: ``client_options.api_endpoint`` is ``http://127.0.0.1:PORT``
and the credentials are AnonymousCredentials. It keeps images, firewall rules,
instances and objects in memory and implements what aicert calls:

- compute: images get/list/insert/delete, firewalls insert/list/delete, instances
  insert/get/delete and aggregated list (filters are ignored: the caller checks what it
  gets); every mutation returns a RUNNING operation that the client must
  poll (global or zonal operations get) before it reads DONE;
- storage: multipart and resumable uploads (crc32c and md5 computed over what was
  received), object get and delete.

``fail(method, pattern, status, times)`` makes the next ``times`` matching requests
answer ``status`` (429, 503, 403, ...), for retry and refusal tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c

COMPUTE = "/compute/v1/projects/"


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int


@dataclass
class FakeGcp:
    """State of the fake; ``url`` is set once it serves."""

    url: str = ""
    vm_address: str = "127.0.0.1"
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    serial: dict[str, str] = field(default_factory=dict)
    """Serial port 1 output of each instance, by name."""
    buckets: set[str] = field(default_factory=lambda: {"aicert-images"})
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[_Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, pattern: str, status: int, times: int = 1) -> None:
        self.failures.append(_Failure(method, re.compile(pattern), status, times))

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def leftovers(self) -> dict[str, list[str]]:
        return {
            "instances": sorted(self.instances),
            "firewalls": sorted(self.firewalls),
            "objects": sorted(f"{b}/{o}" for b, o in self.objects),
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGcp
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"code": status, "message": message, "errors": []}})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        self.query = query
        body = self._body()
        fake = self.fake
        with fake.lock:
            fake.requests.append((method, path))
            for failure in fake.failures:
                if failure.times and failure.method == method and failure.pattern.search(path):
                    failure.times -= 1
                    self._error(failure.status, f"injected HTTP {failure.status}")
                    return
            try:
                if path.startswith(COMPUTE):
                    self._compute(method, path[len(COMPUTE) :], body)
                elif path.startswith("/upload/storage/v1/b/"):
                    self._upload(method, path, query, body)
                elif path.startswith("/storage/v1/b/"):
                    self._object(method, path)
                else:
                    self._error(404, f"no such API: {path}")
            except KeyError as exc:
                self._error(404, f"not found: {exc}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- compute -----------------------------------------------------------------------

    def _operation(self, project: str, zone: str | None, target: str, kind: str) -> None:
        name = f"operation-{uuid.uuid4().hex[:12]}"
        base = f"{self.fake.url}{COMPUTE}{project}/" + (f"zones/{zone}/" if zone else "global/")
        op = {
            "kind": "compute#operation",
            "id": str(uuid.uuid4().int % 10**18),
            "name": name,
            "operationType": kind,
            "status": "RUNNING",
            "targetLink": target,
            "selfLink": f"{base}operations/{name}",
            "progress": 0,
        }
        if zone:
            op["zone"] = f"{self.fake.url}{COMPUTE}{project}/zones/{zone}"
        self.fake.operations[name] = dict(op)
        self._send(200, op)

    def _get_operation(self, name: str) -> None:
        op = self.fake.operations[name]
        op["status"] = "DONE"
        op["progress"] = 100
        self._send(200, op)

    def _compute(self, method: str, rest: str, raw: bytes) -> None:
        parts = rest.split("/")
        project = parts[0]
        body = json.loads(raw) if raw else {}
        base = f"{self.fake.url}{COMPUTE}{project}"
        match (method, parts[1:]):
            case ("GET", ["global", "operations", name]) | (
                "GET",
                ["zones", _, "operations", name],
            ):
                self._get_operation(name)
            case ("GET", ["global", "images", name]):
                self._send(200, self.fake.images[name])
            case ("GET", ["global", "images"]):
                self._send(
                    200, {"kind": "compute#imageList", "items": list(self.fake.images.values())}
                )
            case ("POST", ["global", "images"]):
                name = body["name"]
                self.fake.bodies.setdefault(f"images/{name}", []).append(body)
                if name in self.fake.images:
                    self._error(409, f"The resource 'images/{name}' already exists")
                    return
                source = body.get("rawDisk", {}).get("source", "")
                prefix = "https://storage.googleapis.com/"
                bucket, _, obj = source.removeprefix(prefix).partition("/")
                if not source.startswith(prefix) or (bucket, obj) not in self.fake.objects:
                    self._error(400, f"raw disk source {source} cannot be read")
                    return
                link = f"{base}/global/images/{name}"
                self.fake.images[name] = body | {"status": "READY", "selfLink": link}
                self._operation(project, None, link, "insert")
            case ("DELETE", ["global", "images", name]):
                del self.fake.images[name]
                self._operation(project, None, f"{base}/global/images/{name}", "delete")
            case ("POST", ["global", "firewalls"]):
                name = body["name"]
                self.fake.bodies.setdefault(f"firewalls/{name}", []).append(body)
                link = f"{base}/global/firewalls/{name}"
                self.fake.firewalls[name] = body | {"selfLink": link}
                self._operation(project, None, link, "insert")
            case ("GET", ["global", "firewalls"]):
                rules = list(self.fake.firewalls.values())
                self._send(200, {"kind": "compute#firewallList", "items": rules})
            case ("GET", ["aggregated", "instances"]):
                zones: dict[str, dict[str, list[dict[str, Any]]]] = {}
                for vm in self.fake.instances.values():
                    key = "zones/" + vm["zone"].rsplit("/", 1)[-1]
                    zones.setdefault(key, {"instances": []})["instances"].append(vm)
                self._send(200, {"kind": "compute#instanceAggregatedList", "items": zones})
            case ("DELETE", ["global", "firewalls", name]):
                del self.fake.firewalls[name]
                self._operation(project, None, f"{base}/global/firewalls/{name}", "delete")
            case ("POST", ["zones", zone, "instances"]):
                name = body["name"]
                self.fake.bodies.setdefault(f"instances/{name}", []).append(body)
                image = body["disks"][0]["initializeParams"]["sourceImage"].rsplit("/", 1)[-1]
                if image not in self.fake.images:
                    self._error(404, f"The resource 'images/{image}' was not found")
                    return
                link = f"{base}/zones/{zone}/instances/{name}"
                interfaces = [
                    nic
                    | {
                        "accessConfigs": [
                            ac | {"natIP": self.fake.vm_address}
                            for ac in nic.get("accessConfigs", [])
                        ]
                    }
                    for nic in body.get("networkInterfaces", [])
                ]
                self.fake.instances[name] = body | {
                    "status": "RUNNING",
                    "selfLink": link,
                    "zone": f"{base}/zones/{zone}",
                    "networkInterfaces": interfaces,
                }
                self._operation(project, zone, link, "insert")
            case ("GET", ["zones", _, "instances", name]):
                self._send(200, self.fake.instances[name])
            case ("GET", ["zones", _, "instances", name, "serialPort"]):
                if name not in self.fake.instances:
                    raise KeyError(name)
                text = self.fake.serial.get(name, "")
                start = int(self.query.get("start", ["0"])[0])
                self._send(
                    200,
                    {"contents": text[start:], "start": str(start), "next": str(len(text))},
                )
            case ("DELETE", ["zones", zone, "instances", name]):
                del self.fake.instances[name]
                self._operation(project, zone, f"{base}/zones/{zone}/instances/{name}", "delete")
            case _:
                self._error(404, f"no such compute call: {method} {rest}")

    # -- storage -----------------------------------------------------------------------

    def _object_json(self, bucket: str, name: str) -> dict[str, Any]:
        data = self.fake.objects[(bucket, name)]
        crc = google_crc32c.value(data).to_bytes(4, "big")
        return {
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "size": str(len(data)),
            "generation": "1",
            "md5Hash": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            "crc32c": base64.b64encode(crc).decode(),
        }

    def _upload(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        bucket = path.split("/")[5]
        if bucket not in self.fake.buckets:
            self._error(404, f"The specified bucket does not exist: {bucket}")
            return
        kind = query.get("uploadType", [""])[0]
        if method == "POST" and kind == "multipart":
            content_type = self.headers["Content-Type"]
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            meta_part, data_part = list(message.iter_parts())
            meta = json.loads(meta_part.get_payload(decode=True))
            data = data_part.get_payload(decode=True)
            name = meta.get("name") or query["name"][0]
            self.fake.objects[(bucket, name)] = data
            self._send(200, self._object_json(bucket, name))
        elif method == "POST" and kind == "resumable":
            meta = json.loads(body) if body else {}
            name = meta.get("name") or query["name"][0]
            upload_id = uuid.uuid4().hex
            self.fake.uploads[upload_id] = {"bucket": bucket, "name": name, "data": bytearray()}
            location = f"{self.fake.url}{path}?uploadType=resumable&upload_id={upload_id}"
            self._send(200, None, {"Location": location})
        elif method == "PUT" and kind == "resumable":
            upload = self.fake.uploads[query["upload_id"][0]]
            upload["data"] += body
            total = (self.headers.get("Content-Range") or "").rpartition("/")[2]
            if total != "*" and int(total) == len(upload["data"]):
                self.fake.objects[(upload["bucket"], upload["name"])] = bytes(upload["data"])
                self._send(200, self._object_json(upload["bucket"], upload["name"]))
            else:
                self._send(308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"})
        else:
            self._error(400, f"unsupported upload {method} {kind}")

    def _object(self, method: str, path: str) -> None:
        parts = path.split("/")
        bucket, name = parts[4], "/".join(parts[6:])
        name = unquote(name)
        if (bucket, name) not in self.fake.objects:
            self._error(404, f"No such object: {bucket}/{name}")
            return
        if method == "DELETE":
            del self.fake.objects[(bucket, name)]
            self._send(204)
        else:
            self._send(200, self._object_json(bucket, name))


@contextmanager
def serving(fake: FakeGcp | None = None) -> Iterator[FakeGcp]:
    state = fake or FakeGcp()
    handler = type("Handler", (_Handler,), {"fake": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
