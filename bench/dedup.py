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

Peer column (`peer_*`, skipped with a note when rensa is not importable): the whole near-dedup, texts in,
removals out, as crystalmix runs it (MinHasher signatures and sketches a batch at a time into NearIndex, then
`resolve`) against rensa 0.5's full-set R-MinHash (`RMinHash.digest_matrix_from_token_sets`, its fastest API
that hashes every shingle) with datasketch's `MinHashLSH` (same threshold and num_perm, its own bands): walking
the documents earliest first, a document is removed when a kept candidate's signature agreement reaches the
threshold, else inserted. Differences that rensa and datasketch impose: rensa's signatures are its own
(R-MinHash, FxHash of the shingle strings), not datasketch-compatible; datasketch's index picks its bands for
the threshold itself (ours lean towards recall and confirm with a bottom-k sketch too). Both sides get the same
texts after the same exact-duplicate pass (untimed); rensa gets 5-gram strings of `text.lower().split()` built
in Python (rensa has no shingler), which on this corpus (lower-case letters and spaces) are the same shingles as
crystalmix's byte-regex words. Each side runs in a forked child pinned to one CPU (rensa's Rayon pool at one
thread), in interleaved rounds (ours, peer, ours, peer, ...); speed is the child's CPU time (best of the rounds;
wall time printed too), memory the child's peak RSS above its RSS at the start (VmHWM reset through
/proc/self/clear_refs), the same method for both because rensa's Rust allocations are invisible to tracemalloc.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import pickle
import random
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from procstat import status_kb

from sft_builder.steps.dedup import NO_RANKS, Members, MinHasher, NearDedupConfig, NearIndex, keep_order
from sft_builder.steps.text import normalise

SKETCH_K = 256  # the build's default (NearDedupConfig.sketch_k)
BATCH = NearDedupConfig().batch_size  # documents per signing batch, as the build's near-dedup step signs


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


def ours_near(texts: list[str], threshold: float) -> set[int]:
    """crystalmix's near-dedup from texts: signatures a batch at a time into the compact index, then resolve."""
    hasher = MinHasher(num_perm=128, shingle_size=5, seed=1)
    members = Members()
    rows: list[int] = []  # index row -> text
    with tempfile.TemporaryDirectory() as tmp:
        index = NearIndex(128, threshold, sketch_k=SKETCH_K, folder=tmp)
        for s in range(0, len(texts), BATCH):
            sigs, sketches = hasher.sign(texts[s:s + BATCH], SKETCH_K)
            empty = (sigs == MinHasher.EMPTY).all(axis=1)  # fewer words than a shingle, as NearDedup skips
            index.add_many(sigs[~empty], sketches[~empty])
            for i in (s + np.flatnonzero(~empty)).tolist():
                members.add((0, NO_RANKS, 0, f"{i:09d}"))
                rows.append(i)
        winner = index.resolve(keep_order(members))
        index.close()
    return {rows[k] for k in np.flatnonzero(winner != np.arange(len(winner))).tolist()}


def peer_near(texts: list[str], threshold: float) -> set[int]:
    """rensa's R-MinHash signatures with datasketch's MinHashLSH, earliest first, candidates confirmed by the
    signatures' agreement (the build's rule, as `NearIndex.resolve_datasketch` applies it)."""
    from datasketch import LeanMinHash, MinHashLSH
    from rensa import RMinHash

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    kept: list[np.ndarray] = []  # LSH key -> signature
    removed: set[int] = set()
    for s in range(0, len(texts), BATCH):
        sets = []
        for text in texts[s:s + BATCH]:
            w = text.lower().split()
            sets.append(list(map(" ".join, zip(*(w[k:] for k in range(5)), strict=False))))
        rows = RMinHash.digest_matrix_from_token_sets(sets, 128, 1).to_rows()
        for i, (row, shingles) in enumerate(zip(rows, sets, strict=True), start=s):
            if not shingles:
                continue
            mh = LeanMinHash(seed=1, hashvalues=row, scheme="affine32")
            sig = mh.hashvalues
            cands = lsh.query(mh)
            if any(float((kept[k] == sig).mean()) >= threshold for k in cands):
                removed.add(i)
                continue
            lsh.insert(len(kept), mh, check_duplication=False)
            kept.append(sig)
    return removed


