"""Hash bytes as they arrive, in one pass, with the same result as hashing the file later.

:class:`StreamingHasher` computes a file's digest (see :mod:`.filehash`) from chunks in
order. :class:`HashingWriter` (made by :func:`receive_file`) also writes the chunks to a new
file: a writer thread does the ``write`` calls while the calling thread hashes, so hashing
overlaps the I/O instead of adding to it; when the file is to be fsynced, the writer also
queues what it wrote for writeback every few MiB (:mod:`.writeback`), so the disk works
while the stream is hashed rather than after it. A digest that differs from the expected
one removes the file and raises :class:`~.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from types import TracebackType
from typing import Final

from .errors import InputError
from .filehash import DEFAULT_SHARD_SIZE, FileDigest, check_shard_size, combine_shards
from .progress import NullProgress, Progress
from .writeback import WriteBehind

# Chunks handed to the writer thread but not yet written; bounds memory to this many chunks.
QUEUE_DEPTH: Final = 8

_Chunk = bytes | bytearray | memoryview


class StreamingHasher:
    """The digest of a byte stream under ``shard_size``, fed chunk by chunk in file order.

    With ``plain_sha256`` the plain SHA-256 is also computed for streams longer than one
    shard (for shorter ones the digest already is the plain SHA-256).
    """

    def __init__(self, shard_size: int = DEFAULT_SHARD_SIZE, *, plain_sha256: bool = False) -> None:
        check_shard_size(shard_size)
        self.shard_size = shard_size
        self.size = 0
        self._shard = hashlib.sha256()
        self._shard_fill = 0
        self._shards: list[bytes] = []
        self._plain = hashlib.sha256() if plain_sha256 and shard_size else None

    def update(self, data: _Chunk) -> None:
        view = memoryview(data).cast("B")
        if self._plain is not None:
            self._plain.update(view)
        self.size += len(view)
        if not self.shard_size:
            self._shard.update(view)
            return
        while view:
            # A shard is closed only when more bytes follow it, so a stream of exactly k
            # shards ends with a full open shard rather than an empty one.
            if self._shard_fill == self.shard_size:
                self._shards.append(self._shard.digest())
                self._shard = hashlib.sha256()
                self._shard_fill = 0
            take = min(len(view), self.shard_size - self._shard_fill)
            self._shard.update(view[:take])
            self._shard_fill += take
            view = view[take:]

    def result(self) -> FileDigest:
        if not self._shards:
            plain = self._shard.hexdigest()
            return FileDigest(self.size, self.shard_size, plain, plain)
        shards = [*self._shards, self._shard.digest()]
        digest = combine_shards(self.shard_size, self.size, shards).hex()
        sha256 = None if self._plain is None else self._plain.hexdigest()
        return FileDigest(self.size, self.shard_size, digest, sha256)


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
    :func:`~.treehash.hash_file` computes from the file on disk. ``expected_digest`` is the
    manifest digest under ``shard_size``; ``expected_sha256`` the plain SHA-256;
    ``expected_size`` (e.g. a Content-Length) also gives the progress line its total.
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
