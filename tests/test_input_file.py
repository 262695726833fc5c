"""read_input_file: a regular file within its cap, or one InputError naming it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from aicert.verifier.errors import InputError
from aicert.verifier.input_file import MIB, read_input_file
from hypothesis import given, settings
from hypothesis import strategies as st


def test_reads_a_regular_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "root.pem"
    path.write_bytes(b"x" * (3 * MIB + 5))
    assert read_input_file(path, "trust root", 4 * MIB) == b"x" * (3 * MIB + 5)


def test_a_link_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_input_file(tmp_path / "link", "recipe", 10) == b"data"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "recipe {p} does not exist"),
        (lambda p: p.mkdir(), "recipe {p} is a directory, not a file"),
        (os.mkfifo, "recipe {p} is a FIFO, not a file"),
        (lambda p: p.symlink_to("/dev/zero"), "recipe {p} is a device, not a file"),
        (lambda p: p.symlink_to(p.parent / "nowhere"), "recipe {p} does not exist"),
    ],
    ids=["missing", "directory", "fifo", "device", "dangling-link"],
)
def test_refuses_what_is_not_a_regular_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "input"
    make(path)
    with pytest.raises(InputError) as info:
        read_input_file(path, "recipe", MIB)
    assert info.value.message == message.format(p=path)


def test_refuses_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with path.open("wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse: reading it would never finish
    with pytest.raises(InputError, match=r"huge is larger than 1 MiB, the most accepted"):
        read_input_file(path, "trust root", MIB)


def test_a_file_that_reports_no_size_is_still_capped() -> None:
    # /proc files report st_size 0; the cap holds while reading.
    assert read_input_file(Path("/proc/self/status"), "status", MIB).startswith(b"Name:")
    with pytest.raises(InputError, match="larger than 16 bytes"):
        read_input_file(Path("/proc/self/status"), "status", 16)


def test_an_unreadable_file_is_bad_input() -> None:
    with pytest.raises(InputError, match=r"cannot read certificate /proc/self/mem: "):
        read_input_file(Path("/proc/self/mem"), "certificate", MIB)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4096), limit=st.integers(min_value=0, max_value=4096))
def test_returns_the_bytes_exactly_when_within_the_cap(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, limit: int
) -> None:
    path = tmp_path_factory.mktemp("prop") / "f"
    path.write_bytes(data)
    if len(data) <= limit:
        assert read_input_file(path, "file", limit) == data
    else:
        with pytest.raises(InputError, match="is larger than"):
            read_input_file(path, "file", limit)