def _in_child(fn: Callable[[], set[int]], cpu: int) -> tuple[float, float, int, set[int]]:
    """Run `fn` in a forked child pinned to `cpu`: (CPU seconds, wall seconds, peak RSS growth in bytes, result)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, send, leave without running the parent's cleanup
        code = 0
        try:
            os.close(read)
            os.sched_setaffinity(0, {cpu})
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory the parent freed must not hide the child's
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS
            base = status_kb("VmRSS:")
            c, t = time.process_time(), time.perf_counter()
            out = fn()
            cpu_s, wall = time.process_time() - c, time.perf_counter() - t
            peak = (status_kb("VmHWM:") - base) * 1024
            with os.fdopen(write, "wb") as fh:
                pickle.dump((cpu_s, wall, peak, out), fh)
        except BaseException:
            code = 1
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status or not data:
        raise SystemExit("bench child failed")
    return pickle.loads(data)


def peer_column(texts: list[str], indexed: list[int], exact: set[int], truth: set[int], threshold: float,
                rounds: int) -> dict[str, Any]:
    """crystalmix against rensa + datasketch's LSH, side by side in interleaved rounds (see the docstring)."""
    try:
        import rensa  # noqa: F401
    except ImportError:
        return {"peer": "skipped: rensa is not importable (pip install crystalmix[bench])"}
    cpu = min(os.sched_getaffinity(0))
    sides: dict[str, list[tuple[float, float, int, set[int]]]] = {"ours": [], "peer": []}
    for _ in range(rounds):
        sides["ours"].append(_in_child(lambda: ours_near(texts, threshold), cpu))
        sides["peer"].append(_in_child(lambda: peer_near(texts, threshold), cpu))
    out: dict[str, Any] = {"peer": "rensa R-MinHash + datasketch MinHashLSH", "peer_rounds": rounds}
    for name, runs in sides.items():
        removed = exact | {indexed[k] for k in runs[0][3]}
        tp = len(removed & truth)
        out[f"{name}_near_per_s_cpu"] = round(len(texts) / min(r[0] for r in runs))
        out[f"{name}_near_per_s_wall"] = round(len(texts) / min(r[1] for r in runs))
        out[f"{name}_near_peak_rss_mb"] = round(max(r[2] for r in runs) / 2**20, 1)
        out[f"{name}_near_recall"] = round(tp / len(truth), 4) if truth else 1.0
        out[f"{name}_near_precision"] = round(tp / len(removed), 4) if removed else 1.0
        out[f"{name}_same_every_round"] = all(r[3] == runs[0][3] for r in runs)
    out["peer_ratio_speed"] = round(out["ours_near_per_s_cpu"] / out["peer_near_per_s_cpu"], 2)
    out["peer_ratio_speed_wall"] = round(out["ours_near_per_s_wall"] / out["peer_near_per_s_wall"], 2)
    out["peer_ratio_rss"] = round(out["ours_near_peak_rss_mb"] / max(out["peer_near_peak_rss_mb"], 0.1), 3)
    return out


def index_vs_datasketch(sigs: np.ndarray, sketches: np.ndarray, rows: np.ndarray, order: np.ndarray,
                        threshold: float) -> dict[str, Any]:
    """The compact index and datasketch's MinHashLSH on the same signatures: winners, speed, traced bytes."""

    def run(reference: bool) -> tuple[np.ndarray, NearIndex]:
        index = NearIndex(128, threshold, sketch_k=SKETCH_K)
        for s in range(0, len(rows), 512):
            index.add_many(sigs[rows[s:s + 512]], sketches[rows[s:s + 512]])
        winner = index.resolve_datasketch(order) if reference else index.resolve(order)
        index.close()
        return winner, index

    def measure(reference: bool) -> tuple[np.ndarray, NearIndex, float, float]:
        t = time.perf_counter()
        winner, index = run(reference)
        rate = len(rows) / (time.perf_counter() - t)
        tracemalloc.start()
        run(reference)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return winner, index, rate, peak / max(len(rows), 1)

    winner, index, rate, nbytes = measure(False)
    ref_winner, _, ref_rate, ref_bytes = measure(True)
    return {"winner": winner, "ref_winner": ref_winner, "rate": rate, "bytes": nbytes, "ref_rate": ref_rate,
            "ref_bytes": ref_bytes, "bands_rows": [index.bands, index.rows], "row_bytes": index.row_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--plain-sample", type=int, default=1_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the peer comparison")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"  # before rensa is imported: its batch APIs run on one core

    docs, family = make_corpus(args.docs, args.seed)
    truth = ground_truth(docs, family, args.threshold)

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
    # first, while this process is small: children fork from it
    peer = peer_column([docs[i] for i in indexed], indexed, exact, truth, args.threshold, args.rounds)

    hasher = MinHasher(num_perm=128, shingle_size=5, seed=1)
    t = time.perf_counter()
    parts = [hasher.sign(docs[i:i + 512], SKETCH_K) for i in range(0, len(docs), 512)]
    sigs = np.vstack([p[0] for p in parts])
    sketches = np.vstack([p[1] for p in parts])
    del parts
    ours = len(docs) / (time.perf_counter() - t)
    plain = plain_rate(docs, args.plain_sample)

    res = index_vs_datasketch(sigs, sketches, np.asarray(indexed), order, args.threshold)
    winner, ref_winner = res["winner"], res["ref_winner"]
    removed = exact | {indexed[k] for k in np.flatnonzero(winner != np.arange(len(winner))).tolist()}
    ref_removed = exact | {indexed[k] for k in np.flatnonzero(ref_winner != np.arange(len(ref_winner))).tolist()}
    tp = len(removed & truth)
    ref_tp = len(ref_removed & truth)
    print(json.dumps({
        "speedup": round(ours / plain, 2),
        "recall": round(tp / len(truth), 4) if truth else 1.0,
        "precision": round(tp / len(removed), 4) if removed else 1.0,
        "same_decisions": bool((winner == ref_winner).all()),
        "index_bytes_per_record": round(res["bytes"]), "index_disk_bytes_per_record": res["row_bytes"],
        "index_per_s": round(res["rate"]),
        "datasketch_bytes_per_record": round(res["ref_bytes"]), "datasketch_per_s": round(res["ref_rate"]),
        "datasketch_recall": round(ref_tp / len(truth), 4) if truth else 1.0,
        "datasketch_precision": round(ref_tp / len(ref_removed), 4) if ref_removed else 1.0,
        "ratio_bytes": round(res["bytes"] / res["ref_bytes"], 3),
        "ratio_speed": round(res["rate"] / res["ref_rate"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "docs": len(docs), "true_duplicates": len(truth), "removed": len(removed),
        "signatures_per_s": round(ours), "plain_per_s": round(plain),
        "bands_rows": res["bands_rows"], **peer,
    }))


if __name__ == "__main__":
    main()
