"""Streaming digests equal on-disk digests; receive_file writes, checks and cleans up."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aicert.verifier.digest.filehash import MIN_SHARD_SIZE, StreamingHasher
from aicert.verifier.digest.treehash import hash_file
from aicert.verifier.errors import InputError
from hypothesis import given, settings
from hypothesis import strategies as st

from aicert.receive import receive_file

S = MIN_SHARD_SIZE


def noise(seed: object, size: int) -> bytes:
    """Deterministic incompressible test data."""
    return hashlib.shake_256(repr(seed).encode()).digest(size)


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from([0, 1, S - 1, S, S + 1, 2 * S, 2 * S + 3, 5 * S - 1]),
    cuts=st.lists(st.integers(0, 5 * S), max_size=8),
    shard_size=st.sampled_from([0, S, 2 * S]),
)
def test_streaming_equals_hashing_the_file(
    tmp_path_factory: pytest.TempPathFactory, size: int, cuts: list[int], shard_size: int
) -> None:
    data = noise(size, size)
    hasher = StreamingHasher(shard_size, plain_sha256=True)
    for chunk in chunks_of(data, cuts):
        hasher.update(chunk)
    streamed = hasher.result()
    path = tmp_path_factory.mktemp("s") / "f"
    path.write_bytes(data)
    on_disk = hash_file(path, shard_size=shard_size, workers=2)
    assert streamed.digest == on_disk.digest
    assert streamed.size == size
    assert streamed.sha256 == hashlib.sha256(data).hexdigest()


def test_receive_file_writes_and_matches_disk(tmp_path: Path) -> None:
    data = noise(3, 3 * S + 11)
    dest = tmp_path / "model.bin"
    with receive_file(dest, shard_size=S) as sink:
        for chunk in chunks_of(data, [100, S, 2 * S + 5]):
            sink.write(chunk)
    assert dest.read_bytes() == data
    assert sink.result == hash_file(dest, shard_size=S)


def test_reused_mutable_buffer(tmp_path: Path) -> None:
    data = noise(4, 10 * 4096)
    dest = tmp_path / "f"
    buf = bytearray(4096)
    with receive_file(dest, shard_size=0) as sink:
        for i in range(0, len(data), 4096):
            buf[:] = data[i : i + 4096]
            sink.write(buf)
            buf[:] = bytes(4096)  # the caller reuses its buffer at once
    assert dest.read_bytes() == data
    assert sink.result is not None
    assert sink.result.digest == hashlib.sha256(data).hexdigest()


def test_expected_digests_accepted(tmp_path: Path) -> None:
    data = noise(5, 2 * S + 1)
    plain = hashlib.sha256(data).hexdigest()
    path = tmp_path / "ref"
    path.write_bytes(data)
    sharded = hash_file(path, shard_size=S).digest
    with receive_file(
        tmp_path / "f",
        shard_size=S,
        expected_digest=sharded,
        expected_sha256=plain.upper(),
        expected_size=len(data),
    ) as sink:
        sink.write(data)
    assert sink.result is not None
    assert sink.result.sha256 == plain
    assert sink.result.digest == sharded


@pytest.mark.parametrize(
    ("which", "value", "message"),
    [
        ("expected_digest", "0" * 64, r"digest \w+, expected 0{64}; the file was removed"),
        ("expected_sha256", "0" * 64, r"SHA-256 \w+, expected 0{64}; the file was removed"),
        ("expected_size", 2 * S + 1, r"expected 131073; the file was removed"),
    ],
)
def test_mismatch_removes_the_file(
    tmp_path: Path, which: str, value: str | int, message: str
) -> None:
    dest = tmp_path / "f"
    sink = receive_file(dest, shard_size=S, **{which: value})  # type: ignore[arg-type]
    sink.write(bytes(2 * S))
    with pytest.raises(InputError, match=message):
        sink.close()
    assert not dest.exists()


def test_exception_inside_the_block_removes_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    sink = receive_file(dest)

    def interrupted_upload() -> None:
        with sink:
            sink.write(b"partial")
            raise RuntimeError("connection dropped")

    with pytest.raises(RuntimeError):
        interrupted_upload()
    assert not dest.exists()
    assert sink.result is None


def test_existing_destination_is_not_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        receive_file(dest)
    assert dest.read_bytes() == b"keep"


def test_write_after_close_is_a_programming_error(tmp_path: Path) -> None:
    sink = receive_file(tmp_path / "f")
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write(b"x")
    assert sink.close() == sink.result  # closing twice returns the same result


WRITE_FAILURE_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys
    from aicert.verifier.errors import InputError
    from aicert.receive import receive_file
    # A file size limit makes write() fail with EFBIG, like a full disk would.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    sink = receive_file(sys.argv[1])
    try:
        for _ in range(64):
            sink.write(bytes(8192))
        sink.close()
    except InputError as exc:
        print(exc.message)
        sys.exit(3)
    """
)


def test_write_failure_is_reported_and_the_file_removed(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_FAILURE_SCRIPT, str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "write failed: File too large" in proc.stdout
    assert not dest.exists()
