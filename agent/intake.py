"""Getting inputs onto the scratch disk, hashed on the way in.

Every input ends as a file or a directory tree under the scratch disk, and its digest is
the tree digest that :func:`aicert.verifier.digest.treehash.hash_tree` computes on what was
written — but computed while the bytes arrive (:func:`aicert.receive.receive_file`),
so a 100 GB data set is read once. Sources:

- an HTTP request body (Content-Length or chunked): a tar stream, extracted member by
  member (:func:`aicert.tar_receive.receive_tar`), or one file (:func:`receive_file_input`);
- an https URL with the expected SHA-256 of the file (:func:`fetch_url`);
- a git repository at an exact commit (:func:`fetch_git`), without its ``.git``;
- the job's free-form configuration, written as canonical JSON (:func:`write_config`).

Tar members may only be regular files and directories with plain relative names
(:mod:`aicert.tar_receive`, shared with the builder, which receives outputs the same way),
so what lands on disk is exactly what the digest names.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from aicert.verifier.digest.filehash import FileDigest
from aicert.verifier.digest.treehash import hash_tree
from aicert.verifier.digest.treemanifest import FileEntry, TreeManifest
from aicert.verifier.errors import AicertError, InputError
from aicert.verifier.statement.canonical_json import JsonValue, canonicalize

from aicert.process import run
from aicert.tar_receive import (
    CHUNK,
    IntakeError,
    Reader,
    check_expected,
    remove_path,
    write_stream,
)

INPUT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
GIT_COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
CONFIG_FILE: Final = "config.json"
FETCH_TIMEOUT: Final = 120.0
GIT_TIMEOUT: Final = 3600.0
# The chunked framing's own lines (size line, trailers) are short; a longer one is refused.
_MAX_FRAME_LINE: Final = 4096

_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


class IncompleteBodyError(IntakeError):
    """The request body ended before its announced end (connection cut mid-upload)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


def check_name(name: str) -> str:
    """An input or output name: 1-100 of ``A-Za-z0-9._-``, not starting with a dot or dash."""
    if not INPUT_NAME.fullmatch(name):
        raise IntakeError(
            f"name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            status=400,
        )
    return name


def check_sha256(value: str, what: str) -> str:
    if not SHA256_HEX.fullmatch(value):
        raise IntakeError(f"{what} must be 64 lowercase hex digits, not {value!r}", status=400)
    return value


# --------------------------------------------------------------------------- request bodies


class BodyReader:
    """The body of one HTTP/1.1 request, read from the connection's buffered stream.

    ``length`` is the Content-Length, or None for ``Transfer-Encoding: chunked``. A body
    that ends early raises :class:`IncompleteBodyError`, never a short read passed off as
    the end of the data.
    """

    def __init__(self, stream: BinaryIO, length: int | None) -> None:
        self._stream = stream
        self._remaining = length  # bytes left in the body, or in the current chunk
        self._chunked = length is None
        self._done = length == 0
        if self._chunked:
            self._remaining = 0
        self.received = 0

    def _exact(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise IncompleteBodyError(
                f"the upload ended after {self.received + len(data)} bytes, before the end of "
                "the request body (connection closed mid-upload?); nothing was kept"
            )
        return data

    def _line(self) -> bytes:
        line = self._stream.readline(_MAX_FRAME_LINE)
        if not line.endswith(b"\n"):
            raise IncompleteBodyError("the chunked request body ended or is malformed")
        return line.rstrip(b"\r\n")

    def _next_chunk(self) -> None:
        size_text = self._line().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise IntakeError(f"bad chunk size {size_text!r} in a chunked body", 400) from None
        if size < 0:
            raise IntakeError("negative chunk size in a chunked body", 400)
        if size == 0:
            while self._line():  # trailers, up to the empty line
                pass
            self._done = True
        self._remaining = size

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); b"" only at the real end."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while not self._done and (wanted is None or wanted > 0):
            if self._chunked and self._remaining == 0:
                self._next_chunk()
                continue
            assert self._remaining is not None  # noqa: S101 - set for both framings
            take = self._remaining if wanted is None else min(wanted, self._remaining)
            data = self._exact(min(take, CHUNK))
            parts.append(data)
            self._remaining -= len(data)
            self.received += len(data)
            if wanted is not None:
                wanted -= len(data)
            if self._remaining == 0:
                if self._chunked:
                    self._exact(2)  # CRLF after the chunk data
                else:
                    self._done = True
        return b"".join(parts)


def single_file_manifest(result: FileDigest) -> TreeManifest:
    """The manifest :func:`hash_tree` gives a root that is one file."""
    return TreeManifest(result.shard_size, (FileEntry("", result.size, result.digest),), ())


