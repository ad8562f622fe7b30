"""Packing: LLM360 chunking, best-fit-decreasing with whole conversations, one row per conversation."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sft_builder.chat import Encoded
from sft_builder.pack import PackStats, pack_bfd, pack_llm360, pack_none, split_long

PAD = 0


def item(k: int, n: int, turns: tuple[int, ...] = ()) -> Encoded:
    """A fake conversation: distinct ids per conversation, mask 1 on the second half of each turn."""
    ids = np.arange(n, dtype=np.int32) + 1000 * (k + 1)
    mask = np.zeros(n, dtype=np.int8)
    bounds = [0, *turns, n]
    for a, b in zip(bounds, bounds[1:], strict=False):
        mask[(a + b) // 2:b] = 1
    return Encoded(f"c{k}", "s", ids, mask, np.asarray(turns, dtype=np.int64))


def docs_in(rows: list[np.ndarray]) -> list[tuple[int, ...]]:
    """The packed pieces, recovered from segment ids."""
    out = []
    for r in rows:
        for s in np.unique(r[3][r[3] > 0]):
            out.append(tuple(r[0][r[3] == s].tolist()))
    return out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(2, 60), min_size=1, max_size=60), st.integers(8, 64))
def test_bfd_keeps_every_short_conversation_whole(lengths: list[int], seq_len: int) -> None:
    items = [item(k, n) for k, n in enumerate(lengths) if n <= seq_len]
    stats = PackStats()
    rows = list(pack_bfd(items, seq_len, PAD, stats, buffer_size=16))
    assert Counter(docs_in(rows)) == Counter(tuple(i.input_ids.tolist()) for i in items)
    for r in rows:
        assert r.shape == (4, seq_len) and r.dtype == np.int32
        np.testing.assert_array_equal(r[2, :-1], r[0, 1:])  # labels = input shifted
        assert not r[1][r[3] == 0].any()  # no loss on padding
        last = np.r_[r[3][1:] != r[3][:-1], True]
        assert not r[1][last].any(), "the label across a document boundary is never trained"
    assert stats.tokens == sum(len(i.input_ids) for i in items)
    assert stats.rows == len(rows)
    # best fit within one buffer: no two rows could have been merged
    whole = list(pack_bfd(items, seq_len, PAD, PackStats(), buffer_size=len(items) + 1))
    used = sorted(int((r[3] > 0).sum()) for r in whole)
    assert len(used) < 2 or used[0] + used[1] > seq_len


def test_bfd_efficiency_on_a_realistic_length_mix() -> None:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.5, 0.9, 3000).astype(int), 20, 2048)
    stats = PackStats()
    list(pack_bfd([item(k, int(n)) for k, n in enumerate(lengths)], 2048, PAD, stats))
    assert stats.efficiency >= 0.95


def test_mask_moves_to_the_label_position() -> None:
    e = item(0, 6)  # mask 0 0 0 1 1 1 on tokens
    (row,) = pack_none([e], 8, PAD, PackStats())
    assert row[1].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert row[3].tolist() == [1] * 6 + [0, 0]


def test_long_conversations_split_at_turns_else_truncated() -> None:
    stats = PackStats()
    e = item(0, 30, turns=(10, 18))  # turns of 10, 8 and 12 tokens
    pieces = split_long(e, 12, stats)
    assert [len(p.ids) for p in pieces] == [10, 8, 12]
    assert stats.counts["split_conversations"] == 1 and stats.counts["truncated_conversations"] == 0
    stats = PackStats()
    pieces = split_long(item(1, 30, turns=(5,)), 20, stats)  # a 25-token turn cannot fit
    assert [len(p.ids) for p in pieces] == [5, 20]
    assert stats.counts["truncated_conversations"] == 1 and stats.counts["truncated_tokens"] == 5
    stats = PackStats()
    assert [len(p.ids) for p in split_long(item(1, 30, turns=(5,)), 12, stats)] == [5]
    assert stats.counts["dropped_untrained_pieces"] == 1  # the kept head of the long turn trains nothing


def test_llm360_chunks_shift_and_drop_tail() -> None:
    items = [item(k, n) for k, n in enumerate([7, 13, 5, 9, 3])]  # 37 tokens, chunks of 9
    stats = PackStats()
    rows = list(pack_llm360(items, 8, stats))
    ids = np.concatenate([i.input_ids for i in items])
    mask = np.concatenate([i.loss_mask for i in items])
    assert len(rows) + stats.counts["skipped_untrained_chunks"] == 4
    assert stats.counts["dropped_tail_tokens"] == 1
    for r in rows:
        c = int(np.flatnonzero(ids == r[0][0])[0]) // 9
        np.testing.assert_array_equal(r[0], ids[c * 9:c * 9 + 8])
        np.testing.assert_array_equal(r[2], ids[c * 9 + 1:c * 9 + 9])
        np.testing.assert_array_equal(r[1], mask[c * 9 + 1:c * 9 + 9])


def test_llm360_skips_chunks_without_trained_labels() -> None:
    dead = Encoded("d", "s", np.arange(9, dtype=np.int32) + 5, np.zeros(9, np.int8), np.zeros(0, np.int64))
    stats = PackStats()
    rows = list(pack_llm360([dead, item(1, 9)], 8, stats))
    assert len(rows) == 1 and stats.counts["skipped_untrained_chunks"] == 1
