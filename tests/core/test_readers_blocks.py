"""`line_blocks` and `part_size`: how files this program wrote, and big inputs, are cut into work."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalmix.core.readers import line_blocks, part_size, plan_parts


@pytest.mark.parametrize("tail", [b"", b'{"last": "no newline"}'])
@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_line_blocks_are_whole_lines_that_make_the_file(tmp_path: Path, tail: bytes, size: int) -> None:
    lines = [f'{{"n": {i}, "t": "{"é" * (i % 13)}"}}\n'.encode() for i in range(200)]
    data = b"".join(lines) + tail
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    blocks = list(line_blocks(path, size))
    assert b"".join(blocks) == data
    assert all(b.endswith(b"\n") for b in blocks[:-1])
    assert sum(len(b.splitlines()) for b in blocks) == len(lines) + (1 if tail else 0)
    if size >= 1 << 20:
        assert len(blocks) == (2 if tail else 1)  # a last line without its newline comes on its own
    if size == 64:
        assert len(blocks) > 50


def test_part_sizes_shrink_towards_the_end_of_a_file(tmp_path: Path) -> None:
    assert part_size(100_000, 8_000) == 8_000
    assert part_size(8_000, 8_000) == 4_000
    assert part_size(3_000, 8_000) == 2_000  # never under a quarter
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"x" * 80) for i in range(2_000)))
    parts = plan_parts([str(path)], part_bytes=16_000)
    assert parts is not None
    sizes = [p.end - p.start for p in parts]
    assert sum(sizes) == path.stat().st_size and parts[0].start == 0
    assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert sizes[0] >= 16_000 and max(sizes[-3:]) < 10_000  # the last parts are the small ones
    assert min(sizes[:-1]) >= 4_000  # a quarter of part_bytes, but for the file's remainder
