"""Packing encoded conversations into fixed-length training rows (iterator in, iterator out).

A row is ``(4, L)`` int32: input ids, loss mask (1 where the *label* at that position is trained),
labels (input shifted left by one), and segment ids (1, 2, ... per packed piece, 0 on padding).

- ``llm360``: LLM360's own way: everything concatenated, cut into chunks of L+1, input = chunk[:-1],
  labels = chunk[1:], mask shifted the same way, tail dropped, chunks with nothing trained skipped.
- ``bfd``: best-fit-decreasing of whole conversations into padded rows of L, within a bounded buffer;
  conversations longer than L are cut at turn boundaries, or truncated when a single turn does not fit;
  documents longer than L are cut every L tokens. Labels never cross a record, so a document's BOS label
  is trained only under ``llm360`` packing, where records follow each other in one stream.
- ``none``: one padded row per conversation (longer ones cut as in ``bfd``).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sft_builder.chat import Encoded

Packing = Literal["llm360", "bfd", "none"]
PACKINGS: tuple[str, ...] = ("llm360", "bfd", "none")
ROW_SEGMENTS = 3


@dataclass
class PackStats:
    """Counters of one packing run, for the build report."""

    rows: int = 0
    tokens: int = 0  # non-padding positions in rows
    positions: int = 0  # all positions in rows
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def efficiency(self) -> float:
        return self.tokens / self.positions if self.positions else 0.0

    def as_dict(self) -> dict[str, object]:
        counts = dict(sorted(self.counts.items()))
        return {"rows": self.rows, "efficiency": round(self.efficiency, 6), **counts}


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of tokens packed as one document."""

    ids: np.ndarray
    mask: np.ndarray


def split_long(enc: Encoded, seq_len: int, stats: PackStats) -> list[Piece]:
    """Cut a conversation longer than `seq_len` at turn starts; truncate a turn that alone is too long. A
    document is cut every `seq_len` tokens (nothing is truncated).

    Pieces that train nothing are dropped (counted) since a row of context alone teaches nothing.
    """
    n = len(enc.input_ids)
    if n <= seq_len:
        return [Piece(enc.input_ids, enc.loss_mask)]
    if enc.document:  # no turns to respect: consecutive rows' worth, as pretraining cuts text
        stats.counts["split_documents"] += 1
        pieces = [Piece(enc.input_ids[s:s + seq_len], enc.loss_mask[s:s + seq_len]) for s in range(0, n, seq_len)]
        kept = [p for p in pieces if p.mask[1:].any()]
        stats.counts["dropped_untrained_pieces"] += len(pieces) - len(kept)
        return kept
    stats.counts["split_conversations"] += 1
    cuts = [int(c) for c in enc.turn_starts if 0 < c < n] + [n]
    pieces: list[Piece] = []
    start, truncated = 0, False
    while start < n:
        fit = bisect.bisect_right(cuts, start + seq_len) - 1  # last cut that still fits in one row
        if fit >= 0 and cuts[fit] > start:
            end = nxt = cuts[fit]
        else:  # the next turn alone is longer than a row: keep its head, skip to the following turn
            end = start + seq_len
            nxt = cuts[bisect.bisect_right(cuts, end)] if end < n else n
            stats.counts["truncated_tokens"] += nxt - end
            truncated = True
        piece = Piece(enc.input_ids[start:end], enc.loss_mask[start:end])
        if piece.mask[1:].any():
            pieces.append(piece)
        else:
            stats.counts["dropped_untrained_pieces"] += 1
        start = nxt
    if truncated:
        stats.counts["truncated_conversations"] += 1
    return pieces


def build_row(pieces: list[Piece], seq_len: int, pad_id: int) -> np.ndarray:
    """Lay pieces side by side in one ``(4, L)`` row; labels and mask never cross a piece boundary."""
    row = np.zeros((4, seq_len), dtype=np.int32)
    row[0, :] = pad_id
    row[2, :] = pad_id
    pos = 0
    for k, p in enumerate(pieces, start=1):
        n = len(p.ids)
        row[0, pos:pos + n] = p.ids
        row[1, pos:pos + n - 1] = p.mask[1:]
        row[ROW_SEGMENTS, pos:pos + n] = k
        pos += n
    row[2, :-1] = row[0, 1:]
    return row


