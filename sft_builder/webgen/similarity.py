"""ROUGE-L near-duplicate pool for the self-instruct loop: rouge_score's exact scores, computed in C.

Alpaca scored every new instruction against the whole pool with `rouge_score` in pure Python (a 16-process
pool to keep up). Here each instruction's rouge tokens are mapped to integer ids and stored as one character
per token, so rapidfuzz's bit-parallel LCS (`process.cdist`) scores a batch against the pool at once. The
F-measure is then computed with rouge_score's own float operations, so keep/reject decisions are identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SURROGATES = 0xD800
_MAX_TOKENS = 0x10FFFF - 0x800
_CHUNK = 256  # candidates scored per cdist call; bounds memory to _CHUNK x pool ints


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokens (no stemming): lowercase, runs of [a-z0-9]; everything else separates."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l_f(lcs: np.ndarray, len_new: np.ndarray, len_pool: np.ndarray) -> np.ndarray:
    """ROUGE-L F-measure with rouge_score's float operations (target = new, prediction = pool item)."""
    lcs = lcs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / len_pool
        recall = lcs / len_new
        f = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, f, 0.0)


@dataclass(frozen=True, slots=True)
class Similarity:
    """How close one candidate came to the pool: the decision input and the metadata kept with it."""

    max_score: float
    mean_score: float
    most_similar: tuple[tuple[str, float], ...]  # best first

    def to_meta(self) -> dict[str, object]:
        return {
            "max_similarity": self.max_score,
            "avg_similarity": self.mean_score,
            "most_similar": [{"instruction": t, "score": s} for t, s in self.most_similar],
        }


class RougePool:
    """Instructions kept so far; decides whether new ones are too similar (ROUGE-L F > threshold, strict)."""

    def __init__(self, threshold: float = 0.7, top_k: int = 10, workers: int = 1) -> None:
        self.threshold = threshold
        self.top_k = top_k
        self.workers = workers
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._codes: list[str] = []
        self._lengths = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._texts)

    def _encode(self, text: str) -> str:
        """One character per rouge token (ids skip the surrogate block, which is not valid text)."""
        chars = []
        for tok in rouge_tokens(text):
            tid = self._vocab.get(tok)
            if tid is None:
                tid = len(self._vocab)
                if tid >= _MAX_TOKENS:
                    raise OverflowError("more distinct rouge tokens than code points")
                self._vocab[tok] = tid
            chars.append(chr(tid + 1 if tid + 1 < _SURROGATES else tid + 1 + 0x800))
        return "".join(chars)

    def extend(self, instructions: Sequence[str]) -> None:
        """Add instructions unconditionally (the seeds, or what an earlier run kept)."""
        codes = [self._encode(t) for t in instructions]
        self._texts.extend(instructions)
        self._codes.extend(codes)
        self._lengths = np.concatenate([self._lengths, np.array([len(c) for c in codes], dtype=np.float64)])

    def check_and_add(
        self, instructions: Sequence[str], limit: int | None = None
    ) -> list[tuple[bool, Similarity]]:
        """Decide each candidate in order against the pool and the candidates kept before it; add the kept.

        Stops after `limit` keeps: later candidates are not decided and not returned.
        """
        results: list[tuple[bool, Similarity]] = []
        for start in range(0, len(instructions), _CHUNK):
            remaining = None if limit is None else limit - sum(k for k, _ in results)
            if remaining is not None and remaining <= 0:
                break
            results += self._check_chunk(instructions[start : start + _CHUNK], remaining)
        return results

    def _check_chunk(self, texts: Sequence[str], limit: int | None) -> list[tuple[bool, Similarity]]:
        codes = [self._encode(t) for t in texts]
        lengths = np.array([len(c) for c in codes], dtype=np.float64)
        n_pool = len(self._codes)
        if n_pool:
            lcs = process.cdist(
                codes, self._codes, scorer=LCSseq.similarity, dtype=np.int32, workers=self.workers
            )
            vs_pool = rouge_l_f(lcs, lengths[:, None], self._lengths[None, :])
        else:
            vs_pool = np.zeros((len(codes), 0))
        lcs_in = process.cdist(codes, codes, scorer=LCSseq.similarity, dtype=np.int32, workers=self.workers)
        vs_batch = rouge_l_f(lcs_in, lengths[:, None], lengths[None, :])

        # Row statistics over the pool are vectorised; only the few in-batch keeps are added per candidate.
        k = min(self.top_k, n_pool)
        pool_max = vs_pool.max(axis=1) if n_pool else np.zeros(len(codes))
        pool_sum = vs_pool.sum(axis=1)
        kth = np.partition(vs_pool, n_pool - k, axis=1)[:, n_pool - k] if k else np.zeros(len(codes))
        out: list[tuple[bool, Similarity]] = []
        kept: list[int] = []
        for i in range(len(codes)):
            if limit is not None and len(kept) >= limit:
                break
            row = vs_pool[i]
            # The pool's top k, ties broken by pool order: everything above the k-th score, then equals.
            above = np.flatnonzero(row > kth[i])
            equal = np.flatnonzero(row == kth[i])[: k - len(above)] if k else above[:0]
            top = [(float(row[j]), int(j), self._texts[j]) for j in np.concatenate([above, equal])]
            intra = vs_batch[i, kept]
            top += [(float(sc), n_pool + n, texts[kept[n]]) for n, sc in enumerate(intra)]
            top.sort(key=lambda t: (-t[0], t[1]))
            n_seen = n_pool + len(kept)
            sim = Similarity(
                max_score=max(float(pool_max[i]), float(intra.max(initial=0.0))),
                mean_score=float((pool_sum[i] + intra.sum()) / n_seen) if n_seen else 0.0,
                most_similar=tuple((t, sc) for sc, _, t in top[: self.top_k]),
            )
            keep = sim.max_score <= self.threshold
            if keep:
                kept.append(i)
            out.append((keep, sim))
        self._texts.extend(texts[i] for i in kept)
        self._codes.extend(codes[i] for i in kept)
        self._lengths = np.concatenate([self._lengths, lengths[kept]])
        return out
