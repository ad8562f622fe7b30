"""Exact and near-duplicate removal across all sources, first seen wins (sources arrive in priority order).

Exact dedup keys on a digest of the normalised turns. Near dedup is MinHash + LSH: signatures are computed
for a batch of documents at once in numpy (one xxhash per word, word n-grams combined arithmetically,
permutations as a multiply-shift family over a whole matrix), banded LSH (datasketch's scheme, buckets in
numpy arrays) for the candidate search, and each candidate is confirmed by the signatures' agreement, so
the index keeps signatures (a few hundred bytes per document) and never texts. Both indexes hold their
state in numpy arrays and byte buffers, with no Python object per document: their memory is their data.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

from sft_builder.filters.base import Drop, FilterStep, Item, reject
from sft_builder.filters.text import content_text, ngram_hashes, normalise, token_hashes
from sft_builder.schema import Conversation
from sft_builder.sources.base import Rejected


@dataclass(frozen=True, slots=True)
class ExactDedupConfig:
    enabled: bool = True
    include_system: bool = False


@dataclass(frozen=True, slots=True)
class NearDedupConfig:
    """`threshold`: the Jaccard similarity of word `shingle_size`-grams that makes a duplicate."""

    enabled: bool = True
    threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 128
    bands: int | None = None
    rows: int | None = None
    include_system: bool = False
    seed: int = 1
    batch_size: int = 256
    sketch_k: int = 256  # bottom-k sketch kept beside the signature to confirm candidates (0: signature only)


# -- compact storage ---------------------------------------------------------------------------------------
class _Ids:
    """Append-only strings as one byte buffer and end offsets (about len + 8 bytes each, no objects)."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, s: str) -> int:
        self._blob += s.encode("utf-8")
        self._ends.append(len(self._blob))
        return len(self._ends) - 1

    def __getitem__(self, i: int) -> str:
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode("utf-8")


