"""The agent's HTTPS API (``/v1``), on the standard library's threading HTTP server.

Routing, request bodies and response framing live here; what each request does lives
in :class:`aicert.agent.job.Agent`. Every response is JSON with an exact
Content-Length, except the job log (bytes) and the outputs (a chunked tar stream).
Errors are ``{"error": CODE, "message": ONE LINE}`` with the status of the
:class:`~aicert.agent.job.ApiError`. See docs/agent-api.md.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from aicert.agent import aia, intake, tls
from aicert.agent.job import Agent, ApiError, parse_nonce
from aicert.agent.tpm import FIRMWARE_EVENT_LOG, AgentTpm
from aicert.verifier.errors import AicertError, FormatError, InputError
from aicert.verifier.input_file import MAX_PEM_BYTES, read_input_file
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aicert import __version__

log = logging.getLogger("aicert.agent")

MAX_JSON_BODY: Final = 1024 * 1024
MAX_LOG_READ: Final = 1024 * 1024
REQUEST_TIMEOUT: Final = 900.0
_TAR_BUFFER: Final = 1024 * 1024


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    owner_only: bool


_NAME = r"(?P<name>[^/]+)"
ROUTES: Final = (
    _Route("GET", re.compile(r"/v1/status"), "status", False),
    _Route("POST", re.compile(r"/v1/attestation"), "attestation", False),
    _Route("POST", re.compile(r"/v1/session"), "claim", False),
    _Route("PUT", re.compile(rf"/v1/inputs/{_NAME}"), "upload_input", True),
    _Route("POST", re.compile(rf"/v1/inputs/{_NAME}/fetch"), "fetch_input", True),
    _Route("POST", re.compile(r"/v1/job"), "start_job", True),
    _Route("GET", re.compile(r"/v1/job"), "job_status", True),
    _Route("GET", re.compile(r"/v1/job/log"), "job_log", True),
    _Route("GET", re.compile(r"/v1/outputs"), "outputs", True),
    _Route("GET", re.compile(rf"/v1/evaluations/{_NAME}/results"), "results", True),
    _Route("GET", re.compile(r"/v1/certificate"), "certificate", True),
)


class _ChunkedWriter:
    """A file-like writer that frames what it is given as HTTP/1.1 chunks."""

    def __init__(self, out: Any) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        if data:
            self._out.write(f"{len(data):x}\r\n".encode() + bytes(data) + b"\r\n")
        return len(data)

    def close(self) -> None:
        self._out.write(b"0\r\n\r\n")
        self._out.flush()


class AgentRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aicert-agent"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    server: AgentServer

    # -- dispatch ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self._streaming = False
        try:
            route, match = self._route(method, url.path)
            if route.owner_only:
                self.server.agent.check_owner(self.headers.get("Authorization"))
            handler: Callable[..., None] = getattr(self, f"_handle_{route.handler}")
            handler(**match.groupdict())
        except ApiError as exc:
            self._send_error(exc.status, exc.code, exc.message)
        except intake.IntakeError as exc:
            code = (
                "incomplete-upload"
                if isinstance(exc, intake.IncompleteBodyError)
                else ("disk-full" if exc.status == 507 else "input-refused")
            )
            self._send_error(exc.status, code, exc.message)
        except AicertError as exc:
            self._send_error(500, "agent-error", exc.message)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.warning("connection lost during %s %s: %s", method, url.path, exc)
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error in %s %s", method, url.path)
            self._send_error(500, "internal-error", f"internal error: {type(exc).__name__}")

    def _route(self, method: str, path: str) -> tuple[_Route, re.Match[str]]:
        allowed = False
        for route in ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method == method:
                return route, match
            allowed = True
        if allowed:
            raise ApiError(405, "method-not-allowed", f"{method} is not allowed on {path}")
        raise ApiError(404, "not-found", f"no endpoint {path}")

    # -- bodies ------------------------------------------------------------------------------

    def _body(self) -> intake.BodyReader:
        encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if encoding == "chunked":
            return intake.BodyReader(self.rfile, None)
        if encoding:
            raise ApiError(400, "bad-request", f"Transfer-Encoding {encoding!r} is not supported")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "length-required", "send Content-Length or a chunked body")
        if not length.isdigit():
            raise ApiError(400, "bad-request", "Content-Length is not a number")
        return intake.BodyReader(self.rfile, int(length))

    def _json(self) -> dict[str, Any]:
        reader = self._body()
        data = reader.read(MAX_JSON_BODY + 1)
        if len(data) > MAX_JSON_BODY:
            raise ApiError(
                413, "too-large", f"a JSON request body is limited to {MAX_JSON_BODY} bytes"
            )
        try:
            obj = json.loads(data or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad-request", "the request body is not JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "bad-request", "the request body must be a JSON object")
        return obj

    def _param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        if not values:
            return default
        if len(values) > 1:
            raise ApiError(400, "bad-request", f"query parameter {name!r} is given twice")
        return values[0]

    # -- responses ---------------------------------------------------------------------------

    def _send_json(self, status: int, obj: object) -> None:
        data = json.dumps(obj, sort_keys=True).encode() + b"\n"
        self._send_bytes(status, data, "application/json")

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, code: str, message: str) -> None:
        log.info("%s %s -> %d %s: %s", self.command, self.path, status, code, message)
        if self._streaming:
            # The answer's headers are gone; an unterminated chunked body is the signal.
            self.close_connection = True
            return
        # An unread (or partly read) request body would be taken for the next request.
        if self.command in ("POST", "PUT"):
            self.close_connection = True
        self._send_json(status, {"error": code, "message": message})

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # -- handlers ----------------------------------------------------------------------------

    def _handle_status(self) -> None:
        self._send_json(200, self.server.agent.status())

    def _handle_attestation(self) -> None:
        nonce = parse_nonce(self._json().get("nonce"))
        self._send_json(200, self.server.agent.attestation(nonce))

    def _handle_claim(self) -> None:
        body = self._json()
        self.server.agent.claim(body.get("owner"), body.get("nonce"), body.get("akIntermediates"))
        self._send_json(201, {"state": "claimed"})

    def _handle_upload_input(self, name: str) -> None:
        role = self._param("role")
        fmt = self._param("format", "tar")
        if role is None or fmt is None:
            raise ApiError(400, "bad-request", "the role query parameter is required")
        expected = self._param("sha256")
        evaluation = self._param("evaluation")
        body = self._body()
        digest = self.server.agent.upload_input(name, role, fmt, expected, body, evaluation)
        answer = {"name": name, "role": role, "sha256": digest}
        if evaluation is not None:
            answer["evaluation"] = evaluation
        self._send_json(201, answer)

    def _handle_fetch_input(self, name: str) -> None:
        request = self._json()
        digest = self.server.agent.fetch_input(name, request)
        answer = {"name": name, "role": request.get("role"), "sha256": digest}
        if request.get("evaluation") is not None:
            answer["evaluation"] = request["evaluation"]
        self._send_json(201, answer)

    def _handle_start_job(self) -> None:
        body = self._json()
        self.server.agent.start_job(
            body.get("command"),
            body.get("output"),
            body.get("config"),
            body.get("evaluations"),
            body.get("useEntrypoint", False),
        )
        self._send_json(202, {"state": "running"})

    def _handle_job_status(self) -> None:
        self._send_json(200, self.server.agent.job_status())

    def _handle_job_log(self) -> None:
        raw = self._param("offset", "0") or "0"
        if not raw.isdigit():
            raise ApiError(400, "bad-request", "offset must be a non-negative integer")
        data, size, over = self.server.agent.read_log(int(raw), MAX_LOG_READ)
        headers = {"X-Aicert-Log-Size": str(size), "X-Aicert-Job-Over": "1" if over else "0"}
        self._send_bytes(200, data, "application/octet-stream", headers)

    def _handle_certificate(self) -> None:
        data = self.server.agent.certificate_json()
        self._send_bytes(200, data, "application/vnd.aicert.certificate.v1+json")

    def _handle_results(self, name: str) -> None:
        data = self.server.agent.evaluation_results(name)
        self._send_bytes(200, data, "application/json")

    def _handle_outputs(self) -> None:
        agent = self.server.agent
        agent.output_manifest()  # refuses before any byte is sent unless there are outputs
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self._streaming = True
        writer = _ChunkedWriter(self.wfile)
        agent.write_outputs_tar(writer)  # type: ignore[arg-type]
        writer.close()


class AgentServer(ThreadingHTTPServer):
    """The threading HTTPS server bound to one :class:`Agent`."""

    daemon_threads = True
    allow_reuse_address = True

    agent: Agent

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        """Bind ``address``; set :attr:`agent` before serving."""
        super().__init__(address, AgentRequestHandler)
        # The handshake runs in the request's thread, so a slow client cannot block accept().
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("connection from %s failed", client_address[0], exc_info=True)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="aicert-agent-http", daemon=True)
        thread.start()
        return thread

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def make_server(
    agent: Agent,
    context: ssl.SSLContext,
    host: str = "0.0.0.0",  # noqa: S104 - the agent serves the VM's network on purpose
    port: int = 8443,
) -> AgentServer:
    server = AgentServer((host, port), context)
    server.agent = agent
    return server


BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
KERNEL_CMDLINE_PATH: Final = Path("/proc/cmdline")


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read the boot id from {path}: {exc.strerror}") from None


def read_kernel_cmdline(path: Path = KERNEL_CMDLINE_PATH) -> str:
    """The kernel command line; its ``roothash=`` names the image in the statement."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError as exc:
        raise InputError(f"cannot read the kernel command line {path}: {exc.strerror}") from None


