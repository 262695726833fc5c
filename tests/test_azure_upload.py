"""Page writes of a fixed VHD: only non-zero pages, aligned, bounded, in parallel, retried."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from aicert.builder.platforms.azure import vhd
from aicert.builder.platforms.azure.errors import (
    CloudPermissionError,
    CloudTransientError,
    translate,
)
from aicert.builder.platforms.azure.upload import (
    MAX_PAGE_WRITE,
    RetryPolicy,
    call_with_retries,
    page_writes,
    upload_vhd,
)
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from hypothesis import given, settings
from hypothesis import strategies as st

MIB = 1 << 20
NO_WAIT = RetryPolicy(attempts=4, first_delay=0.0)


def _disk(path: Path, size: int, chunks: dict[int, bytes]) -> vhd.FixedVhd:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    return vhd.fixed_vhd_for(path, digest_hex=vhd.sha256_of(path), timestamp=0)


def _assemble(image: vhd.FixedVhd, writes: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(image.size)
    for offset, data in writes:
        out[offset : offset + len(data)] = data
    return bytes(out)


def _expected(image: vhd.FixedVhd) -> bytes:
    raw = image.raw.read_bytes()
    return raw + bytes(image.disk_size - len(raw)) + image.footer.to_bytes()


def test_writes_rebuild_the_vhd_and_skip_zero_blocks(tmp_path: Path) -> None:
    data = {0: os.urandom(10000), 3 * MIB + 4096: b"\x01", 7 * MIB: os.urandom(9 * MIB)}
    image = _disk(tmp_path / "d.raw", 20 * MIB + 300, data)
    writes = [(w.offset, w.data) for w in page_writes(image)]
    assert _assemble(image, writes) == _expected(image)
    for offset, chunk in writes:
        assert offset % 512 == 0
        assert len(chunk) % 512 == 0
        assert 0 < len(chunk) <= MAX_PAGE_WRITE
    # 10000 bytes → 3 blocks of 4 KiB, 1 byte → 1 block, 9 MiB → 9 MiB, plus the footer.
    sent = sum(len(c) for _, c in writes)
    assert sent == 3 * 4096 + 4096 + 9 * MIB + 512
    assert writes[-1] == (image.disk_size, image.footer.to_bytes())


def test_zero_blocks_inside_data_are_not_sent(tmp_path: Path) -> None:
    """Zeros that are written to disk (not holes) are skipped as well."""
    path = tmp_path / "dense.raw"
    block = os.urandom(4096)
    path.write_bytes((block + bytes(4096)) * 512)  # 4 MiB, half zeros, no holes
    image = vhd.fixed_vhd_for(path, digest_hex="00" * 32, timestamp=0)
    writes = list(page_writes(image))
    assert sum(len(w.data) for w in writes) == 2 * MIB + 512
    assert _assemble(image, [(w.offset, w.data) for w in writes]) == _expected(image)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6 * MIB), st.binary(min_size=1, max_size=20000)),
        max_size=6,
    ),
    st.integers(1, 6 * MIB),
)
def test_any_layout_rebuilds_exactly(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[tuple[int, bytes]], size: int
) -> None:
    path = tmp_path_factory.mktemp("layout") / "d.raw"
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)
    image = vhd.fixed_vhd_for(path, digest_hex="00" * 32, timestamp=0)
    writes = list(page_writes(image, max_write=64 * 1024))
    assert all(w.data.strip(b"\0") for w in writes)
    assert all(len(w.data) <= 64 * 1024 and w.offset % 512 == 0 for w in writes)
    assert _assemble(image, [(w.offset, w.data) for w in writes]) == _expected(image)


def test_upload_is_parallel_and_reports_what_it_sent(tmp_path: Path) -> None:
    image = _disk(tmp_path / "d.raw", 64 * MIB, {MIB: os.urandom(24 * MIB)})
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    received: list[tuple[int, bytes]] = []

    def put(offset: int, data: bytes) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
            received.append((offset, data))

    report = upload_vhd(image, put, workers=6, policy=NO_WAIT)
    assert state["max"] > 1
    assert report.bytes_sent == 24 * MIB + 512
    assert report.page_writes == len(received) == 7
    assert (
        hashlib.sha256(_assemble(image, received)).digest()
        == hashlib.sha256(_expected(image)).digest()
    )


def _resp(status: int) -> HttpResponseError:
    err = HttpResponseError(message=f"status {status}")
    err.status_code = status
    return err


def test_transient_failures_are_retried_then_succeed(tmp_path: Path) -> None:
    image = _disk(tmp_path / "d.raw", 4 * MIB, {0: b"x"})
    failures = iter([_resp(503), ServiceRequestError("reset"), _resp(429)])
    calls: list[int] = []

    def put(offset: int, data: bytes) -> None:
        calls.append(offset)
        exc = next(failures, None)
        if exc is not None:
            raise exc

    report = upload_vhd(image, put, workers=1, policy=NO_WAIT)
    assert report.retries == 3
    assert report.page_writes == 2


def test_permanent_failure_stops_the_upload(tmp_path: Path) -> None:
    image = _disk(tmp_path / "d.raw", 40 * MIB, {i * MIB: b"x" for i in range(40)})
    calls = 0

    def put(offset: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        raise _resp(403)

    with pytest.raises(CloudPermissionError, match="uploading the disk image"):
        upload_vhd(image, put, workers=2, policy=NO_WAIT)
    assert calls < 10  # stopped early, not one attempt per page


def test_retries_give_up_after_the_policy(tmp_path: Path) -> None:
    image = _disk(tmp_path / "d.raw", 4 * MIB, {0: b"x"})

    def put(offset: int, data: bytes) -> None:
        raise _resp(500)

    with pytest.raises(CloudTransientError, match="HTTP 500"):
        upload_vhd(image, put, workers=1, policy=NO_WAIT)


def test_backoff_grows_and_honours_retry_after() -> None:
    waits: list[float] = []
    errors = [_resp(503), _resp(503), _resp(503)]

    def fn() -> None:
        if errors:
            raise errors.pop()

    call_with_retries(fn, policy=RetryPolicy(attempts=5, first_delay=1.0), sleep=waits.append)
    assert 0.5 <= waits[0] <= 1.0
    assert 1.0 <= waits[1] <= 2.0
    assert 2.0 <= waits[2] <= 4.0


class RecordingProgress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def start(self, total_bytes: int | None) -> None:
        self.calls.append(("start", total_bytes))

    def advance(self, nbytes: int) -> None:
        self.calls.append(("advance", nbytes))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def test_progress_covers_the_whole_vhd_once(tmp_path: Path) -> None:
    image = _disk(tmp_path / "d.raw", 40 * MIB, {0: b"x", 30 * MIB: os.urandom(5 * MIB)})
    progress = RecordingProgress()
    upload_vhd(image, lambda offset, data: None, workers=2, progress=progress)
    assert progress.calls[0] == ("start", image.size)
    assert progress.calls[-1] == ("finish", None)
    steps = [n for kind, n in progress.calls if kind == "advance"]
    assert all(n is not None and n > 0 for n in steps)
    assert sum(n for n in steps if n is not None) == image.size


def test_errors_never_show_the_sas_signature() -> None:
    url = "https://md-x.z1.blob.storage.azure.net/c/abcd?sv=2018-03-28&sr=b&sig=s3cr3t%2Bkey&x=1"
    exc = ServiceRequestError(f"HTTPSConnectionPool: Max retries exceeded with url: {url}")
    message = translate(exc, "uploading").message
    assert "s3cr3t" not in message
    assert "sig=REDACTED" in message
