"""Packing token streams into rows: chunks of L+1 tokens with stride L, then (input, mask, labels).

Documents flow across row boundaries (the remainder of one document carries into the next row); only the
very end of a shard's stream is padded (mask 0) or dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

Chunk = tuple[np.ndarray, int]


class Packer:
    """Push-style packer, for shards that route one document stream into several outputs."""

    def __init__(self, seq_len: int, pad_id: int, tail: str = "pad") -> None:
        self.seq_len, self.pad_id, self.tail = seq_len, pad_id, tail
        self._buf: list[np.ndarray] = []
        self._have = 0
        self.position = 0  # tokens added so far: a token's index in the stream; row r holds labels rL+1..rL+L

    def add(self, ids: np.ndarray) -> list[Chunk]:
        """Add one document's ids; returns the chunks it completed (each ``(L+1 ids, L+1)``)."""
        width = self.seq_len + 1
        self.position += len(ids)
        self._buf.append(ids)
        self._have += len(ids)
        if self._have < width:
            return []
        flat = np.concatenate(self._buf)
        out: list[Chunk] = []
        pos = 0
        while len(flat) - pos >= width:
            out.append((flat[pos:pos + width], width))
            pos += self.seq_len
        rest = flat[pos:].copy()  # release the concatenated block
        self._buf, self._have = [rest], len(rest)
        return out

    def finish(self) -> list[Chunk]:
        """The padded tail (`valid` < L+1), unless dropped or holding no new label."""
        have = self._have
        if self.tail != "pad" or have < 2:
            return []
        chunk = np.full(self.seq_len + 1, self.pad_id, dtype=np.int32)
        chunk[:have] = np.concatenate(self._buf)
        self._buf, self._have = [], 0
        return [(chunk, have)]


def pack_chunks(docs: Iterable[np.ndarray], seq_len: int, pad_id: int, tail: str = "pad") -> Iterator[Chunk]:
    """Yield ``(chunk, valid)``: `chunk` has L+1 ids, the first `valid` of them real, the rest `pad_id`.

    Consecutive chunks overlap by one token (stride L), so every token is a label exactly once.
    """
    packer = Packer(seq_len, pad_id, tail)
    for ids in docs:
        yield from packer.add(ids)
    yield from packer.finish()


def to_row(chunk: np.ndarray, valid: int) -> np.ndarray:
    """The ``(3, L)`` row of one chunk: input = chunk[:-1], labels = chunk[1:], mask 1 on real labels."""
    seq_len = len(chunk) - 1
    row = np.empty((3, seq_len), dtype=np.int32)
    row[0] = chunk[:-1]
    row[1] = np.arange(seq_len) < valid - 1
    row[2] = chunk[1:]
    return row
