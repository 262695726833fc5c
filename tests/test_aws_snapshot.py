"""The EBS block reader: what it yields, placed at its indices over zeros, is the disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aicert.builder.platforms.aws.snapshot import BLOCK, GIB, nonzero_blocks, volume_gib
from hypothesis import given, settings
from hypothesis import strategies as st

# A disk of up to 6 blocks: each block zero, a short run of data at some offset, or a
# partial last block.
_block_content = st.one_of(
    st.just(b""),
    st.tuples(st.integers(0, BLOCK - 1), st.binary(min_size=1, max_size=64)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_block_content, min_size=0, max_size=6), st.integers(0, BLOCK - 1))
def test_the_written_blocks_rebuild_the_disk_and_no_zero_block_is_sent(
    contents: list[bytes | tuple[int, bytes]], tail: int
) -> None:
    disk = bytearray(len(contents) * BLOCK + tail)
    for i, content in enumerate(contents):
        if isinstance(content, tuple):
            offset, data = content
            start = i * BLOCK + offset
            disk[start : start + len(data)] = data[: len(disk) - start]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disk.raw"
        path.write_bytes(bytes(disk))
        blocks = list(nonzero_blocks(path))
    rebuilt = bytearray(-(-len(disk) // BLOCK) * BLOCK)
    indices = [i for i, _ in blocks]
    assert indices == sorted(set(indices))
    for index, data in blocks:
        assert len(data) == BLOCK
        assert any(data)
        rebuilt[index * BLOCK : (index + 1) * BLOCK] = data
    assert bytes(rebuilt[: len(disk)]) == bytes(disk)
    assert not any(rebuilt[len(disk) :])


def test_the_volume_size_is_whole_gib_and_at_least_one() -> None:
    assert [volume_gib(n) for n in (0, 1, GIB, GIB + 1, 5 * GIB)] == [1, 1, 1, 2, 5]