def _account(row: np.ndarray, stats: PackStats) -> np.ndarray:
    stats.rows += 1
    stats.positions += row.shape[1]
    stats.tokens += int((row[ROW_SEGMENTS] != 0).sum())
    return row


def pack_llm360(items: Iterable[Encoded], seq_len: int, stats: PackStats) -> Iterator[np.ndarray]:
    """LLM360's packing: concatenate, chunk L+1, shift, drop the tail and chunks with no trained label."""
    size = seq_len + 1
    ids_buf: list[np.ndarray] = []
    mask_buf: list[np.ndarray] = []
    seg_buf: list[np.ndarray] = []
    have = 0
    doc = 0
    for enc in items:
        doc += 1
        ids_buf.append(enc.input_ids)
        mask_buf.append(enc.loss_mask)
        seg_buf.append(np.full(len(enc.input_ids), doc, dtype=np.int64))
        have += len(enc.input_ids)
        if have < size:
            continue
        ids, mask, seg = np.concatenate(ids_buf), np.concatenate(mask_buf), np.concatenate(seg_buf)
        n_chunks = len(ids) // size
        for c in range(n_chunks):
            chunk = slice(c * size, (c + 1) * size)
            t, m, s = ids[chunk], mask[chunk], seg[chunk]
            if not m[1:].any():
                stats.counts["skipped_untrained_chunks"] += 1
                continue
            row = np.empty((4, seq_len), dtype=np.int32)
            row[0], row[1], row[2] = t[:-1], m[1:], t[1:]
            row[ROW_SEGMENTS] = s[:-1] - s[0] + 1  # documents numbered from 1 within the row
            yield _account(row, stats)
        rest = n_chunks * size
        ids_buf, mask_buf, seg_buf = [ids[rest:]], [mask[rest:]], [seg[rest:]]
        have = len(ids) - rest
    stats.counts["dropped_tail_tokens"] += have


def pack_none(items: Iterable[Encoded], seq_len: int, pad_id: int, stats: PackStats) -> Iterator[np.ndarray]:
    """One padded row per conversation (or per piece of a too-long one)."""
    for enc in items:
        for piece in split_long(enc, seq_len, stats):
            yield _account(build_row([piece], seq_len, pad_id), stats)


def pack_bfd(items: Iterable[Encoded], seq_len: int, pad_id: int, stats: PackStats,
             buffer_size: int = 20_000) -> Iterator[np.ndarray]:
    """Best-fit-decreasing within consecutive buffers of `buffer_size` pieces (bounded memory).

    Rows of one buffer come out in the order they were opened, so the result depends only on the input
    order and the buffer size.
    """
    buf: list[Piece] = []
    for enc in items:
        buf.extend(split_long(enc, seq_len, stats))
        if len(buf) >= buffer_size:
            yield from _bfd_flush(buf, seq_len, pad_id, stats)
            buf = []
    if buf:
        yield from _bfd_flush(buf, seq_len, pad_id, stats)


def _bfd_flush(pieces: list[Piece], seq_len: int, pad_id: int, stats: PackStats) -> Iterator[np.ndarray]:
    order = sorted(range(len(pieces)), key=lambda i: (-len(pieces[i].ids), i))
    rows: list[list[Piece]] = []
    free: list[tuple[int, int]] = []  # (space left, row index), sorted: the best fit is the first that fits
    for i in order:
        n = len(pieces[i].ids)
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, r = free.pop(k)
        else:
            space, r = seq_len, len(rows)
            rows.append([])
        rows[r].append(pieces[i])
        if space - n > 0:
            bisect.insort(free, (space - n, r))
    for r in rows:
        yield _account(build_row(r, seq_len, pad_id), stats)


def pack(items: Iterable[Encoded], packing: Packing, seq_len: int, pad_id: int, stats: PackStats,
         buffer_size: int = 20_000) -> Iterator[np.ndarray]:
    """Dispatch to one packing; yields ``(4, L)`` rows."""
    if packing == "llm360":
        return pack_llm360(items, seq_len, stats)
    if packing == "bfd":
        return pack_bfd(items, seq_len, pad_id, stats, buffer_size)
    if packing == "none":
        return pack_none(items, seq_len, pad_id, stats)
    raise ValueError(f"unknown packing {packing!r}")