def receive_file_input(
    body: Reader, dest: Path, *, expected_digest: str | None = None
) -> TreeManifest:
    """Store ``body`` as the file ``dest``; its manifest; removed again on any failure."""
    try:
        manifest = single_file_manifest(write_stream(body, dest))
        check_expected(manifest, expected_digest, "the uploaded file")
    except BaseException:
        remove_path(dest)
        raise
    return manifest


# --------------------------------------------------------------------------- URLs


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise IntakeError(f"{req.full_url} redirects to a non-https URL {newurl}", 422)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_https_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise IntakeError(f"URL {url!r} must be an https:// URL with a host", 400)
    return url


def fetch_url(
    url: str,
    dest: Path,
    expected_sha256: str,
    *,
    context: ssl.SSLContext | None = None,
) -> TreeManifest:
    """Download the https ``url`` into the file ``dest``; its SHA-256 must be ``expected_sha256``.

    Certificates are checked against the system's trust store (``context`` overrides).
    """
    check_https_url(url)
    check_sha256(expected_sha256, "the expected sha256")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context or ssl.create_default_context()),
        _HttpsOnlyRedirects(),
    )
    try:
        with opener.open(url, timeout=FETCH_TIMEOUT) as response:
            result = write_stream(response, dest, expected_sha256=expected_sha256)
    except IntakeError:
        remove_path(dest)
        raise
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        remove_path(dest)
        reason = getattr(exc, "reason", None) or exc
        raise IntakeError(f"cannot fetch {url}: {reason}", 502) from None
    return single_file_manifest(result)


# --------------------------------------------------------------------------- git


def fetch_git(
    url: str,
    commit: str,
    dest: Path,
    git_dir: Path,
    *,
    schemes: tuple[str, ...] = ("https",),
    on_line: Callable[[str], None] | None = None,
) -> TreeManifest:
    """Clone ``url``, check out exactly ``commit`` into ``dest`` (without ``.git``); its manifest.

    The repository itself lives in ``git_dir``, outside the input, so the input holds the
    work tree only. Line-ending conversion and filters are off: files are the committed
    bytes.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in schemes:
        raise IntakeError(f"git URL {url!r} must use {' or '.join(schemes)}", 400)
    if not GIT_COMMIT.fullmatch(commit):
        raise IntakeError(
            f"git commit {commit!r} must be a full lowercase hex object name (40 or 64 digits)",
            400,
        )
    config = [
        "-c",
        "core.autocrlf=false",
        "-c",
        "core.symlinks=true",
        "-c",
        "advice.detachedHead=false",
    ]
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_LFS_SKIP_SMUDGE": "1"}
    try:
        git_dir.parent.mkdir(parents=True, exist_ok=True)
        # Left over by an earlier attempt at this input that was refused.
        shutil.rmtree(git_dir, ignore_errors=True)
        run(
            [
                "git",
                *config,
                "clone",
                "--quiet",
                "--no-checkout",
                f"--separate-git-dir={git_dir}",
                "--",
                url,
                str(dest),
            ],
            env=env,
            timeout=GIT_TIMEOUT,
            on_line=on_line,
        )
        run(
            ["git", *config, "-C", str(dest), "checkout", "--quiet", "--detach", commit, "--"],
            env=env,
            timeout=GIT_TIMEOUT,
        )
        head = run(["git", "-C", str(dest), "rev-parse", "HEAD"], env=env).stdout or b""
        if head.decode().strip() != commit:
            raise IntakeError(f"git checked out {head.decode().strip()}, not {commit}", 422)
        (dest / ".git").unlink()
        return hash_tree(dest)
    except AicertError as exc:
        remove_path(dest)
        shutil.rmtree(git_dir, ignore_errors=True)
        if isinstance(exc, IntakeError):
            raise
        raise IntakeError(f"cannot fetch {url} at {commit}: {exc.message}", 502) from None


# --------------------------------------------------------------------------- configuration


def write_config(config: Mapping[str, JsonValue], dest: Path) -> TreeManifest:
    """Write the job configuration as ``dest/config.json`` (RFC 8785 canonical JSON)."""
    try:
        data = canonicalize(config)
    except (InputError, TypeError, ValueError) as exc:
        raise IntakeError(f"the job configuration is not valid JSON data: {exc}", 400) from None
    os.mkdir(dest, 0o755)
    try:
        result = write_stream(_BytesReader(data), dest / CONFIG_FILE)
    except BaseException:
        remove_path(dest)
        raise
    return TreeManifest(
        result.shard_size, (FileEntry(CONFIG_FILE, result.size, result.digest),), ()
    )


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int = -1, /) -> bytes:
        size = len(self._data) if size < 0 else size
        part, self._data = self._data[:size], self._data[size:]
        return bytes(part)
