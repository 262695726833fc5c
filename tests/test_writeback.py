"""Early writeback: ranges are queued with the real sync_file_range, refusals stop hinting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aicert.receive import receive_file
from aicert.writeback import WriteBehind

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_each_full_step_is_queued(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        behind = WriteBehind(fd, step=2 * MiB)
        assert behind.enabled
        for expected in (0, 2 * MiB, 2 * MiB, 4 * MiB):
            os.write(fd, b"x" * MiB)
            behind.wrote(MiB)
            assert behind.queued == expected
    finally:
        os.close(fd)


def test_a_refusal_stops_the_hints(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        behind = WriteBehind(write_end, step=1)
        behind.wrote(1)  # sync_file_range on a pipe: ESPIPE
        assert not behind.enabled
        assert behind.queued == 0
        behind.wrote(10)  # no further calls, no error
    finally:
        os.close(read_end)
        os.close(write_end)


def test_receive_file_with_writeback_keeps_every_byte(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    with receive_file(tmp_path / "f") as sink:
        for start in range(0, len(data), 64 * 1024):
            sink.write(data[start : start + 64 * 1024])
    assert (tmp_path / "f").read_bytes() == data