class _Rows:
    """Append-only rows of a uint32 matrix in fixed-size blocks: no copy (and no doubling peak) as it grows."""

    BLOCK = 4096

    def __init__(self, width: int) -> None:
        self.width = width
        self.blocks: list[np.ndarray] = []
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n % self.BLOCK == 0:
            self.blocks.append(np.empty((self.BLOCK, self.width), dtype=np.uint32))
        self.blocks[-1][self.n % self.BLOCK] = row
        self.n += 1

    def take(self, keys: np.ndarray) -> np.ndarray:
        return np.stack([self.blocks[k // self.BLOCK][k % self.BLOCK] for k in keys.tolist()])

    def __getitem__(self, k: int) -> np.ndarray:
        return self.blocks[k // self.BLOCK][k % self.BLOCK]

    @property
    def nbytes(self) -> int:
        return self.n * self.width * 4


class _Multimap:
    """uint64 key -> int32 values (in insertion order): sorted numpy arrays plus a small dict of recent
    inserts, merged into the arrays every `MERGE` entries. About 12 bytes an entry, against a few hundred for
    a Python dict of sets."""

    MERGE = 1 << 15

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.vals = np.empty(0, dtype=np.int32)
        self.pending: dict[int, list[int]] = {}
        self.n_pending = 0

    def get(self, keys: list[int]) -> list[int]:
        """All values stored under any of `keys` (unsorted, may repeat)."""
        out: list[int] = []
        if len(self.keys):
            q = np.array(keys, dtype=np.uint64)
            lo = np.searchsorted(self.keys, q, "left")
            hi = np.searchsorted(self.keys, q, "right")
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
                if b > a:
                    out.extend(self.vals[a:b].tolist())
        for k in keys:
            hit = self.pending.get(k)
            if hit is not None:
                out.extend(hit)
        return out

    def add(self, keys: list[int], value: int) -> None:
        for k in keys:
            self.pending.setdefault(k, []).append(value)
        self.n_pending += len(keys)
        if self.n_pending >= self.MERGE:
            self._merge()

    def _merge(self) -> None:
        items = sorted(self.pending.items())
        pk = np.fromiter((k for k, v in items for _ in v), dtype=np.uint64, count=self.n_pending)
        pv = np.fromiter((x for _, v in items for x in v), dtype=np.int32, count=self.n_pending)
        at = np.searchsorted(self.keys, pk, "right")  # after equal keys: values stay in insertion order
        self.keys = np.insert(self.keys, at, pk)
        self.vals = np.insert(self.vals, at, pv)
        self.pending, self.n_pending = {}, 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.vals.nbytes


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
        # the digests seen: bucketed by their first 8 bytes, compared in full (16 bytes, 4 uint32s)
        self.buckets = _Multimap()
        self.digests = _Rows(4)
        self.ids = _Ids()

    def __len__(self) -> int:
        return len(self.ids)

    def apply(self, conv: Conversation) -> Conversation | Drop:
        if conv.source in self.skip:
            return conv
        key = exact_key(conv, self.cfg.include_system)
        digest = np.frombuffer(key, dtype="<u4")
        bucket = int.from_bytes(key[:8], "little")
        for k in self.buckets.get([bucket]):
            if (self.digests[k] == digest).all():
                return Drop("duplicate", "same normalised content", duplicate_of=self.ids[k])
        self.buckets.add([bucket], self.ids.append(conv.id))
        self.digests.append(digest)
        return conv

    @property
    def nbytes(self) -> int:
        ids = len(self.ids._blob) + self.ids._ends.itemsize * len(self.ids._ends)
        return self.buckets.nbytes + self.digests.nbytes + ids


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
        self._buf = np.empty((num_perm, 0), dtype=np.uint64)

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
        if self._buf.shape[1] < len(allsh):  # one matrix, reused: no 16 MB allocation per chunk
            self._buf = np.empty((self.num_perm, len(allsh) + len(allsh) // 4), dtype=np.uint64)
        mat = self._buf[:, : len(allsh)]
        np.multiply.outer(self.a, allsh, out=mat)
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
    """Banded LSH for candidates plus the stored signatures (and bottom-k sketches) to confirm them.

    Band ``i`` of a signature (rows ``i*r .. i*r+r-1``) is hashed to 64 bits (xxh3, seeded with the band
    number); two documents are candidates when any band hash agrees, as in datasketch's `MinHashLSH` (a hash
    collision only adds a candidate, which the confirmation then judges like any other). The buckets are
    numpy arrays (`_Multimap`), the signatures and sketches fixed-size blocks, the ids one byte buffer: a
    few bytes an entry and no Python object per document.

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
        if bands is None or rows is None:
            # LSH only proposes candidates; the signatures confirm them, so lean towards recall.
            bands, rows = optimal_params(max(threshold - 0.1, 0.05), num_perm)
        if bands * rows > num_perm:
            raise ValueError(f"bands * rows = {bands * rows} exceeds num_perm = {num_perm}")
        self.bands, self.rows = bands, rows
        self.num_perm = num_perm
        self.threshold = threshold
        self.buckets = _Multimap()
        self.sigs = _Rows(num_perm)
        self.sketches = _Rows(sketch_k)
        self.ids = _Ids()
        self.rep = array("i")

    def __len__(self) -> int:
        return len(self.ids)

    def band_keys(self, sig: np.ndarray) -> list[int]:
        raw = np.ascontiguousarray(sig, dtype="<u4").tobytes()
        w = 4 * self.rows
        return [xxhash.xxh3_64_intdigest(raw[i * w : (i + 1) * w], seed=i) for i in range(self.bands)]

    def add(self, doc_id: str, sig: np.ndarray, sketch: np.ndarray | None = None) -> str | None:
        """Insert a signature; return the id of the kept document it duplicates, or None if it is new."""
        bkeys = self.band_keys(sig)
        best, best_sim = -1, -1.0
        cands = self.buckets.get(bkeys)
        if cands:
            keys = np.unique(np.array(cands, dtype=np.int64))
            sims = (self.sigs.take(keys) == sig).mean(axis=1)
            if sketch is not None and self.sketches.width:
                pairs = zip(sims.tolist(), keys.tolist(), strict=True)
                sims = np.array([self._pooled(s, sketch, self.sketches[k]) for s, k in pairs])
            j = int(np.argmax(sims))  # ties: the earliest, since keys are sorted
            best, best_sim = int(keys[j]), float(sims[j])
        key = len(self.ids)
        self.sigs.append(sig)
        if self.sketches.width:
            self.sketches.append(sketch if sketch is not None else np.full(self.sketches.width, MinHasher.EMPTY))
        self.buckets.add(bkeys, key)
        self.ids.append(doc_id)
        dup = best_sim >= self.threshold
        self.rep.append(self.rep[best] if dup else key)
        return self.ids[self.rep[best]] if dup else None

    def _pooled(self, agree: float, a: np.ndarray, b: np.ndarray) -> float:
        """Signature agreement pooled with the bottom-k estimate |U_k ∩ A ∩ B| / |U_k|, weighted by sizes."""
        a = a[a != MinHasher.EMPTY]
        b = b[b != MinHasher.EMPTY]
        union = np.union1d(a, b)[: self.sketches.width]
        if not len(union):
            return agree
        both = np.intersect1d(a, b, assume_unique=True)
        est = np.count_nonzero(both <= union[-1]) / len(union)
        n = self.num_perm
        return (agree * n + est * len(union)) / (n + len(union))

    @property
    def nbytes(self) -> int:
        """Bytes held in the index's arrays (signatures, sketches, buckets, ids, representatives)."""
        ids = len(self.ids._blob) + self.ids._ends.itemsize * len(self.ids._ends)
        return self.sigs.nbytes + self.sketches.nbytes + self.buckets.nbytes + ids + self.rep.itemsize * len(self.rep)


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
