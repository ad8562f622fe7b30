"""Near-dedup benchmark: vectorised MinHash signatures against the plain datasketch loop, and the quality of
the removals against exact Jaccard ground truth. Prints one JSON line.

Corpus: N generated documents of 100-3,000 characters; some are exact copies of an earlier document, some
near copies with 1-10% of their words replaced. Ground truth: the build's rule with exact 5-gram Jaccard
inside each family (the original and its copies): earliest first, a document goes when it reaches the
threshold with a kept member of its family.
Unrelated documents share next to no 5-grams (random words from a 20,000-word vocabulary).
The plain loop (`MinHash(128)`, one `update` per 5-gram shingle) is timed on a sample and scaled.

The index is run twice on the same signatures, in the same order: the build's compact index (band keys in
RAM, signatures on disk) and the reference, datasketch's `MinHashLSH` with every signature in RAM. Both must
make the same decisions (`same_decisions`); each gets its speed (documents per second, untraced) and its
traced peak memory per document (tracemalloc over filling and resolving, a second untimed run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from sft_builder.steps.dedup import NO_RANKS, Members, MinHasher, NearIndex, keep_order
from sft_builder.steps.text import normalise

SKETCH_K = 256  # the build's default (NearDedupConfig.sketch_k)


def make_corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Documents and, for each, the index of its family's original (itself for an original)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(20_000)]
    cum = list(itertools.accumulate(1.0 / (r + 10) for r in range(len(vocab))))  # Zipf-like: words repeat
    docs: list[str] = []
    family: list[int] = []
    for i in range(n):
        kind = rng.random()
        if i > 100 and kind < 0.05:  # exact copy
            j = rng.randrange(i)
            docs.append(docs[j])
            family.append(family[j])
        elif i > 100 and kind < 0.20:  # near copy: 1-10% of the words replaced
            j = rng.randrange(i)
            words = docs[j].split()
            for k in rng.sample(range(len(words)), max(1, int(len(words) * rng.uniform(0.01, 0.10)))):
                words[k] = rng.choice(vocab)
            docs.append(" ".join(words))
            family.append(family[j])
        else:
            target = rng.randint(100, 3000)
            words, size = [], 0
            while size < target:
                w = rng.choices(vocab, cum_weights=cum)[0] if rng.random() < 0.3 else rng.choice(vocab)
                words.append(w)
                size += len(w) + 1
            docs.append(" ".join(words))
            family.append(i)
    return docs, family


def shingle_set(text: str, k: int = 5) -> set[str]:
    w = text.lower().split()
    return {" ".join(w[i:i + k]) for i in range(len(w) - k + 1)}


def ground_truth(docs: list[str], family: list[int], threshold: float) -> set[int]:
    """What the build's rule removes when computed with exact Jaccard: best (here: earliest) first, a document
    goes when it reaches the threshold with a kept member of its family."""
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    out = set()
    for idx in members.values():
        if len(idx) < 2:
            continue
        sets = {i: shingle_set(docs[i]) for i in idx}
        kept: list[int] = []
        for i in idx:
            if any(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold for j in kept if sets[i] | sets[j]):
                out.add(i)
            else:
                kept.append(i)
    return out


def plain_rate(docs: list[str], sample: int) -> float:
    """Documents per second of the plain datasketch loop on the first `sample` documents."""
    from datasketch import MinHash

    t = time.perf_counter()
    for d in docs[:sample]:
        m = MinHash(num_perm=128)
        for sh in shingle_set(d):
            m.update(sh.encode("utf-8"))
    return sample / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--plain-sample", type=int, default=1_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    docs, family = make_corpus(args.docs, args.seed)
    truth = ground_truth(docs, family, args.threshold)

    hasher = MinHasher(num_perm=128, shingle_size=5, seed=1)
    t = time.perf_counter()
    parts = [hasher.sign(docs[i:i + 512], SKETCH_K) for i in range(0, len(docs), 512)]
    sigs = np.vstack([p[0] for p in parts])
    sketches = np.vstack([p[1] for p in parts])
    del parts
    ours = len(docs) / (time.perf_counter() - t)
    plain = plain_rate(docs, args.plain_sample)

    # the build's order of steps: exact duplicates first (digest of normalised text), then near duplicates
    # Every document gets the same source, ranks and length in its key, so the id (the arrival number, zero
    # padded) orders them: the earliest of a cluster stays, as the ground truth above assumes.
    seen: set[int] = set()
    exact: set[int] = set()
    indexed: list[int] = []
    members = Members()
    for i, d in enumerate(docs):
        key = hash(normalise(d))
        if key in seen:
            exact.add(i)
            continue
        seen.add(key)
        members.add((0, NO_RANKS, 0, f"{i:09d}"))
        indexed.append(i)
    order = keep_order(members)
    rows = np.asarray(indexed)

    def run(reference: bool) -> tuple[np.ndarray, NearIndex]:
        index = NearIndex(128, args.threshold, sketch_k=SKETCH_K)
        for s in range(0, len(rows), 512):
            index.add_many(sigs[rows[s:s + 512]], sketches[rows[s:s + 512]])
        winner = index.resolve_datasketch(order) if reference else index.resolve(order)
        index.close()
        return winner, index

    def measure(fn: Callable[[], tuple[np.ndarray, NearIndex]]) -> tuple[np.ndarray, NearIndex, float, float]:
        t = time.perf_counter()
        winner, index = fn()
        rate = len(rows) / (time.perf_counter() - t)
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return winner, index, rate, peak / max(len(rows), 1)

    winner, index, index_rate, ours_bytes = measure(lambda: run(False))
    ref_winner, _, ref_rate, ref_bytes = measure(lambda: run(True))
    removed = exact | {indexed[k] for k in np.flatnonzero(winner != np.arange(len(winner))).tolist()}
    ref_removed = exact | {indexed[k] for k in np.flatnonzero(ref_winner != np.arange(len(ref_winner))).tolist()}

    tp = len(removed & truth)
    ref_tp = len(ref_removed & truth)
    print(json.dumps({
        "speedup": round(ours / plain, 2),
        "recall": round(tp / len(truth), 4) if truth else 1.0,
        "precision": round(tp / len(removed), 4) if removed else 1.0,
        "same_decisions": bool((winner == ref_winner).all()),
        "index_bytes_per_record": round(ours_bytes), "index_disk_bytes_per_record": index.row_bytes,
        "index_per_s": round(index_rate),
        "datasketch_bytes_per_record": round(ref_bytes), "datasketch_per_s": round(ref_rate),
        "datasketch_recall": round(ref_tp / len(truth), 4) if truth else 1.0,
        "datasketch_precision": round(ref_tp / len(ref_removed), 4) if ref_removed else 1.0,
        "ratio_bytes": round(ours_bytes / ref_bytes, 3), "ratio_speed": round(index_rate / ref_rate, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "docs": len(docs), "true_duplicates": len(truth), "removed": len(removed),
        "signatures_per_s": round(ours), "plain_per_s": round(plain),
        "bands_rows": [index.bands, index.rows],
    }))


if __name__ == "__main__":
    main()
