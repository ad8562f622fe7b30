"""The compact near-dedup index makes datasketch's decisions with band keys in RAM and signatures on disk."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from sft_builder.steps.dedup import MinHasher, NearIndex

rng = random.Random(11)
VOCAB = [f"w{i}" for i in range(2000)]


def _corpus(n_families: int) -> list[str]:
    """Families of an original and copies edited from 1% to 40% of words: many pairs near the threshold."""
    docs = []
    for _ in range(n_families):
        base = [rng.choice(VOCAB) for _ in range(rng.randint(30, 300))]
        docs.append(" ".join(base))
        for _ in range(rng.randint(0, 5)):
            w = list(base)
            for k in rng.sample(range(len(w)), max(1, int(len(w) * rng.uniform(0.01, 0.4)))):
                w[k] = rng.choice(VOCAB)
            docs.append(" ".join(w))
    rng.shuffle(docs)
    return docs


def _index(docs: list[str], tmp_path: Path, sketch_k: int, threshold: float = 0.8) -> NearIndex:
    sigs, sketches = MinHasher(128, 5, seed=1).sign(docs, sketch_k)
    index = NearIndex(128, threshold, sketch_k=sketch_k, folder=tmp_path)
    for s in range(0, len(docs), 37):  # uneven batches
        index.add_many(sigs[s : s + 37], sketches[s : s + 37])
    return index


def test_compact_index_decides_as_datasketch_in_any_order(tmp_path: Path) -> None:
    docs = _corpus(300)
    for sketch_k, threshold in ((256, 0.8), (0, 0.7)):
        index = _index(docs, tmp_path, sketch_k, threshold)
        removed_total = 0
        for seed in range(3):
            order = np.random.default_rng(seed).permutation(len(docs))
            ours, ref = index.resolve(order), index.resolve_datasketch(order)
            assert (ours == ref).all()
            index.PAIR_BLOCK = 5  # band mates listed a few documents at a time: the same walk
            assert (index.resolve(order) == ours).all()
            del index.PAIR_BLOCK
            removed_total += int((ours != np.arange(len(docs))).sum())
        index.close()
        assert removed_total > 60  # the corpus really has duplicates to decide


def test_compact_index_holds_band_keys_in_ram_and_rows_on_disk(tmp_path: Path) -> None:
    docs = _corpus(100)
    index = _index(docs, tmp_path, 256)
    assert index.ram_bytes == len(docs) * index.bands * 8 <= len(docs) * 1500
    assert index.disk_bytes == len(docs) * (128 + 256) * 4
    sigs, sketches = MinHasher(128, 5, seed=1).sign(docs[:5], 256)
    assert (index.all_rows()[:5] == np.hstack([sigs, sketches])).all()
    one = NearIndex(128, 0.8, sketch_k=256, folder=tmp_path)
    for s, k in zip(sigs, sketches, strict=True):
        one.add(s, k)
    assert (one.keys[:5] == index.keys[:5]).all()
    one.close()
    index.close()


def test_pooled_estimate_of_many_rows_is_the_one_row_estimate_bit_for_bit(tmp_path: Path) -> None:
    """Sketches with repeated values, empty slots and more distinct values than k: the batched estimate
    equals the per-pair one exactly, so decisions at the threshold cannot move."""
    gen = np.random.default_rng(4)
    k = 16
    index = NearIndex(128, 0.8, sketch_k=k, folder=tmp_path)
    empty = int(MinHasher.EMPTY)
    for _ in range(200):
        width = int(gen.integers(1, 40))  # a small range: values repeat inside a sketch and across the pair
        rows = np.sort(gen.integers(0, width, (6, k)).astype(np.uint32), axis=1)
        for r in rows:
            r[int(gen.integers(0, k + 1)) :] = empty  # some slots empty, sometimes all
        rows[0, -1] = empty - 1 if gen.random() < 0.2 else rows[0, -1]
        agree = gen.random(5)
        one = np.array([index._pooled(a, rows[0], b) for a, b in zip(agree, rows[1:], strict=True)])
        assert (index._pooled_many(agree, rows[0], rows[1:]) == one).all()
    index.close()