def load_intermediates(directory: Path | None) -> tuple[bytes, ...]:
    """DER certificates from ``*.pem``, ``*.crt`` and ``*.der`` files in ``directory``.

    They travel with the AK certificate in every quote so a verifier can build the chain
    (on Azure the AK certificate names no intermediate it could be fetched from).
    """
    if directory is None:
        return ()
    found: list[bytes] = []
    try:
        paths = sorted(directory.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list intermediates in {directory}: {exc.strerror}") from None
    for path in paths:
        if path.suffix not in (".pem", ".crt", ".der"):
            continue
        try:
            certs = aia.parse_certificates(
                read_input_file(path, "intermediate certificate", MAX_PEM_BYTES)
            )
        except FormatError:
            raise InputError(f"{path} is not an X.509 certificate") from None
        found += [c.public_bytes(serialization.Encoding.DER) for c in certs]
    return tuple(found)


def _fetch_issuers(
    ak_certificate: bytes, known: tuple[bytes, ...], budget: float
) -> tuple[bytes, ...]:
    walk = aia.walk_chain(ak_certificate, known, budget=budget)
    for der in walk.fetched:
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        log.info("AK chain: fetched %s from its AIA link", subject)
    for problem in walk.problems:
        log.warning("AK chain incomplete: %s", problem)
    return walk.fetched


def serve(
    *,
    scratch: Path,
    tcti: str,
    host: str = "0.0.0.0",  # noqa: S104 - the agent serves the VM's network on purpose
    port: int = 8443,
    event_log: Path = FIRMWARE_EVENT_LOG,
    intermediates: Path | None = None,
    issuer_fetch_budget: float = 30.0,
    plain_http_registries: frozenset[str] = frozenset(),
) -> None:
    """Start the agent: fresh key, measured agent-start, HTTPS until SIGTERM or SIGINT.

    Before agent-start, the AK certificate's missing issuers are fetched from its AIA
    links for up to ``issuer_fetch_budget`` seconds (0: not at all), see :mod:`.aia`.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    chain = load_intermediates(intermediates)
    boot_id = read_boot_id()
    tpm = AgentTpm(tcti, event_log_path=event_log)
    # Bind before agent-start is measured: a busy port must not cost this boot its session.
    try:
        server = AgentServer((host, port), tls.server_context(key))
    except OSError as exc:
        tpm.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        # A NitroTPM's AK has no certificate, so no issuers to fetch.
        if issuer_fetch_budget > 0 and tpm.ak_source().certificate_index is not None:
            chain = (*chain, *_fetch_issuers(tpm.ak_certificate(), chain, issuer_fetch_budget))
        server.agent = Agent(
            tpm,
            scratch,
            key=key,
            agent_version=__version__,
            boot_id=boot_id,
            intermediates=chain,
            kernel_cmdline=read_kernel_cmdline(),
            plain_http_registries=plain_http_registries,
        )
    except BaseException:
        server.server_close()
        tpm.close()
        raise
    agent = server.agent
    status = agent.status()
    log.info("serving on %s:%d (%s)", host, server.port, status["state"])
    if status["state"] == "refused":
        log.error("no session in this boot: %s", status["message"])

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        agent.shutdown()
        server.server_close()
        tpm.close()
