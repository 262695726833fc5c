"""The host side of the agent's API: attest, claim, send inputs, run, collect.

Typical use (``aicert-build run`` does this)::

    client = AgentClient("https://127.0.0.1:8443", trust_roots=[root], recipe=recipe)
    client.attest()                      # verifies the quote, then pins the TLS key
    client.claim(job_nonce)              # becomes the owner (bearer token kept here)
    client.upload_input("code", Path("train/"), "code")
    client.upload_input("data", Path("data.csv"), "data")
    client.upload_input("code", Path("eval/"), "eval-code", evaluation="accuracy")
    client.start_job(
        ["python3", "train.py"], "model", config={"epochs": 3},
        evaluations=[EvaluationRun("accuracy", ("python3", "eval.py"), "results.json")],
    )
    result = client.wait(lambda chunk: sys.stdout.buffer.write(chunk))
    client.download_outputs(Path("out/model"))
    client.download_results(Path("out"))     # out/evaluations/accuracy/results.json
    Path("model.aicert.json").write_bytes(client.certificate().raw)

Every connection is TLS with the agent's self-signed certificate, which is not
validated as a web certificate; instead the SHA-256 of the server's SubjectPublicKeyInfo
must equal the agent key that :meth:`AgentClient.attest` verified through the TPM quote.
Nothing but ``/v1/status`` and ``/v1/attestation`` is sent before that.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import ssl
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from aicert.builder.agent_attestation import (
    AttestedAgent,
    AttestedKeyError,
    spki_sha256,
    verify_attestation,
)
from aicert.builder.job_file import (
    ArchiveSource,
    EvaluationRun,
    GitSource,
    ImageSource,
    JobFile,
    JobInput,
    LocalSource,
)
from aicert.verifier.boot.boot_reference import BootReference, reference_from_recipe
from aicert.verifier.digest.filehash import DEFAULT_SHARD_SIZE, StreamingHasher
from aicert.verifier.digest.treehash import hash_tree, list_tree
from aicert.verifier.digest.treemanifest import FileEntry, TreeManifest
from aicert.verifier.errors import AicertError, EvaluationError, InputError, NonceError
from aicert.verifier.progress import Progress, progress_for
from aicert.verifier.statement.certificate import Certificate, load_certificate, parse_certificate
from aicert.verifier.statement.provenance import parse_statement
from cryptography import x509

from aicert.tar_receive import receive_tar

CHUNK: Final = 1024 * 1024
DEFAULT_TIMEOUT: Final = 120.0
# Fetching a large input or a git repository happens inside one request.
FETCH_TIMEOUT: Final = 4 * 3600.0


class AgentRequestError(AicertError):
    """The agent refused a request or could not be reached; ``status`` 0 when unreachable."""

    exit_code = 1

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class EvaluationResult:
    """A completed evaluation as the agent reports it (``results`` is relative to its output)."""

    name: str
    results: str
    results_sha256: str
    metrics: Mapping[str, int | float]


@dataclass(frozen=True)
class JobResult:
    state: str
    exit_status: int | None
    message: str
    output: str
    output_sha256: str | None
    evaluations: tuple[EvaluationResult, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True)
class DownloadedCertificate:
    raw: bytes
    certificate: Certificate


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AgentRequestError("the agent answered with malformed JSON", self.status) from None


class AgentClient:
    """A client of one agent (one boot, one job)."""

    def __init__(
        self,
        base_url: str,
        *,
        trust_roots: Sequence[x509.Certificate],
        recipe: Path | BootReference | None = None,
        intermediates: Sequence[bytes] = (),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "https" or not url.hostname:
            raise InputError(f"agent URL {base_url!r} must be https://HOST[:PORT]")
        self.host = url.hostname
        self.port = url.port or 8443
        self.trust_roots = tuple(trust_roots)
        # CA certificates between the AK certificate and a root, for platforms whose
        # agent cannot know them (the local CA): used to verify, and handed in at claim.
        self.intermediates = tuple(intermediates)
        self.boot_reference = reference_from_recipe(recipe) if isinstance(recipe, Path) else recipe
        self.timeout = timeout
        self.attested: AttestedAgent | None = None
        self._pinned: str | None = None
        self._token: str | None = None
        self._nonce: str | None = None

    # -- connections -------------------------------------------------------------------------

    def _connect(self, timeout: float | None = None) -> tuple[http.client.HTTPSConnection, str]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The certificate is self-signed on purpose: the key is checked against the
        # attestation instead (see the module docstring).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=context, timeout=timeout or self.timeout
        )
        try:
            conn.connect()
            sock = conn.sock
            if not isinstance(sock, ssl.SSLSocket):
                raise AgentRequestError("the connection to the agent is not TLS")
            der = sock.getpeercert(binary_form=True)
            if der is None:
                raise AgentRequestError("the agent presented no TLS certificate")
            key = spki_sha256(der)
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise AgentRequestError(
                f"cannot reach the agent at {self.host}:{self.port}: {exc}"
            ) from None
        except BaseException:
            conn.close()
            raise
        if self._pinned is not None and key != self._pinned:
            conn.close()
            raise AttestedKeyError(
                f"the agent at {self.host}:{self.port} now presents TLS key {key[:16]}…, "
                f"not the attested {self._pinned[:16]}…; refusing to talk to it"
            )
        return conn, key

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        headers.update(extra or {})
        return headers

    @staticmethod
    def _raise_for(response: _Response, what: str) -> None:
        if response.status < 300:
            return
        code, message = "", response.body.decode(errors="replace").strip()
        try:
            doc = json.loads(response.body)
            if isinstance(doc, dict):
                code = str(doc.get("error", ""))
                message = str(doc.get("message", message))
        except ValueError:
            pass
        raise AgentRequestError(
            f"{what}: the agent answered {response.status} {code}: {message}",
            response.status,
            code,
        )

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: object = None,
        body: Iterator[bytes] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        require_pin: bool = True,
    ) -> _Response:
        if require_pin and self._pinned is None:
            raise AgentRequestError(f"{what}: call attest() first; nothing is sent unattested")
        conn, _key = self._connect(timeout)
        try:
            headers = self._headers(extra_headers)
            if json_body is not None:
                data = json.dumps(json_body).encode()
                headers["Content-Type"] = "application/json"
                conn.request(method, path, body=data, headers=headers)
            elif body is not None:
                conn.request(method, path, body=body, headers=headers, encode_chunked=True)
            else:
                conn.request(method, path, headers=headers)
            raw = conn.getresponse()
            response = _Response(raw.status, dict(raw.getheaders()), raw.read())
        except (OSError, http.client.HTTPException) as exc:
            # The agent may refuse an upload before reading its body and close the
            # connection; its answer is then still waiting to be read.
            response = _late_response(conn) or _raise_unreachable(what, exc)
        finally:
            conn.close()
        self._raise_for(response, what)
        return response

    # -- attestation and claim ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``: the agent's state, for anyone (no pin needed)."""
        result: dict[str, Any] = self._request(
            "GET", "/v1/status", "status", require_pin=False
        ).json()
        return result

    def wait_until_up(
        self,
        timeout: float,
        *,
        interval: float = 1.0,
        agent_failed: Callable[[], str | None] = lambda: None,
    ) -> dict[str, Any]:
        """Poll ``/v1/status`` until the agent answers (e.g. while the VM boots).

        Raises AgentRequestError after ``timeout`` seconds, at once when the agent
        answers that it cannot run a session in this boot (state ``refused``), or when
        ``agent_failed`` returns a reason (e.g. an error line on the VM's console).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
            except AgentRequestError as exc:
                reason = agent_failed()
                if reason is not None:
                    raise AgentRequestError(f"the agent did not start: {reason}") from None
                if exc.status or time.monotonic() + interval > deadline:
                    raise AgentRequestError(
                        f"the agent at {self.host}:{self.port} did not come up within "
                        f"{timeout:.0f} s: {exc.message}"
                    ) from None
                time.sleep(interval)
                continue
            if status.get("state") == "refused":
                raise AgentRequestError(
                    f"the agent refuses a session in this boot: {status.get('message')}", 503
                )
            return status

    def attest(self, nonce: bytes | None = None) -> AttestedAgent:
        """Ask for a fresh quote, verify it, and pin the TLS key it attests."""
        nonce = nonce if nonce is not None else secrets.token_bytes(32)
        conn, key = self._connect()
        try:
            conn.request(
                "POST",
                "/v1/attestation",
                body=json.dumps({"nonce": nonce.hex()}).encode(),
                headers={"Content-Type": "application/json"},
            )
            raw = conn.getresponse()
            response = _Response(raw.status, dict(raw.getheaders()), raw.read())
        except (OSError, http.client.HTTPException) as exc:
            raise AgentRequestError(f"attestation: the connection failed: {exc}") from None
        finally:
            conn.close()
        self._raise_for(response, "attestation")
        doc = response.json()
        if not isinstance(doc, dict):
            raise AgentRequestError("attestation: the answer is not a JSON object")
        attested = verify_attestation(
            doc,
            nonce=nonce,
            tls_key_sha256=key,
            trust_roots=self.trust_roots,
            boot_reference=self.boot_reference,
            intermediates=self.intermediates,
        )
        self._pinned = attested.agent_key_sha256
        self.attested = attested
        return attested

    def claim(self, nonce: str) -> str:
        """Become the session's owner with the job ``nonce`` (hex); returns the bearer token."""
        token = secrets.token_hex(32)
        owner = hashlib.sha256(token.encode()).hexdigest()
        body: dict[str, Any] = {"nonce": nonce, "owner": owner}
        if self.intermediates:
            body["akIntermediates"] = [base64.b64encode(c).decode() for c in self.intermediates]
        self._request("POST", "/v1/session", "claim", json_body=body)
        self._token = token
        self._nonce = nonce.lower()
        return token

    def resume(self, token: str, nonce: str) -> None:
        """Act as the owner with a token from an earlier :meth:`claim` (after attest())."""
        self._token = token
        self._nonce = nonce.lower()

    # -- inputs ------------------------------------------------------------------------------

    def upload_input(
        self,
        name: str,
        path: Path,
        role: str,
        *,
        expected_sha256: str | None = None,
        progress: Progress | None = None,
        evaluation: str | None = None,
    ) -> str:
        """Stream a directory (as tar) or a file to the agent; its tree digest.

        The digest is also computed here from the bytes sent, and must equal the agent's.
        ``progress`` defaults to a progress line on stderr when it is a terminal.
        With ``evaluation`` the input belongs to that evaluation (role eval-code or eval-data).
        """
        sink = progress or progress_for(label=f"uploading {name}")
        is_dir = path.is_dir() and not path.is_symlink()
        query = {"role": role, "format": "tar" if is_dir else "file"}
        if expected_sha256 is not None:
            query["sha256"] = expected_sha256
        if evaluation is not None:
            query["evaluation"] = evaluation
        stream = _TarSender(path, sink) if is_dir else _FileSender(path, sink)
        response = self._put_input(name, query, stream, sink, "application/octet-stream")
        digest = str(response.json().get("sha256", ""))
        local = stream.manifest().digest
        if digest != local:
            raise AgentRequestError(
                f"upload of {name}: the agent measured {digest}, but the bytes sent hash to {local}"
            )
        return digest

    def upload_environment(
        self,
        name: str,
        path: Path,
        role: str,
        *,
        progress: Progress | None = None,
        evaluation: str | None = None,
    ) -> str:
        """Stream an OCI image-layout archive to the agent; the image's manifest digest.

        The agent checks every blob against its digest; the digest it answers is the one
        the certificate records.
        """
        if not path.is_file():
            raise InputError(f"environment {path} is not a file (an OCI image-layout archive)")
        sink = progress or progress_for(label=f"uploading {name}")
        query = {"role": role, "format": "oci-archive"}
        if evaluation is not None:
            query["evaluation"] = evaluation
        response = self._put_input(name, query, _FileSender(path, sink), sink, "application/x-tar")
        return str(response.json().get("sha256", ""))

    def _put_input(
        self,
        name: str,
        query: dict[str, str],
        stream: _TarSender | _FileSender,
        sink: Progress,
        content_type: str,
    ) -> _Response:
        """PUT one input's bytes to /v1/inputs/NAME; the stream and progress end either way."""
        target = f"/v1/inputs/{urllib.parse.quote(name, safe='')}?{urllib.parse.urlencode(query)}"
        try:
            return self._request(
                "PUT",
                target,
                f"upload of {name}",
                body=stream.chunks(),
                extra_headers={"Content-Type": content_type},
                timeout=FETCH_TIMEOUT,
            )
        finally:
            stream.close()
            sink.finish()

    def fetch_input(
        self,
        name: str,
        role: str,
        *,
        url: str | None = None,
        sha256: str | None = None,
        git: str | None = None,
        commit: str | None = None,
        image: str | None = None,
        expected_sha256: str | None = None,
        evaluation: str | None = None,
        plain_http: bool = False,
    ) -> str:
        """Have the agent fetch an input (https URL + SHA-256, git URL + commit, or an OCI
        image by digest, whose manifest digest is returned).

        ``expected_sha256`` is the tree digest the input must have, or it is refused;
        ``evaluation`` names the evaluation the input belongs to; ``plain_http`` pulls
        ``image`` from a local test registry over plain HTTP (the agent allows it only for
        loopback, link-local and private addresses, and records it in the source).
        """
        request: dict[str, str | bool] = {"role": role}
        if expected_sha256 is not None:
            request["expected"] = expected_sha256
        if evaluation is not None:
            request["evaluation"] = evaluation
        if url is not None and sha256 is not None and git is None:
            request |= {"url": url, "sha256": sha256}
        elif git is not None and commit is not None and url is None:
            request |= {"git": git, "commit": commit}
        elif image is not None and url is None and git is None:
            request |= {"image": image}
            if plain_http:
                request["plainHttp"] = True
        else:
            raise InputError(f"input {name}: give url and sha256, git and commit, or image")
        response = self._request(
            "POST",
            f"/v1/inputs/{urllib.parse.quote(name, safe='')}/fetch",
            f"fetch of {name}",
            json_body=request,
            timeout=FETCH_TIMEOUT,
        )
        return str(response.json().get("sha256", ""))

    # -- the job -----------------------------------------------------------------------------

    def start_job(
        self,
        command: Sequence[str] | None,
        output: str | None,
        config: Mapping[str, Any] | None = None,
        *,
        evaluations: Sequence[EvaluationRun] = (),
        use_entrypoint: bool = False,
    ) -> None:
        """Start the job; without ``command`` (None or empty, as in an evaluation-only
        JobFile) it only runs ``evaluations`` on the ``weights`` input. ``use_entrypoint``
        runs the training environment's Entrypoint before the command."""
        body: dict[str, Any] = {"config": dict(config or {})}
        if command:
            body |= {"command": list(command), "output": output, "useEntrypoint": use_entrypoint}
        if evaluations:
            body["evaluations"] = [
                {
                    "name": e.name,
                    "command": list(e.command),
                    "results": e.results,
                    "useEntrypoint": e.use_entrypoint,
                }
                for e in evaluations
            ]
        self._request("POST", "/v1/job", "start of the job", json_body=body)

    def job(self) -> JobResult:
        doc = self._request("GET", "/v1/job", "job status").json()
        return JobResult(
            state=str(doc.get("state")),
            exit_status=doc.get("exitStatus"),
            message=str(doc.get("message", "")),
            output=str(doc.get("output", "")),
            output_sha256=doc.get("outputSha256"),
            evaluations=tuple(_evaluation_result(e) for e in doc.get("evaluations") or []),
        )

    def wait(
        self,
        log_callback: Callable[[bytes], None] | None = None,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> JobResult:
        """Follow the job's log until it ends; the final status (succeeded or failed)."""
        offset = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = self._request("GET", f"/v1/job/log?offset={offset}", "job log")
            if response.body and log_callback is not None:
                log_callback(response.body)
            offset += len(response.body)
            size = int(response.headers.get("X-Aicert-Log-Size", "0"))
            over = response.headers.get("X-Aicert-Job-Over") == "1"
            if over and offset >= size:
                return self.job()
            if offset < size:
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise AgentRequestError(f"the job did not finish within {timeout:.0f} s")
            time.sleep(poll_interval)

    def certificate(self) -> DownloadedCertificate:
        """The certificate, checked to name the attested agent key and this client's nonce."""
        raw = self._request("GET", "/v1/certificate", "certificate").body
        cert = parse_certificate(raw)
        if cert.agent_key_id != self._pinned:
            raise AttestedKeyError("the certificate is signed by another key than the attested one")
        nonce = parse_statement(cert.envelope.payload).nonce.lower()
        if self._nonce is not None and nonce != self._nonce:
            raise NonceError(f"the certificate carries nonce {nonce}, not this job's {self._nonce}")
        return DownloadedCertificate(raw, cert)

    def download_outputs(self, dest: Path) -> TreeManifest:
        """Download and extract the outputs into the new directory ``dest`` (its parents are
        created); their manifest.

        The tree digest of what was written must equal the digest the agent measured.
        """
        if self._pinned is None:
            raise AgentRequestError("outputs: call attest() first; nothing is sent unattested")
        dest.parent.mkdir(parents=True, exist_ok=True)
        conn, _key = self._connect(FETCH_TIMEOUT)
        try:
            conn.request("GET", "/v1/outputs", headers=self._headers())
            raw = conn.getresponse()
            if raw.status != 200:
                refused = _Response(raw.status, dict(raw.getheaders()), raw.read())
                self._raise_for(refused, "outputs")
            expected = self.job().output_sha256
            if expected is None:
                raise AgentRequestError("outputs: the agent names no measured output digest")
            manifest = receive_tar(raw, dest, expected_digest=expected)
        except (OSError, http.client.HTTPException) as exc:
            raise AgentRequestError(f"outputs: the download failed: {exc}") from None
        finally:
            conn.close()
        return manifest

    def download_results(self, directory: Path) -> dict[str, Path]:
        """Save each evaluation's results file as ``directory/evaluations/NAME/RESULTS``.

        Each file's tree digest must equal the one the agent measured; evaluation name →
        the file written. ``directory`` is typically the one holding the weights' directory.
        """
        saved: dict[str, Path] = {}
        for result in self.job().evaluations:
            name = urllib.parse.quote(result.name, safe="")
            data = self._request(
                "GET", f"/v1/evaluations/{name}/results", f"results of {result.name}"
            ).body
            if _single_file_digest(data) != result.results_sha256:
                raise AgentRequestError(
                    f"results of {result.name}: the bytes received are not the measured file"
                )
            path = directory / "evaluations" / result.name / result.results
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with path.open("xb") as out:
                    out.write(data)
            except FileExistsError:
                raise InputError(f"{path} already exists; not overwriting it") from None
            saved[result.name] = path
        return saved


_SAFE_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _evaluation_result(raw: object) -> EvaluationResult:
    """An entry of the job status' ``evaluations``; its paths must stay relative."""
    if not isinstance(raw, dict):
        raise AgentRequestError("job status: an evaluation entry is not an object")
    name, results = raw.get("name"), raw.get("results")
    digest, metrics = raw.get("resultsSha256"), raw.get("metrics")
    if (
        not isinstance(name, str)
        or not _SAFE_PART.fullmatch(name)
        or not isinstance(results, str)
        or not all(_SAFE_PART.fullmatch(part) for part in results.split("/"))
        or not isinstance(digest, str)
        or not isinstance(metrics, dict)
    ):
        raise AgentRequestError("job status: a malformed evaluation entry")
    return EvaluationResult(name, results, digest, metrics)


def _single_file_digest(data: bytes) -> str:
    hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
    hasher.update(data)
    result = hasher.result()
    return TreeManifest(result.shard_size, (FileEntry("", result.size, result.digest),), ()).digest


def check_linked_certificate(certificate: Path, weights: Path) -> str:
    """Refuse a linked certificate whose subject is not ``weights``; their tree digest.

    Run before anything is sent: a job linking another model's certificate would only
    yield a certificate that fails verification.
    """
    cert = load_certificate(certificate)
    subjects = {s.sha256 for s in parse_statement(cert.envelope.payload).subjects}
    digest = hash_tree(weights).digest
    if subjects != {digest}:
        raise EvaluationError(
            f"{certificate} certifies weights {', '.join(sorted(subjects))}, "
            f"not {weights} (tree digest {digest})"
        )
    return digest


def _late_response(conn: http.client.HTTPSConnection) -> _Response | None:
    try:
        raw = conn.getresponse()
        return _Response(raw.status, dict(raw.getheaders()), raw.read())
    except (OSError, http.client.HTTPException):
        return None


def _raise_unreachable(what: str, exc: BaseException) -> _Response:
    raise AgentRequestError(f"{what}: the connection to the agent failed: {exc}") from None


def send_inputs(
    client: AgentClient,
    job: JobFile,
    *,
    progress: Callable[[JobInput], Progress] | None = None,
) -> dict[str, str]:
    """Upload or have the agent fetch every input of ``job``, then every evaluation's;
    name (``EVALUATION/NAME`` for an evaluation's) → tree digest.

    A linked certificate is checked against the weights before anything is sent.
    """
    if job.weights is not None and job.linked_certificate is not None:
        assert isinstance(job.weights.source, LocalSource)  # noqa: S101 - the job file's rule
        check_linked_certificate(job.linked_certificate, job.weights.source.path)
    digests: dict[str, str] = {}
    for item in job.inputs:
        digests[item.name] = _send(client, item, None, progress)
    for evaluation in job.evaluations:
        for item in evaluation.inputs:
            digests[f"{evaluation.name}/{item.name}"] = _send(
                client, item, evaluation.name, progress
            )
    return digests


def _send(
    client: AgentClient,
    item: JobInput,
    evaluation: str | None,
    progress: Callable[[JobInput], Progress] | None,
) -> str:
    source = item.source
    if isinstance(source, ImageSource):
        return client.fetch_input(
            item.name,
            item.role,
            image=source.reference,
            evaluation=evaluation,
            plain_http=source.plain_http,
        )
    if isinstance(source, ArchiveSource):
        return client.upload_environment(
            item.name,
            source.path,
            item.role,
            progress=None if progress is None else progress(item),
            evaluation=evaluation,
        )
    if isinstance(source, LocalSource):
        return client.upload_input(
            item.name,
            source.path,
            item.role,
            expected_sha256=item.expected_sha256,
            progress=None if progress is None else progress(item),
            evaluation=evaluation,
        )
    if isinstance(source, GitSource):
        return client.fetch_input(
            item.name,
            item.role,
            git=source.url,
            commit=source.commit,
            expected_sha256=item.expected_sha256,
            evaluation=evaluation,
        )
    return client.fetch_input(
        item.name,
        item.role,
        url=source.url,
        sha256=source.sha256,
        expected_sha256=item.expected_sha256,
        evaluation=evaluation,
    )


# --------------------------------------------------------------------------- upload bodies


class _FileSender:
    """A file's bytes in chunks, hashed as they are sent."""

    def __init__(self, path: Path, progress: Progress) -> None:
        try:
            self._file: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        self._progress = progress
        self._hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
        progress.start(os.fstat(self._file.fileno()).st_size)

    def chunks(self) -> Iterator[bytes]:
        while data := self._file.read(CHUNK):
            self._hasher.update(data)
            self._progress.advance(len(data))
            yield data

    def manifest(self) -> TreeManifest:
        result = self._hasher.result()
        return TreeManifest(result.shard_size, (FileEntry("", result.size, result.digest),), ())

    def close(self) -> None:
        self._file.close()


class _HashingReader:
    def __init__(self, file: IO[bytes], hasher: StreamingHasher, progress: Progress) -> None:
        self._file = file
        self._hasher = hasher
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._hasher.update(data)
        self._progress.advance(len(data))
        return data


class _TarSender:
    """A directory as a tar stream produced by a thread into a pipe, never whole in memory.

    The tree is listed with the verifier's rules (no symlinks, devices or hard links), and
    each file is hashed while it is read, so the manifest of what was sent is known at the
    end without reading anything twice.
    """

    def __init__(self, root: Path, progress: Progress) -> None:
        self._listing = list_tree(root)
        self._root = root
        self._progress = progress
        self._entries: list[FileEntry] = []
        self._error: BaseException | None = None
        progress.start(sum(f.snapshot.size for f in self._listing.files))
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")
        self._thread = threading.Thread(target=self._produce, name="tar-sender", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            with tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for directory in self._listing.directories:
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                for listed in self._listing.files:
                    info = tarfile.TarInfo(listed.path)
                    info.size = listed.snapshot.size
                    info.mode = 0o755 if os.access(listed.os_path, os.X_OK) else 0o644
                    hasher = StreamingHasher(DEFAULT_SHARD_SIZE)
                    with open(listed.os_path, "rb") as data:
                        tar.addfile(info, _HashingReader(data, hasher, self._progress))
                    result = hasher.result()
                    if result.size != listed.snapshot.size:
                        raise InputError(f"{listed.os_path} changed while it was sent")
                    self._entries.append(FileEntry(listed.path, result.size, result.digest))
        except BaseException as exc:
            self._error = exc
        finally:
            try:
                self._writer.close()
            except OSError as exc:
                self._error = self._error or exc

    def chunks(self) -> Iterator[bytes]:
        while data := self._reader.read(CHUNK):
            yield data
        self._thread.join()
        if self._error is not None:
            raise self._error

    def manifest(self) -> TreeManifest:
        return TreeManifest(
            DEFAULT_SHARD_SIZE, tuple(self._entries), tuple(self._listing.directories)
        )

    def close(self) -> None:
        self._reader.close()
        self._thread.join()
