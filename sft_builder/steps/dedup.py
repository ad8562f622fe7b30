"""Exact and near-duplicate removal across all sources, first seen wins (sources arrive in priority order).

Exact dedup keys on a digest of the normalised turns. Near dedup is MinHash + LSH: signatures are computed
for a batch of documents at once in numpy (one xxhash per word, word n-grams combined arithmetically,
permutations as a multiply-shift family over a whole matrix), fed to datasketch's `MinHashLSH` for the
candidate search, and each candidate is confirmed by the signatures' agreement, so the index keeps
signatures (a few hundred bytes per document) and never texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from crystalmix.core.config import SEED, at_least, between, spec
from crystalmix.core.records import Conversation
from sft_builder.sources.base import Rejected
from sft_builder.steps.base import Drop, FilterStep, Item, reject
from sft_builder.steps.text import content_text, ngram_hashes, normalise, token_hashes


@dataclass(frozen=True, slots=True)
class ExactDedupConfig:
    enabled: bool = True
    include_system: bool = False


@dataclass(frozen=True, slots=True)
class NearDedupConfig:
    """`threshold`: the Jaccard similarity of word `shingle_size`-grams that makes a duplicate."""

    enabled: bool = True
    threshold: float = field(default=0.8, metadata=spec(between(0, 1, lo_open=True)))
    shingle_size: int = field(default=5, metadata=spec(at_least(1)))
    num_perm: int = field(default=128, metadata=spec(between(2, 8192)))
    bands: int | None = field(default=None, metadata=spec(at_least(1)))
    rows: int | None = field(default=None, metadata=spec(at_least(1)))
    include_system: bool = False
    seed: int = field(default=1, metadata=spec(SEED))
    batch_size: int = field(default=256, metadata=spec(at_least(1)))
    sketch_k: int = field(default=256, metadata=spec(at_least(0)))  # bottom-k sketch beside the signature
    # to confirm candidates (0: signature only)

    def problems(self) -> Iterator[tuple[str, str]]:
        if (self.bands is None) != (self.rows is None):
            yield "bands", "give bands and rows together"
        elif self.bands is not None and self.bands * (self.rows or 0) > self.num_perm:
            yield "bands", f"bands * rows must be <= num_perm ({self.num_perm})"


# -- exact ------------------------------------------------------------------------------------------------
def exact_key(conv: Conversation, include_system: bool = False) -> bytes:
    """16-byte digest of the roles and normalised contents."""
    msgs = conv.messages if include_system else conv.turns
    blob = "\x1e".join(f"{m.role}\x1f{normalise(m.content)}" for m in msgs)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).digest()


class ExactDedup(FilterStep):
    """Drop reason ``duplicate``; `duplicate_of` is the id of the first conversation with the same content."""

    name = "exact_dedup"

    def __init__(self, cfg: ExactDedupConfig, skip_sources: Iterable[str] = ()) -> None:
        super().__init__()
        self.cfg = cfg
        self.skip = frozenset(skip_sources)
        self.seen: dict[bytes, str] = {}

    def apply(self, conv: Conversation) -> Conversation | Drop:
        if conv.source in self.skip:
            return conv
        key = exact_key(conv, self.cfg.include_system)
        first = self.seen.get(key)
        if first is not None:
            return Drop("duplicate", "same normalised content", duplicate_of=first)
        self.seen[key] = conv.id
        return conv


# -- MinHash signatures -----------------------------------------------------------------------------------
class MinHasher:
    """Vectorised MinHash over word n-grams: `signatures(texts)` is a ``(len(texts), num_perm)`` uint32 array.

    Permutation k maps a 64-bit shingle hash s to the top 32 bits of ``a_k * s + b_k (mod 2**64)`` (a_k odd),
    the multiply-shift universal family. Taking the top bits is monotone, so the minimum is taken on the
    64-bit values and shifted once per document.
    """

    EMPTY = np.uint32(0xFFFFFFFF)

    def __init__(
        self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1, chunk: int = 16_384
    ) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.a = (rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)
        self.chunk = chunk  # shingles per matrix pass: bounds memory at num_perm * chunk * 8 bytes

    def shingles(self, text: str) -> np.ndarray:
        return np.unique(ngram_hashes(token_hashes(text), self.shingle_size))

    def signatures(self, texts: list[str]) -> np.ndarray:
        return self.sign(texts, 0)[0]

    def sign(self, texts: list[str], sketch_k: int) -> tuple[np.ndarray, np.ndarray]:
        """MinHash signatures and bottom-k sketches (the k smallest shingle hashes, top 32 bits).

        The shingles are sorted anyway (unique), so the sketch costs nothing to compute; it gives a second,
        nearly independent Jaccard estimate for confirming LSH candidates near the threshold.
        """
        out = np.full((len(texts), self.num_perm), self.EMPTY, dtype=np.uint32)
        sketches = np.full((len(texts), sketch_k), self.EMPTY, dtype=np.uint32)
        pending: list[tuple[int, np.ndarray]] = []
        size = 0
        for i, text in enumerate(texts):
            sh = self.shingles(text)
            if not len(sh):
                continue
            if sketch_k:
                low = (sh[:sketch_k] >> np.uint64(32)).astype(np.uint32)
                sketches[i, : len(low)] = low
            pending.append((i, sh))
            size += len(sh)
            if size >= self.chunk:
                self._fill(out, pending)
                pending, size = [], 0
        if pending:
            self._fill(out, pending)
        return out, sketches

    def _fill(self, out: np.ndarray, pending: list[tuple[int, np.ndarray]]) -> None:
        rows = np.fromiter((i for i, _ in pending), dtype=np.int64, count=len(pending))
        lengths = np.fromiter((len(s) for _, s in pending), dtype=np.int64, count=len(pending))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        allsh = np.concatenate([s for _, s in pending])
        mat = np.multiply.outer(self.a, allsh)
        mat += self.b[:, None]
        mins = np.minimum.reduceat(mat, starts, axis=1)  # (num_perm, docs)
        out[rows] = (mins >> np.uint64(32)).T.astype(np.uint32)


# -- LSH parameters ----------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def optimal_params(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """Bands and rows minimising the weighted false positive area below and false negative area above it.

    P(candidate | J) = 1 - (1 - J**r)**b; integrated numerically over J.
    """
    best, best_err = (1, num_perm), float("inf")
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)
            fn = np.trapezoid((1 - hi**r) ** b, hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (b, r), err
    return best


class NearIndex:
    """MinHashLSH for candidates plus the stored signatures (and bottom-k sketches) to confirm them.

    A candidate is confirmed when the pooled Jaccard estimate of the signature agreement and the bottom-k
    sketch reaches the threshold; pooling roughly halves the estimate's variance near the threshold.
    The first inserted wins. Every document is inserted (also duplicates), so a later document matching
    only a removed one is still caught; `rep` maps each to the kept document it stands for, which is
    what `duplicate_of` names.
    """

    def __init__(
        self,
        num_perm: int,
        threshold: float,
        bands: int | None = None,
        rows: int | None = None,
        sketch_k: int = 0,
    ) -> None:
        from datasketch import MinHashLSH

        if bands is None or rows is None:
            # LSH only proposes candidates; the signatures confirm them, so lean towards recall.
            bands, rows = optimal_params(max(threshold - 0.1, 0.05), num_perm)
        self.bands, self.rows = bands, rows
        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
        self.sigs = np.empty((1024, num_perm), dtype=np.uint32)
        self.sketches = np.empty((1024, sketch_k), dtype=np.uint32)
        self.ids: list[str] = []
        self.rep: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, doc_id: str, sig: np.ndarray, sketch: np.ndarray | None = None) -> str | None:
        """Insert a signature; return the id of the kept document it duplicates, or None if it is new."""
        from datasketch import LeanMinHash

        # our own 32-bit signatures; the scheme label only stops an index from mixing kinds of signature
        mh = LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")
        best, best_sim = -1, -1.0
        cands = self.lsh.query(mh)
        if cands:
            keys = np.fromiter(sorted(cands), dtype=np.int64, count=len(cands))
            sims = (self.sigs[keys] == sig).mean(axis=1)
            if sketch is not None and self.sketches.shape[1]:
                sims = np.array([self._pooled(s, sketch, self.sketches[k]) for s, k in zip(sims, keys, strict=True)])
            j = int(np.argmax(sims))  # ties: the earliest, since keys are sorted
            best, best_sim = int(keys[j]), float(sims[j])
        key = len(self.ids)
        if key == len(self.sigs):
            self.sigs = np.concatenate([self.sigs, np.empty_like(self.sigs)])
            self.sketches = np.concatenate([self.sketches, np.empty_like(self.sketches)])
        self.sigs[key] = sig
        if sketch is not None and self.sketches.shape[1]:
            self.sketches[key] = sketch
        self.lsh.insert(key, mh, check_duplication=False)
        self.ids.append(doc_id)
        dup = best_sim >= self.threshold
        self.rep.append(self.rep[best] if dup else key)
        return self.ids[self.rep[best]] if dup else None

    def _pooled(self, agree: float, a: np.ndarray, b: np.ndarray) -> float:
        """Signature agreement pooled with the bottom-k estimate |U_k ∩ A ∩ B| / |U_k|, weighted by sizes."""
        a = a[a != MinHasher.EMPTY]
        b = b[b != MinHasher.EMPTY]
        union = np.union1d(a, b)[: self.sketches.shape[1]]
        if not len(union):
            return agree
        both = np.intersect1d(a, b, assume_unique=True)
        est = np.count_nonzero(both <= union[-1]) / len(union)
        n = len(self.sigs[0])
        return (agree * n + est * len(union)) / (n + len(union))


class NearDedup:
    """Streaming near-dedup step: buffers a batch, signs it at once, then decides in arrival order."""

    name = "near_dedup"

    def __init__(self, cfg: NearDedupConfig, skip_sources: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.skip = frozenset(skip_sources)
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_size, cfg.seed)
        self.index = NearIndex(cfg.num_perm, cfg.threshold, cfg.bands, cfg.rows, cfg.sketch_k)
        self.changes: dict[str, int] = {"too_short_to_compare": 0}

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        batch: list[Item] = []
        for item in items:
            batch.append(item)
            if len(batch) >= self.cfg.batch_size:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def _flush(self, batch: list[Item]) -> Iterator[Item]:
        todo = [
            i for i, it in enumerate(batch) if isinstance(it, Conversation) and it.source not in self.skip
        ]
        texts = [content_text(batch[i], include_system=self.cfg.include_system) for i in todo]  # type: ignore[arg-type]
        sigs, sketches = self.hasher.sign(texts, self.cfg.sketch_k)
        sig_of = {i: (sigs[n], sketches[n]) for n, i in enumerate(todo)}
        for i, item in enumerate(batch):
            if isinstance(item, Rejected) or i not in sig_of:
                yield item
                continue
            sig, sketch = sig_of[i]
            if sig[0] == MinHasher.EMPTY and (sig == MinHasher.EMPTY).all():
                self.changes["too_short_to_compare"] += 1  # fewer words than a shingle: exact dedup's job
                yield item
                continue
            dup = self.index.add(item.id, sig, sketch)
            if dup is None:
                yield item
            else:
                yield reject(
                    item,
                    self.name,
                    Drop("near_duplicate", f"Jaccard >= {self.cfg.threshold}", duplicate_of=dup),
                )
