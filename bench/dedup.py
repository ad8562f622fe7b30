"""Near-dedup benchmark: vectorised MinHash signatures against the plain datasketch loop, and the quality of
the removals against exact Jaccard ground truth. Prints one JSON line.

Corpus: N generated documents of 100-3,000 characters; some are exact copies of an earlier document, some
near copies with 1-10% of their words replaced. Ground truth: the build's rule with exact 5-gram Jaccard
inside each family (the original and its copies): earliest first, a document goes when it reaches the
threshold with a kept member of its family.
Unrelated documents share next to no 5-grams (random words from a 20,000-word vocabulary).
The plain loop (`MinHash(128)`, one `update` per 5-gram shingle) is timed on a sample and scaled.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import time

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
    index = NearIndex(128, args.threshold, sketch_k=SKETCH_K)
    members = Members()
    seen: set[int] = set()
    removed = set()
    indexed: list[int] = []
    t = time.perf_counter()
    for i, d in enumerate(docs):
        key = hash(normalise(d))
        if key in seen:
            removed.add(i)
            continue
        seen.add(key)
        index.add(sigs[i], sketches[i])
        members.add((0, NO_RANKS, 0, f"{i:09d}"))
        indexed.append(i)
    winner = index.resolve(keep_order(members))
    removed.update(indexed[k] for k in np.flatnonzero(winner != np.arange(len(winner))).tolist())
    index_rate = len(docs) / (time.perf_counter() - t)

    tp = len(removed & truth)
    print(json.dumps({
        "speedup": round(ours / plain, 2),
        "recall": round(tp / len(truth), 4) if truth else 1.0,
        "precision": round(tp / len(removed), 4) if removed else 1.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "docs": len(docs), "true_duplicates": len(truth), "removed": len(removed),
        "signatures_per_s": round(ours), "plain_per_s": round(plain), "index_per_s": round(index_rate),
        "bands_rows": [index.bands, index.rows],
        "index_arrays_mb": round((index.sigs.nbytes + index.sketches.nbytes) / 2**20, 1),
    }))


if __name__ == "__main__":
    main()
