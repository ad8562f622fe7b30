"""Packing: stride-L chunks of L+1, every token a label exactly once, padded or dropped tail."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pretrain.pack import pack_chunks, to_row

PAD = 99


def _docs(lengths: list[int]) -> list[np.ndarray]:
    out, nxt = [], 1000
    for n in lengths:
        out.append(np.arange(nxt, nxt + n, dtype=np.int32))
        nxt += n
    return out


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30), seq_len=st.integers(8, 32))
def test_every_token_is_a_label_once(lengths: list[int], seq_len: int) -> None:
    docs = _docs(lengths)
    stream = np.concatenate(docs)
    rows = [to_row(c, v) for c, v in pack_chunks(iter(docs), seq_len, PAD, "pad")]
    if len(stream) < 2:
        assert rows == []
        return
    labels = np.concatenate([r[2][r[1] == 1] for r in rows])
    assert labels.tolist() == stream[1:].tolist()
    for r in rows:
        assert r.shape == (3, seq_len)
        assert (r[2][:-1] == r[0][1:]).all()  # labels are the input shifted by one
        assert (r[1][r[0] == PAD] == 0).all()


def test_tail_drop_keeps_only_full_rows() -> None:
    docs = _docs([25, 30])
    rows = list(pack_chunks(iter(docs), 16, PAD, "drop"))
    assert [v for _, v in rows] == [17, 17, 17]  # 55 tokens: full chunks start at 0, 16, 32
    padded = list(pack_chunks(iter(docs), 16, PAD, "pad"))
    assert len(padded) == 4 and padded[-1][1] == 55 - 48
    assert (padded[-1][0][padded[-1][1]:] == PAD).all()


def test_consecutive_chunks_overlap_by_one() -> None:
    rows = list(pack_chunks(iter(_docs([50])), 10, PAD))
    for (a, _), (b, _) in zip(rows, rows[1:], strict=False):
        assert a[-1] == b[0]
