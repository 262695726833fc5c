"""Receive a file: write bytes as they arrive and hash them in the same pass.

The hashing is the verifier's own (:class:`aicert.verifier.digest.filehash.StreamingHasher`),
so the result equals hashing the file later. :class:`HashingWriter` (made by
:func:`receive_file`) writes the chunks to a new file: a writer thread does the ``write``
calls while the calling thread hashes, so hashing overlaps the I/O instead of adding to
it; when the file is to be fsynced, the writer also queues what it wrote for writeback
every few MiB (:mod:`aicert.writeback`), so the disk works while the stream is hashed
rather than after it. A digest that differs from the expected one removes the file and
raises :class:`~aicert.verifier.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from types import TracebackType
from typing import Final

from aicert.verifier.digest.filehash import (
    DEFAULT_SHARD_SIZE,
    FileDigest,
    StreamingHasher,
    check_shard_size,
)
from aicert.verifier.errors import InputError
from aicert.verifier.progress import NullProgress, Progress
from aicert.writeback import WriteBehind

# Chunks handed to the writer thread but not yet written; bounds memory to this many chunks.
QUEUE_DEPTH: Final = 8

_Chunk = bytes | bytearray | memoryview


class HashingWriter:
    """Writes chunks to a new file at ``dest`` while hashing them; use :func:`receive_file`.

    ``close()`` (or leaving the ``with`` block) flushes, optionally fsyncs, checks the
    expected digests and returns the :class:`FileDigest`, also kept in ``result``. On any
    failure, including an exception inside the ``with`` block, the file is removed.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        shard_size: int = DEFAULT_SHARD_SIZE,
        expected_digest: str | None = None,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        fsync: bool = True,
        progress: Progress | None = None,
    ) -> None:
        check_shard_size(shard_size)
        self.dest = os.fspath(dest)
        self._expected_size = expected_size
        self._expected_digest = expected_digest
        self._expected_sha256 = expected_sha256
        self._fsync = fsync
        self._progress = NullProgress() if progress is None else progress
        self._hasher = StreamingHasher(shard_size)
        # The plain SHA-256 of a sharded stream is computed in the writer thread, beside the
        # write, so it does not add to the caller's time on a multi-core machine.
        want_plain = expected_sha256 is not None and shard_size != 0
        self._plain = hashlib.sha256() if want_plain else None
        self.result: FileDigest | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._error: OSError | None = None
        self._closed = False
        self._aborted = False
        try:
            self._fd = os.open(
                self.dest,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o644,
            )
        except FileExistsError:
            raise InputError(f"{self.dest}: already exists; refusing to overwrite it") from None
        except OSError as exc:
            raise InputError(f"{self.dest}: cannot be created: {exc.strerror}") from None
        self._fd_open = True
        self._write_behind = WriteBehind(self._fd) if fsync else None
        self._thread = threading.Thread(target=self._write_loop, name="hashing-writer")
        self._thread.start()
        self._progress.start(expected_size)

    def _write_loop(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # keep draining so a blocked write() can return and see the error
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self._error = exc
                continue
            if self._write_behind is not None:
                self._write_behind.wrote(len(chunk))
            if self._plain is not None:
                self._plain.update(chunk)

    def _raise_write_error(self) -> None:
        if self._error is not None:
            self.abort()
            raise InputError(
                f"{self.dest}: write failed: {self._error.strerror}; the file was removed"
            )

    def write(self, data: _Chunk) -> int:
        """Queue ``data`` for writing and hash it meanwhile; returns its length."""
        if self._closed:
            raise ValueError("write to a closed HashingWriter")
        self._raise_write_error()
        # The caller may reuse a mutable buffer as soon as write() returns.
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._queue.put(chunk)
        self._hasher.update(chunk)
        self._progress.advance(len(chunk))
        return len(chunk)

    def _stop_writer(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def close(self) -> FileDigest:
        """Finish writing, check the digests and return the file's digest."""
        if self.result is not None:
            return self.result
        if self._closed:
            raise ValueError("close of an aborted HashingWriter")
        try:
            self._stop_writer()
            self._raise_write_error()
            if self._fsync:
                os.fsync(self._fd)
            written = os.fstat(self._fd).st_size
            if written != self._hasher.size:
                raise InputError(f"{self.dest}: {written} bytes on disk, {self._hasher.size} sent")
            result = self._finish_digest()
        except BaseException:
            self.abort()
            raise
        self._release_fd()
        self._progress.finish()
        self.result = result
        return result

    def _finish_digest(self) -> FileDigest:
        hashed = self._hasher.result()
        sha256 = hashed.sha256 if self._plain is None else self._plain.hexdigest()
        result = FileDigest(hashed.size, hashed.shard_size, hashed.digest, sha256)
        if self._expected_size is not None and result.size != self._expected_size:
            raise InputError(
                f"{self.dest}: received {result.size} bytes, expected {self._expected_size}; "
                "the file was removed"
            )
        if self._expected_digest is not None and result.digest != self._expected_digest.lower():
            raise InputError(
                f"{self.dest}: received {result.size} bytes with digest {result.digest}, "
                f"expected {self._expected_digest}; the file was removed"
            )
        if self._expected_sha256 is not None and result.sha256 != self._expected_sha256.lower():
            raise InputError(
                f"{self.dest}: received {result.size} bytes with SHA-256 {result.sha256}, "
                f"expected {self._expected_sha256}; the file was removed"
            )
        return result

    def _release_fd(self) -> None:
        # Close once: a second close could hit a descriptor number reused meanwhile.
        if self._fd_open:
            self._fd_open = False
            os.close(self._fd)

    def abort(self) -> None:
        """Stop and remove the partly written file (once)."""
        if self._aborted:
            return
        self._aborted = True
        if not self._closed:
            self._stop_writer()
        self._release_fd()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dest)
        self._progress.finish()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self.result is None:
            self.abort()


def receive_file(
    dest: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    expected_digest: str | None = None,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    fsync: bool = True,
    progress: Progress | None = None,
) -> HashingWriter:
    """A :class:`HashingWriter` creating ``dest``: ``with receive_file(p) as sink: sink.write(b)``.

    After the block, ``sink.result`` is the :class:`FileDigest`, equal to what
    :func:`~aicert.verifier.digest.treehash.hash_file` computes from the file on disk.
    ``expected_digest`` is the manifest digest under ``shard_size``; ``expected_sha256`` the
    plain SHA-256; ``expected_size`` (e.g. a Content-Length) also gives the progress line its
    total.
    """
    return HashingWriter(
        dest,
        shard_size=shard_size,
        expected_digest=expected_digest,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
        fsync=fsync,
        progress=progress,
    )
