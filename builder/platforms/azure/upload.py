"""Upload a fixed VHD to a managed disk's page blob: parallel, zero pages skipped, retried.

A freshly created upload disk reads as zeros, so only non-zero pages need to be
written. The raw disk is streamed once: holes of a sparse file are skipped without
reading, other all-zero 4 KiB blocks are dropped as they are read, and runs of
non-zero blocks become page writes of at most 4 MiB (the Put Page limit), each
512-byte aligned. A bounded number of writes is in flight, so memory stays at
about ``2 x workers x 4 MiB`` whatever the disk size.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from aicert.verifier.errors import InputError
from aicert.verifier.progress import NullProgress, Progress
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobClient

from .errors import TRANSIENT_STATUS, CloudTransientError, translate
from .vhd import SECTOR, FixedVhd, raw_extents

MAX_PAGE_WRITE = 4 << 20
ZERO_BLOCK = 4096

PutPage = Callable[[int, bytes], None]


@dataclass(frozen=True)
class PageWrite:
    """``data`` (a multiple of 512 bytes) to be written at byte ``offset`` of the blob."""

    offset: int
    data: bytes


def page_writes(
    vhd: FixedVhd,
    *,
    max_write: int = MAX_PAGE_WRITE,
    block: int = ZERO_BLOCK,
    on_position: Callable[[int], None] | None = None,
) -> Iterator[PageWrite]:
    """The writes that turn an all-zero blob into ``vhd``: its non-zero blocks, then the footer."""
    if block % SECTOR or max_write % block or max_write > MAX_PAGE_WRITE:
        raise ValueError("block must be a multiple of 512 dividing max_write (at most 4 MiB)")
    zero_block = bytes(block)
    zero_chunk = bytes(max_write)
    run_start = 0
    run = bytearray()

    def flush() -> Iterator[PageWrite]:
        nonlocal run
        if run:
            yield PageWrite(run_start, bytes(run))
            run = bytearray()

    try:
        with vhd.raw.open("rb") as f:
            done = 0
            for start, end in raw_extents(f.fileno(), vhd.raw_size):
                pos = max(start - start % block, done)
                if pos != run_start + len(run):
                    yield from flush()
                f.seek(pos)
                while pos < end:
                    chunk = f.read(min(max_write, end - pos + (-(end - pos)) % block))
                    if not chunk:
                        break
                    if len(chunk) % SECTOR:
                        # The raw image ends mid-sector; the VHD pads it with zeros.
                        chunk += bytes(SECTOR - len(chunk) % SECTOR)
                    if chunk == zero_chunk[: len(chunk)]:
                        yield from flush()
                    else:
                        for i in range(0, len(chunk), block):
                            piece = chunk[i : i + block]
                            if piece == zero_block[: len(piece)]:
                                yield from flush()
                                continue
                            if not run:
                                run_start = pos + i
                            run += piece
                            if len(run) >= max_write:
                                yield from flush()
                    pos += len(chunk)
                    if on_position is not None:
                        on_position(pos)
                done = pos
            yield from flush()
    except OSError as exc:
        raise InputError(f"cannot read {vhd.raw}: {exc.strerror}") from exc
    if on_position is not None:
        on_position(vhd.disk_size)
    yield PageWrite(vhd.disk_size, vhd.footer.to_bytes())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient failures (throttling, 5xx, network)."""

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, math.ldexp(self.first_delay, attempt))
        # Jitter spreads the retries of parallel writers; it needs no cryptographic quality.
        return base * random.uniform(0.5, 1.0)  # noqa: S311


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ServiceRequestError | ServiceResponseError | CloudTransientError):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in TRANSIENT_STATUS


def _retry_after(exc: BaseException, cap: float) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return None if value is None else min(float(str(value)), cap)
    except ValueError:
        return None


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


def call_with_retries(
    fn: Callable[[], None],
    *,
    policy: RetryPolicy,
    retries: _Counter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call ``fn``; on a transient failure wait (Retry-After, else backoff) and call again."""
    for attempt in range(policy.attempts):
        try:
            fn()
            return
        except Exception as exc:
            if not is_transient(exc) or attempt == policy.attempts - 1:
                raise
            if retries is not None:
                retries.add()
            wait = _retry_after(exc, policy.max_delay)
            sleep(policy.delay(attempt) if wait is None else wait)


@dataclass(frozen=True)
class UploadReport:
    """What an upload did: bytes and writes sent, retries, and how long it took."""

    vhd_size: int
    raw_size: int
    bytes_sent: int
    page_writes: int
    retries: int
    seconds: float


def blob_page_writer(blob: BlobClient) -> PutPage:
    def put(offset: int, data: bytes) -> None:
        blob.upload_page(data, offset=offset, length=len(data))

    return put


def upload_vhd(
    vhd: FixedVhd,
    put_page: PutPage,
    *,
    workers: int = 8,
    policy: RetryPolicy | None = None,
    progress: Progress | None = None,
) -> UploadReport:
    """Write the non-zero pages of ``vhd`` with ``workers`` parallel writers.

    ``progress`` follows the position through the VHD (skipped zeros count as done).
    The first write that fails for good (not transient, or out of retries) stops the
    upload and raises a CloudError; writes already queued are cancelled.
    """
    policy = policy or RetryPolicy()
    retries = _Counter()
    sent = _Counter()
    writes = _Counter()
    slots = threading.BoundedSemaphore(2 * workers)
    failures: list[Exception] = []
    started = time.monotonic()
    progress = progress or NullProgress()
    progress.start(vhd.size)
    position = 0

    def moved_to(offset: int) -> None:
        nonlocal position
        if offset > position:
            progress.advance(offset - position)
            position = offset

    def write(page: PageWrite) -> None:
        call_with_retries(lambda: put_page(page.offset, page.data), policy=policy, retries=retries)
        sent.add(len(page.data))
        writes.add()

    def finished(future: Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, Exception):
            failures.append(exc)  # before the release, so the reader sees it and stops
        slots.release()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aicert-upload")
    try:
        for page in page_writes(vhd, on_position=moved_to):
            slots.acquire()
            if failures:
                slots.release()
                break
            pool.submit(write, page).add_done_callback(finished)
    finally:
        pool.shutdown(wait=True, cancel_futures=bool(failures))
    if failures:
        raise translate(failures[0], "uploading the disk image") from failures[0]
    moved_to(vhd.size)
    progress.finish()
    return UploadReport(
        vhd_size=vhd.size,
        raw_size=vhd.raw_size,
        bytes_sent=sent.value,
        page_writes=writes.value,
        retries=retries.value,
        seconds=time.monotonic() - started,
    )
