"""Exact and near-duplicate removal across all sources: each cluster of duplicates keeps its best member.

The best member is chosen by one documented order (`KeepOrder`): the source's priority, then the
OpenAssistant ranks of the conversation's answers (``meta["ranks"]``), then the longer assistant content,
then the smaller id. Arrival order never decides, so a step must know a whole cluster before it keeps
anyone: both steps read the stream once while writing it to a temporary spill file and remembering a few
numbers per record (or per cluster), decide, then replay the spill. Rejects from earlier steps pass
straight through.

Exact dedup keys on a digest of the normalised turns. Near dedup is MinHash + LSH: signatures are computed
for a batch of documents at once in numpy (one xxhash per word, word n-grams combined arithmetically,
permutations as a multiply-shift family over a whole matrix; 32-bit values a datasketch `LeanMinHash` carries).
The index keeps 64-bit keys of the LSH bands in RAM (about 110 bytes per document) and the signatures on
disk, never texts; candidates sharing a band are confirmed by the signatures' agreement. Documents are
resolved best first (`NearIndex.resolve`, which decides as datasketch's `MinHashLSH` walked the same way,
kept as `resolve_datasketch`): each is kept unless it matches an already kept, hence better, document.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import os
import pickle
import tempfile
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import xxhash

from crystalmix.core.config import SEED, at_least, between, spec
from crystalmix.core.readers import line_blocks
from crystalmix.core.records import Conversation, Parts, conversation_parts, read_record_lines, restore_conversation
from sft_builder.sources.base import Rejected
from sft_builder.steps.base import Drop, Item, OrderedMap, batches, reject
from sft_builder.steps.text import _BYTE_WORD_RE, content_text, ngram_hashes, normalise, token_hashes


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


# -- which member of a cluster is kept ---------------------------------------------------------------------
RANK_LEVELS = 8  # OpenAssistant ranks compared along the first 8 answers of a conversation
UNRANKED = 0xFF
NO_RANKS = (1 << 64) - 1  # every level unranked: a conversation without ranks
DECIDERS = ("source_priority", "oasst_rank", "assistant_chars", "id")
Key = tuple[int, int, int, str]  # (priority, rank_key, -assistant chars, id): smaller is better


def rank_key(meta: Mapping[str, Any]) -> int:
    """The OpenAssistant ranks of a conversation's answers, packed so that a smaller number is better.

    ``meta["ranks"]`` lists the rank of each assistant message along the conversation (0 is the best reply
    among its siblings; None when the export did not rank it). One byte per answer, first answer in the
    high byte, so comparing the numbers compares the rank lists element by element: two branches of one tree
    are decided by the answer where they part. A missing or unranked answer counts as worse than any rank,
    so a branch cut short (a path ending on an unanswered prompt) loses to the branch that goes on.
    """
    ranks = meta.get("ranks")
    if not isinstance(ranks, (list, tuple)):
        return NO_RANKS
    key = 0
    for level in range(RANK_LEVELS):
        r = ranks[level] if level < len(ranks) else None
        ok = isinstance(r, int) and not isinstance(r, bool) and r >= 0
        key = (key << 8) | (min(int(r), UNRANKED - 1) if ok else UNRANKED)  # type: ignore[arg-type]
    return key


def assistant_chars(conv: Conversation) -> int:
    """The trained text's length: the answers of a conversation, the whole of a document."""
    return sum(len(m.content) for m in conv.messages if m.role in ("assistant", "text"))


class KeepOrder:
    """The order in which members of a duplicate cluster are preferred; `key` is smaller for the better one.

    1. `source_priority`: the source's priority (the manifest's order; lower wins);
    2. `oasst_rank`: the OpenAssistant ranks of the answers (`rank_key`);
    3. `assistant_chars`: more assistant text wins (a full answer over "Hi, how can I help you?");
    4. `id`: the smaller id, a tie-break that does not depend on arrival order.

    Sources missing from `priorities` rank after the given ones, in the order they are first seen.
    """

    def __init__(self, priorities: Mapping[str, int] | None = None) -> None:
        self.priorities = dict(priorities or {})
        self._next = max(self.priorities.values(), default=-1) + 1

    def priority(self, source: str) -> int:
        p = self.priorities.get(source)
        if p is None:
            p = self.priorities[source] = self._next
            self._next += 1
        return p

    def key(self, conv: Conversation) -> Key:
        return self.of(order_fields(conv))

    def of(self, fields: Fields) -> Key:
        """The key of a record from its `order_fields` (worked out where the record was)."""
        return self.priority(fields[0]), fields[1], fields[2], fields[3]


Fields = tuple[str, int, int, str]  # a `Key` with the source in place of its priority


def order_fields(conv: Conversation) -> Fields:
    """What `KeepOrder.key` needs of a record; a pure function of it, so it can be computed in a worker."""
    return conv.source, rank_key(conv.meta), -assistant_chars(conv), conv.id


def decided_by(winner: Key, loser: Key) -> int:
    """Index in `DECIDERS` of the first criterion on which `winner` beats `loser`."""
    return next((i for i, (a, b) in enumerate(zip(winner, loser, strict=True)) if a != b), len(DECIDERS) - 1)


class Members:
    """Each record's key in compact columns (about 30 bytes plus the id's UTF-8), in arrival order."""

    def __init__(self) -> None:
        self.prio = array("q")
        self.rank = array("Q")
        self.neg_chars = array("q")
        self.id_end = array("q")
        self.id_bytes = bytearray()

    def __len__(self) -> int:
        return len(self.prio)

    def add(self, key: Key) -> int:
        self.prio.append(key[0])
        self.rank.append(key[1])
        self.neg_chars.append(key[2])
        self.id_bytes += key[3].encode("utf-8")
        self.id_end.append(len(self.id_bytes))
        return len(self.prio) - 1

    def id(self, i: int) -> str:
        start = self.id_end[i - 1] if i else 0
        return self.id_bytes[start : self.id_end[i]].decode("utf-8")

    def key(self, i: int) -> Key:
        return (self.prio[i], self.rank[i], self.neg_chars[i], self.id(i))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        as_np = lambda a, t: np.frombuffer(a, dtype=t) if len(a) else np.empty(0, t)  # noqa: E731
        return as_np(self.prio, np.int64), as_np(self.rank, np.uint64), as_np(self.neg_chars, np.int64)


def choose(labels: np.ndarray, members: Members) -> np.ndarray:
    """For each record, the index of the member its cluster keeps (`labels`: equal label, same cluster).

    Sorted by (label, priority, rank, -chars) in numpy; only clusters whose two best tie on all three read
    their ids (in Python) for the tie-break.
    """
    n = len(labels)
    if n == 0:
        return np.empty(0, np.int64)
    prio, rank, neg = members.columns()
    order = np.lexsort((neg, rank, prio, labels))
    lab = labels[order]
    first = np.r_[True, lab[1:] != lab[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], n]
    best = order[starts]
    multi = np.flatnonzero(ends - starts > 1)
    b, b2 = best[multi], order[starts[multi] + 1]
    tied = multi[(prio[b] == prio[b2]) & (rank[b] == rank[b2]) & (neg[b] == neg[b2])]
    for j in tied.tolist():
        run = order[starts[j] : ends[j]]
        top = best[j]
        same = run[(prio[run] == prio[top]) & (rank[run] == rank[top]) & (neg[run] == neg[top])]
        best[j] = min(same.tolist(), key=members.id)
    winner = np.empty(n, np.int64)
    winner[order] = best[np.cumsum(first) - 1]
    return winner


def keep_order(members: Members) -> np.ndarray:
    """All records, best first by `KeepOrder` (ids read, in Python, only within runs that tie on the rest)."""
    n = len(members)
    if n == 0:
        return np.empty(0, np.int64)
    prio, rank, neg = members.columns()
    order = np.lexsort((neg, rank, prio))
    p, r, g = prio[order], rank[order], neg[order]
    starts = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (r[1:] != r[:-1]) | (g[1:] != g[:-1])])
    ends = np.r_[starts[1:], n]
    for j in np.flatnonzero(ends - starts > 1).tolist():
        s, e = int(starts[j]), int(ends[j])
        order[s:e] = sorted(order[s:e].tolist(), key=members.id)
    return order


# -- spilling the stream while a step decides ----------------------------------------------------------------
class Spill:
    """Conversations written to an anonymous temporary file, each with a small tag, and read back in order.

    The file lives in `folder` (the build's stage folder: a disk, not a tmpfs in RAM) and disappears when
    closed. Conversations are stored as plain values (`conversation_parts`), a list of them per pickle
    (with their tags): several times faster, both ways, than JSON or than a pickle per record; a worker
    can pickle a batch itself (`write_batch`). They are read back without checks (`restore_conversation`):
    they were valid when written, and the file is this step's own.
    """

    def __init__(self, folder: str | Path | None = None, batch: int = 256) -> None:
        self.fh: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by replay/close
        self.count = 0
        self.batch = batch
        self._tags: list[int] = []
        self._parts: list[Parts] = []

    def write(self, tag: int, conv: Conversation) -> None:
        self._tags.append(tag)
        self._parts.append(conversation_parts(conv))
        if len(self._tags) >= self.batch:
            self._flush()

    def write_batch(self, tags: list[int], blob: bytes) -> None:
        """Records pickled elsewhere, as one list of `conversation_parts`, with their tags in order."""
        self._flush()
        pickle.dump((tags, blob), self.fh, protocol=5)
        self.count += len(tags)

    def _flush(self) -> None:
        if self._tags:
            tags, parts = self._tags, self._parts
            self._tags, self._parts = [], []
            self.write_batch(tags, pickle.dumps(parts, protocol=5))

    def replay(self) -> Iterator[tuple[int, Conversation]]:
        self._flush()
        self.fh.seek(0)
        try:
            left = self.count
            while left:
                tags, blob = pickle.load(self.fh)
                left -= len(tags)
                for tag, parts in zip(tags, pickle.loads(blob), strict=True):
                    yield tag, restore_conversation(parts)
        finally:
            self.close()

    def close(self) -> None:
        self.fh.close()


# -- what the report shows about the clusters ---------------------------------------------------------------
SAMPLE_CANDIDATES = 64  # clusters followed through the replay; the report shows `samples` of them


def _sample_hash(cid: str) -> bytes:
    return hashlib.blake2b(cid.encode("utf-8"), digest_size=8).digest()


def _member(conv: Conversation, key: Key) -> dict[str, Any]:
    last = next(m.content for m in reversed(conv.messages) if m.role in ("assistant", "text"))
    ranks = conv.meta.get("ranks")
    return {
        "id": conv.id,
        "source": conv.source,
        "priority": key[0],
        "ranks": ranks if isinstance(ranks, list) else None,
        "assistant_chars": -key[2],
        "last_answer": last[:120],
    }


class ClusterLog:
    """Counts over the clusters a dedup step resolved, and a few sampled clusters with what was kept and why.

    Fed during the replay, member by member. A cluster is decided by the first criterion on which its kept
    member beats the runner-up, which is the largest `decided_by` over its removed members (the runner-up
    shares the longest prefix of the key with the winner). Samples are chosen by a hash of the kept id
    (deterministic, spread over sources), one per criterion first, so each rule is shown at work.
    """

    def __init__(self, sampled: Iterable[int] = (), samples: int = 5) -> None:
        self.sampled = set(sampled)
        self.samples = samples
        self.removed = 0
        self.level: dict[int, int] = {}
        self.later: set[int] = set()
        self.detail: dict[int, dict[str, Any]] = {}

    def kept(self, cluster: int, conv: Conversation, key: Key) -> None:
        if cluster in self.sampled:
            d = self.detail.setdefault(cluster, {"dropped": [], "dropped_total": 0})
            d["kept"] = {**_member(conv, key), "first_seen": cluster not in self.later}

    def lost(self, cluster: int, conv: Conversation, key: Key, winner: Key, before_winner: bool) -> int:
        """Count a removed member; returns the index in `DECIDERS` of what decided against it."""
        self.removed += 1
        level = decided_by(winner, key)
        self.level[cluster] = max(self.level.get(cluster, 0), level)
        if before_winner:
            self.later.add(cluster)
        if cluster in self.sampled:
            d = self.detail.setdefault(cluster, {"dropped": [], "dropped_total": 0})
            d["dropped_total"] += 1
            if len(d["dropped"]) < 3:
                d["dropped"].append(_member(conv, key))
        return level

    def summary(self) -> dict[str, Any]:
        decided = Counter(DECIDERS[v] for v in self.level.values())
        ready = [c for _, c in sorted((_sample_hash(d["kept"]["id"]), c) for c, d in self.detail.items())]
        chosen: list[int] = []
        for name in DECIDERS:  # one cluster per criterion first, then the rest by hash
            pick = next((c for c in ready if DECIDERS[self.level[c]] == name), None)
            if pick is not None and len(chosen) < self.samples:
                chosen.append(pick)
        chosen += [c for c in ready if c not in chosen][: self.samples - len(chosen)]
        samples = [{**self.detail[c], "decided_by": DECIDERS[self.level[c]]} for c in chosen]
        samples.sort(key=lambda s: (DECIDERS.index(s["decided_by"]), s["kept"]["id"]))
        return {
            "clusters": len(self.level),
            "removed": self.removed,
            "decided_by": {name: decided.get(name, 0) for name in DECIDERS},
            "kept_later_arrival": len(self.later),
            "samples": samples,
        }


def _follow(winner: np.ndarray, members: Members) -> ClusterLog:
    """A log that follows a hashed sample of the clusters (named by their kept member) through the replay."""
    counts = np.bincount(winner, minlength=len(winner)) if len(winner) else np.zeros(0, np.int64)
    multi = np.flatnonzero(counts > 1).tolist()
    sampled = heapq.nsmallest(SAMPLE_CANDIDATES, multi, key=lambda w: _sample_hash(members.id(w)))
    return ClusterLog(sampled)


def _replay(step: Any, spill: Spill, members: Members, winner: np.ndarray, reason: str, detail: str,
            ) -> Iterator[Item]:
    """Second pass of a dedup step: every spilled conversation kept or rejected in favour of its winner."""
    log: ClusterLog = step.log
    for pos, conv in spill.replay():
        if pos < 0:
            yield conv
            continue
        w = int(winner[pos])
        if w == pos:
            if pos in log.sampled:
                log.kept(w, conv, members.key(pos))
            yield conv
            continue
        wkey = members.key(w)
        level = log.lost(w, conv, members.key(pos), wkey, before_winner=pos < w)
        why = f"{detail}; kept {wkey[3]} ({DECIDERS[level].replace('_', ' ')})"
        yield reject(conv, step.name, Drop(reason, why, duplicate_of=wkey[3]))


# -- exact ------------------------------------------------------------------------------------------------
Pairs = tuple[tuple[str, str], ...]  # (role, content) of the messages a digest covers
EXACT_BATCH = 256  # records per batch of digests handed to the ordered map
BLOCK_BYTES = 1 << 20  # bytes of a stage file's lines per batch of `ExactDedup.run_files`


def key_pairs(conv: Conversation, include_system: bool = False) -> Pairs:
    return tuple((m.role, m.content) for m in (conv.messages if include_system else conv.turns))


def _pairs_key(pairs: Pairs) -> bytes:
    """16-byte digest of the roles and normalised contents."""
    blob = "\x1e".join(f"{role}\x1f{normalise(content)}" for role, content in pairs)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).digest()


def exact_keys(batch: list[Pairs]) -> bytes:
    """The digests of a batch of records, one after another: the pure part of exact dedup, run wherever
    the step's ordered map sends it."""
    return b"".join(_pairs_key(pairs) for pairs in batch)


class _ClusterStep:
    """What both dedup steps hold: the sources they skip, the keep order, the spill folder, the cluster log,
    and the ordered map their heavy pure batches go through (builtin `map`: in this process)."""

    def __init__(
        self,
        skip_sources: Iterable[str] = (),
        *,
        priorities: Mapping[str, int] | None = None,
        spill_dir: str | Path | None = None,
        imap: OrderedMap = map,
    ) -> None:
        self.skip = frozenset(skip_sources)
        self.order = KeepOrder(priorities)
        self.spill_dir = spill_dir
        self.imap = imap
        self.log = ClusterLog()


class ExactDedup(_ClusterStep):
    """Drop reason ``duplicate``; `duplicate_of` is the id of the member of the cluster that was kept.

    Memory per record: its 16-byte digest and its `Members` key; clusters are runs of equal digests after
    one sort. Digests are computed a batch at a time through `imap` (`exact_keys`), a bounded window ahead,
    and taken in stream order.
    """

    name = "exact_dedup"

    def __init__(
        self,
        cfg: ExactDedupConfig,
        skip_sources: Iterable[str] = (),
        *,
        priorities: Mapping[str, int] | None = None,
        spill_dir: str | Path | None = None,
        imap: OrderedMap = map,
    ) -> None:
        super().__init__(skip_sources, priorities=priorities, spill_dir=spill_dir, imap=imap)
        self.cfg = cfg
        self.changes: Counter[str] = Counter()

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        members = Members()
        digests = bytearray()
        spill = Spill(self.spill_dir)
        inflight: deque[list[Item]] = deque()

        def jobs() -> Iterator[list[Pairs]]:
            for batch in batches(items, EXACT_BATCH):
                inflight.append(batch)
                yield [key_pairs(c, self.cfg.include_system) for c in batch
                       if not isinstance(c, Rejected) and c.source not in self.skip]

        try:
            for keys in self.imap(exact_keys, jobs()):
                k = 0
                for item in inflight.popleft():
                    if isinstance(item, Rejected):
                        yield item
                    elif item.source in self.skip:
                        spill.write(-1, item)
                    else:
                        digests += keys[k : k + 16]
                        k += 16
                        spill.write(members.add(self.order.key(item)), item)
        except BaseException:
            spill.close()
            raise
        yield from self._decide(members, digests, spill)

    def run_files(self, paths: Iterable[str | Path], loaded: Callable[[int], None] | None = None,
                  ) -> Iterator[Item]:
        """`run` over the records of JSON Lines files the build wrote (`read_record_line`), with all of the
        first pass's work on each record (parsing it, its key, digest and spilled form) done through `imap`,
        a block of lines at a time (`exact_block`): this process only adds the results up. The output is
        `run`'s on the same records. `loaded(n)` is told of each block's records as it is added."""
        members = Members()
        digests = bytearray()
        spill = Spill(self.spill_dir)
        jobs = ((block, self.cfg.include_system, self.skip) for p in paths for block in line_blocks(p, BLOCK_BYTES))
        try:
            for skipped, fields, keys, blob in self.imap(exact_block, jobs):
                todo = iter(fields)
                spill.write_batch([-1 if s else members.add(self.order.of(next(todo))) for s in skipped], blob)
                digests += keys
                if loaded is not None:
                    loaded(len(skipped))
        except BaseException:
            spill.close()
            raise
        yield from self._decide(members, digests, spill)

    def _decide(self, members: Members, digests: bytearray, spill: Spill) -> Iterator[Item]:
        labels = _digest_labels(digests)
        del digests
        winner = choose(labels, members)
        del labels
        self.log = _follow(winner, members)
        yield from _replay(self, spill, members, winner, "duplicate", "same normalised content")


BlockJob = tuple[bytes, bool, frozenset[str]]  # (JSON lines, include_system, sources skipped)


def exact_block(job: BlockJob) -> tuple[bytes, list[Fields], bytes, bytes]:
    """Exact dedup's first pass over a block of a stage file's lines, wherever `ExactDedup.run_files`'s map
    runs it: for each record whether its source is skipped; for the others, their `order_fields` and
    digests (16 bytes each, in order); and every record's `conversation_parts`, pickled as one list."""
    block, include_system, skip = job
    convs = read_record_lines(block)
    skipped = bytes(c.source in skip for c in convs)
    todo = [c for c in convs if c.source not in skip]
    keys = exact_keys([key_pairs(c, include_system) for c in todo])
    return skipped, [order_fields(c) for c in todo], keys, pickle.dumps([conversation_parts(c) for c in convs], 5)


def _digest_labels(digests: bytearray) -> np.ndarray:
    """A cluster label per record: records with equal digests get the same label."""
    if not digests:
        return np.empty(0, np.int64)
    d = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
    n = len(d)
    order = np.lexsort((d[:, 1], d[:, 0]))
    s = d[order]
    new = np.r_[True, (s[1:] != s[:-1]).any(axis=1)]
    labels = np.empty(n, np.int64)
    labels[order] = np.cumsum(new) - 1
    return labels


# -- MinHash signatures -----------------------------------------------------------------------------------
# Every byte `_BYTE_WORD_RE` does not count as part of a word becomes a space, so `bytes.split()` (in C, no
# regex engine) returns exactly the regex's words: word bytes are never ASCII whitespace.
_WORDS_ONLY = bytes(c if _BYTE_WORD_RE.fullmatch(bytes([c])) else 0x20 for c in range(256))


def batch_token_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`token_hashes` of every text, concatenated, and the number of words of each text.

    One ``map`` of xxhash over the whole batch's words: hashing each distinct word once through a dict
    measured slower than hashing every word (xxh3 on a short word costs about what a dict lookup does).
    """
    words = [t.lower().encode("utf-8").translate(_WORDS_ONLY).split() for t in texts]
    counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = itertools.chain.from_iterable(words)
    return np.fromiter(map(xxhash.xxh3_64_intdigest, flat), dtype=np.uint64, count=int(counts.sum())), counts


class MinHasher:
    """Vectorised MinHash over word n-grams: `signatures(texts)` is a ``(len(texts), num_perm)`` uint32 array.

    Permutation k maps a 64-bit shingle hash s to the top 32 bits of ``a_k * s + b_k (mod 2**64)`` (a_k odd),
    the multiply-shift universal family; datasketch's ``MinHash(scheme="affine64", permutations=(a, b))``
    computes the same 64-bit values when its input hash is pre-mixed to s (tests/steps/test_minhash.py).
    Taking the top bits is monotone, so the minimum is taken on the 64-bit values and shifted once per
    document. A batch is worked as one array: its words hashed in one pass, its n-grams in one pass over
    all documents, the permutations over windows of `chunk` shingles (one buffer per call) whose minima are
    folded into each document's row.
    """

    EMPTY = np.uint32(0xFFFFFFFF)

    def __init__(
        self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1, chunk: int = 8192
    ) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.a = (rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)
        # shingles per matrix pass: bounds memory at num_perm * chunk * 8 bytes; numpy's broadcast add measured
        # about 3x slower per element on rows much shorter than its 8192-element buffer
        self.chunk = chunk

    def shingles(self, text: str) -> np.ndarray:
        """The sorted distinct shingle hashes of one text."""
        return np.unique(ngram_hashes(token_hashes(text), self.shingle_size))

    def batch_shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of every text, concatenated in text order (repeats kept), and each one's text."""
        toks, counts = batch_token_hashes(texts)
        n = self.shingle_size
        grams = ngram_hashes(toks, n)  # windows over the concatenation; those crossing a text's end go
        if not len(grams):
            return grams, np.empty(0, np.int64)
        owner = np.repeat(np.arange(len(texts)), counts)
        pos = np.arange(len(toks)) - np.repeat(np.cumsum(counts) - counts, counts)
        owner, pos = owner[: len(grams)], pos[: len(grams)]
        whole = pos <= (counts - n)[owner]
        return grams[whole], owner[whole]

    def signatures(self, texts: list[str]) -> np.ndarray:
        return self.sign(texts, 0)[0]

    def sign(self, texts: list[str], sketch_k: int) -> tuple[np.ndarray, np.ndarray]:
        """MinHash signatures and bottom-k sketches (the k smallest distinct shingle hashes, top 32 bits).

        The sketch gives a second, nearly independent Jaccard estimate for confirming LSH candidates near
        the threshold; a text with fewer words than a shingle gets `EMPTY` rows in both.
        """
        sh, owner = self.batch_shingles(texts)
        sketches = np.full((len(texts), sketch_k), self.EMPTY, dtype=np.uint32)
        if sketch_k and len(sh):
            self._sketch(sh, owner, sketches)
        mins = np.full((len(texts), self.num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
        buf = np.empty((self.num_perm, min(self.chunk, len(sh))), dtype=np.uint64)  # per call: thread-safe
        for lo in range(0, len(sh), self.chunk):
            self._fold(sh[lo : lo + self.chunk], owner[lo : lo + self.chunk], mins, buf)
        out = (mins >> np.uint64(32)).astype(np.uint32)
        out[np.bincount(owner, minlength=len(texts)) == 0] = self.EMPTY
        return out, sketches

    def _fold(self, sh: np.ndarray, owner: np.ndarray, mins: np.ndarray, buf: np.ndarray) -> None:
        """Fold the permuted minima of one window of shingles into their texts' rows of `mins`."""
        mat = buf[:, : len(sh)]
        np.multiply.outer(self.a, sh, out=mat)
        mat += self.b[:, None]
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        rows = owner[starts]  # each text once: a window holds a run of texts in order
        mins[rows] = np.minimum(mins[rows], np.minimum.reduceat(mat, starts, axis=1).T)

    @staticmethod
    def _sketch(sh: np.ndarray, owner: np.ndarray, sketches: np.ndarray) -> None:
        """Each text's k smallest distinct shingle hashes (top 32 bits), ascending, into `sketches`."""
        order = np.argsort(sh)
        small = owner.astype(np.uint16) if len(sketches) <= 1 << 16 else owner  # 16 bits: a radix sort
        order = order[np.argsort(small[order], kind="stable")]  # by text, then by hash
        hs, ts = sh[order], owner[order]
        new = np.r_[True, (hs[1:] != hs[:-1]) | (ts[1:] != ts[:-1])]
        hs, ts = hs[new], ts[new]
        first = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])  # where each text's run starts
        rank = np.arange(len(hs)) - np.repeat(first, np.diff(np.r_[first, len(ts)]))
        keep = rank < sketches.shape[1]
        sketches[ts[keep], rank[keep]] = (hs[keep] >> np.uint64(32)).astype(np.uint32)


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


def shared_buckets(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One band's buckets: the documents (numbers into `keys`) that share their band key with another, and
    those keys, sorted by key (ties in document order)."""
    o = np.argsort(keys, kind="stable")
    ks = keys[o]
    same = ks[1:] == ks[:-1]
    shared = np.r_[same, False] | np.r_[False, same]
    return o[shared], ks[shared]


class NearIndex:
    """Signatures (and bottom-k sketches) of every document on disk, band keys in RAM; `resolve` finds the
    duplicates, best first.

    `resolve(order)` makes the decisions datasketch's `MinHashLSH` makes when documents go through it best
    first and only kept ones are inserted (`resolve_datasketch`, the reference the bench and a test compare
    against): a document is a duplicate when a kept, hence better, document shares one of its LSH bands and
    is a confirmed match, and is then assigned to its most similar kept match (ties: the better one);
    otherwise it is kept. A candidate is confirmed when the pooled Jaccard estimate of the signature
    agreement and the bottom-k sketch reaches the threshold; pooling roughly halves the estimate's variance
    near the threshold.

    Memory: each band of a signature is hashed to 64 bits (a collision between different bands is about
    2**-64 per pair, and would only add a candidate that the signatures still have to confirm), so RAM holds
    ``bands * 8`` bytes per document; signatures and sketches are appended to a temporary file in `folder`
    and read back only for the documents that share a band with another. Resolving sorts each band's keys,
    keeps only buckets with two or more documents, and walks just those documents best first.

    Walking best first makes the result independent of arrival order, and every removed document is itself
    similar to the better document it names (no chains: a truncated branch that resembles three distinct
    siblings removes itself, not the siblings).
    """

    def __init__(
        self,
        num_perm: int,
        threshold: float,
        bands: int | None = None,
        rows: int | None = None,
        sketch_k: int = 0,
        folder: str | Path | None = None,
    ) -> None:
        if bands is None or rows is None:
            # LSH only proposes candidates; the signatures confirm them, so lean towards recall.
            bands, rows = optimal_params(max(threshold - 0.1, 0.05), num_perm)
        self.bands, self.rows = bands, rows
        self.num_perm = num_perm
        self.sketch_k = sketch_k
        self.threshold = threshold
        self.keys = np.empty((1024, bands), dtype=np.uint64)
        self.size = 0
        self.row_bytes = (num_perm + sketch_k) * 4
        self.fh: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        mix = np.random.default_rng(0x5EED).integers(1, 2**63, (bands, rows), dtype=np.uint64)
        self.mix = mix | np.uint64(1)  # odd multipliers, one per position within a band

    def __len__(self) -> int:
        return self.size

    @property
    def ram_bytes(self) -> int:
        """Bytes the index holds in RAM for the documents added so far (the band keys)."""
        return self.size * self.bands * 8

    @property
    def disk_bytes(self) -> int:
        return self.size * self.row_bytes

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """``(len(sigs), bands)`` 64-bit hashes of each band of each signature."""
        sigs = np.asarray(sigs, dtype=np.uint32).reshape(-1, self.num_perm)
        out = np.zeros((len(sigs), self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.rows):
                cols = sigs[:, j : self.bands * self.rows : self.rows].astype(np.uint64)  # column j of each band
                out ^= cols * self.mix[:, j]
                out = (out ^ (out >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
        return out

    def add(self, sig: np.ndarray, sketch: np.ndarray | None = None) -> int:
        """Store a document's signature (and sketch); returns its number."""
        sk = None if sketch is None else np.asarray(sketch).reshape(1, -1)
        return self.add_many(np.asarray(sig).reshape(1, -1), sk)

    def add_many(self, sigs: np.ndarray, sketches: np.ndarray | None = None) -> int:
        """Store a batch of signatures (and sketches); returns the number of the first."""
        n = len(sigs)
        first = self.size
        while first + n > len(self.keys):
            self.keys = np.concatenate([self.keys, np.empty_like(self.keys)])
        self.keys[first : first + n] = self.band_keys(sigs)
        rows = np.zeros((n, self.num_perm + self.sketch_k), dtype=np.uint32)
        rows[:, : self.num_perm] = sigs
        if sketches is not None and self.sketch_k:
            rows[:, self.num_perm :] = sketches
        self.fh.write(rows.tobytes())
        self.size += n
        return first

    def rows_of(self, docs: list[int]) -> np.ndarray:
        """Signatures and sketches of `docs`, read back from the file: ``(len(docs), num_perm + sketch_k)``."""
        fd, rb = self.fh.fileno(), self.row_bytes
        buf = b"".join(os.pread(fd, rb, d * rb) for d in docs)
        return np.frombuffer(buf, dtype=np.uint32).reshape(len(docs), -1)

    def all_rows(self) -> np.ndarray:
        self.fh.flush()
        return self.rows_of(list(range(self.size)))

    def close(self) -> None:
        self.fh.close()

    def _buckets(self, rank: np.ndarray, imap: OrderedMap = map,
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Per band, the keys of buckets with two or more documents (sorted) and those documents, best first
        within a bucket; and which documents are in any such bucket. Each band's sort runs through `imap`
        (`shared_buckets`, a task per band); only the documents that share a bucket come back."""
        keys = self.keys[: self.size]
        mate = np.zeros(self.size, dtype=bool)
        out = []
        for o, ks in imap(shared_buckets, (np.ascontiguousarray(keys[:, b]) for b in range(self.bands))):
            sub = np.lexsort((rank[o], ks))  # within a bucket, best first
            o, ks = o[sub], ks[sub]
            mate[o] = True
            out.append((ks, o))
        return out, mate

    PAIR_BLOCK = 1 << 20  # band mates listed at once (a document with more still gets its own block)

    def resolve(self, order: np.ndarray, imap: OrderedMap = map) -> np.ndarray:
        """For each document, the document kept in its place (itself when kept), walking `order` best first;
        the bands' buckets are sorted through `imap`, the walk is here."""
        self.fh.flush()
        n = self.size
        winner = np.arange(n, dtype=np.int64)
        if n == 0:
            return winner
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        buckets, mate = self._buckets(rank, imap)
        walk = order[mate[order]]  # only documents sharing a bucket can be or have duplicates
        kept = np.ones(n, dtype=bool)
        np_ = self.num_perm
        mates = np.zeros(len(walk), dtype=np.int64)  # band mates of each walked document, over all bands
        for band, (ks, _) in enumerate(buckets):
            k = self.keys[walk, band]
            mates += np.searchsorted(ks, k, "right") - np.searchsorted(ks, k, "left")
        full = np.arange(1, int(mates.sum()) // self.PAIR_BLOCK + 1) * self.PAIR_BLOCK
        cuts = np.searchsorted(np.cumsum(mates), full) + 1  # a block ends after the document that fills it
        for w0, w1 in itertools.pairwise(np.unique(np.r_[0, cuts, len(walk)]).tolist()):
            block = walk[w0:w1]
            who, cands, starts = self._better_candidates(block, buckets, rank, order)
            for t, (lo, hi) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
                docs = cands[lo:hi]  # best first, as datasketch's insertion keys sort
                docs = docs[kept[docs]]
                if not len(docs):
                    continue
                i = int(who[t])
                rows = self.rows_of([i, *docs.tolist()])
                sig, others = rows[0, :np_], rows[1:]
                sims = (others[:, :np_] == sig).mean(axis=1)
                if self.sketch_k:
                    sims = self._pooled_many(sims, rows[0, np_:], others[:, np_:])
                j = int(np.argmax(sims))  # ties: the better document
                if sims[j] >= self.threshold:
                    winner[i] = docs[j]
                    kept[i] = False
        return winner

    def _better_candidates(
        self, block: np.ndarray, buckets: list[tuple[np.ndarray, np.ndarray]], rank: np.ndarray, order: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the documents of `block` (best first) that share a band with a better document: those documents,
        their better band mates (each once, best first, concatenated) and where each one's run starts."""
        n = self.size
        parts: list[np.ndarray] = []
        for band, (ks, o) in enumerate(buckets):
            k = self.keys[block, band]
            lo = np.searchsorted(ks, k, "left")
            size = np.searchsorted(ks, k, "right") - lo
            size[size < 2] = 0  # alone in its bucket
            total = int(size.sum())
            if not total:
                continue
            owner = np.repeat(np.arange(len(block)), size)
            pos = np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(total)
            mate = o[pos]
            better = rank[mate] < rank[block[owner]]
            parts.append(owner[better] * n + rank[mate[better]])  # sorts by document, then best mate first
        pairs = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
        if not len(pairs):
            return pairs, pairs, np.zeros(1, np.int64)
        owner, mate_rank = np.divmod(pairs, n)
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        return block[owner[first]], order[mate_rank], np.r_[first, len(pairs)]

    def resolve_datasketch(self, order: np.ndarray) -> np.ndarray:
        """The reference: the same walk through datasketch's `MinHashLSH`, with every signature in RAM."""
        from datasketch import LeanMinHash, MinHashLSH

        rows = self.all_rows()
        sigs, sketches = rows[:, : self.num_perm], rows[:, self.num_perm :]
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, params=(self.bands, self.rows))
        winner = np.empty(self.size, dtype=np.int64)
        kept: list[int] = []  # LSH key -> document; keys grow with quality, so ties go to the better one
        for i in order.tolist():
            sig = sigs[i]
            # our own 32-bit signatures; the scheme label only stops an index from mixing kinds of signature
            mh = LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")
            cands = lsh.query(mh)
            if cands:
                keys = np.fromiter(sorted(cands), dtype=np.int64, count=len(cands))
                docs = np.array([kept[k] for k in keys.tolist()], dtype=np.int64)
                sims = (sigs[docs] == sig).mean(axis=1)
                if self.sketch_k:
                    sk = sketches[i]
                    sims = np.array([self._pooled(a, sk, sketches[d]) for a, d in zip(sims, docs, strict=True)])
                j = int(np.argmax(sims))
                if sims[j] >= self.threshold:
                    winner[i] = docs[j]
                    continue
            lsh.insert(len(kept), mh, check_duplication=False)
            kept.append(i)
            winner[i] = i
        return winner

    def _pooled_many(self, agree: np.ndarray, a: np.ndarray, bs: np.ndarray) -> np.ndarray:
        """`_pooled` of one sketch `a` against each row of `bs`, in one pass (the same floating-point steps).

        Per row: the sorted concatenation, empty slots left out; intersect1d's matches are its adjacent equal
        pairs (so a value repeated inside one sketch counts as `_pooled` counts it); the union is its
        distinct values, cut at `sketch_k`.
        """
        m = np.sort(np.concatenate([np.broadcast_to(a, (len(bs), len(a))), bs], axis=1), axis=1)
        real = m != MinHasher.EMPTY  # the empty slot sorts last
        dup = m[:, 1:] == m[:, :-1]
        distinct = real.copy()
        distinct[:, 1:] &= ~dup
        size = np.minimum(distinct.sum(axis=1), self.sketch_k)  # len(union)
        nth = np.argmax(distinct & (np.cumsum(distinct, axis=1) >= size[:, None]), axis=1)
        last = m[np.arange(len(m)), nth]  # union[-1]
        both = (dup & real[:, 1:] & (m[:, 1:] <= last[:, None])).sum(axis=1)
        n = self.num_perm
        safe = np.maximum(size, 1)
        pooled = (agree * n + (both / safe) * size) / (n + size)
        return np.where(size > 0, pooled, agree)

    def _pooled(self, agree: float, a: np.ndarray, b: np.ndarray) -> float:
        """Signature agreement pooled with the bottom-k estimate |U_k ∩ A ∩ B| / |U_k|, weighted by sizes."""
        a = a[a != MinHasher.EMPTY]
        b = b[b != MinHasher.EMPTY]
        union = np.union1d(a, b)[: self.sketch_k]
        if not len(union):
            return agree
        both = np.intersect1d(a, b, assume_unique=True)
        est = np.count_nonzero(both <= union[-1]) / len(union)
        n = self.num_perm
        return (agree * n + est * len(union)) / (n + len(union))


SignJob = tuple[int, int, int, int, list[str]]  # (num_perm, shingle_size, seed, sketch_k, texts)


@lru_cache(maxsize=8)
def _hasher(num_perm: int, shingle_size: int, seed: int) -> MinHasher:
    return MinHasher(num_perm, shingle_size, seed)


def sign_texts(job: SignJob) -> tuple[np.ndarray, np.ndarray]:
    """Signatures and sketches of a batch of texts: the pure, heavy part of near dedup, run wherever the
    step's ordered map sends it (the hasher is made once per process, from the settings)."""
    num_perm, shingle_size, seed, sketch_k, texts = job
    return _hasher(num_perm, shingle_size, seed).sign(texts, sketch_k)


class NearDedup(_ClusterStep):
    """Near-dedup step: signs the stream a batch at a time into the index, then keeps the best of each cluster.

    Batches are signed through `imap` (`sign_texts`; builtin `map` signs them here), a bounded window of
    them ahead of the index, which adds them in stream order: the decisions do not depend on the map.

    Memory per indexed record: its band keys and its `Members` key in RAM (while resolving, a few more
    arrays of 8 bytes per record), its signature and sketch on disk in `spill_dir`.
    """

    name = "near_dedup"

    def __init__(
        self,
        cfg: NearDedupConfig,
        skip_sources: Iterable[str] = (),
        *,
        priorities: Mapping[str, int] | None = None,
        spill_dir: str | Path | None = None,
        imap: OrderedMap = map,
    ) -> None:
        super().__init__(skip_sources, priorities=priorities, spill_dir=spill_dir, imap=imap)
        self.cfg = cfg
        self.index = NearIndex(cfg.num_perm, cfg.threshold, cfg.bands, cfg.rows, cfg.sketch_k, spill_dir)
        self.members = Members()
        self.changes: dict[str, int] = {"too_short_to_compare": 0}

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        spill = Spill(self.spill_dir)
        inflight: deque[tuple[list[Conversation], list[int]]] = deque()  # (batch, the ones signed)
        passed: list[Rejected] = []  # rejects read ahead with the batches, yielded in their order

        def jobs() -> Iterator[SignJob]:
            batch: list[Conversation] = []
            for item in items:
                if isinstance(item, Rejected):
                    passed.append(item)
                    continue
                batch.append(item)
                if len(batch) >= self.cfg.batch_size:
                    yield self._job(batch, inflight)
                    batch = []
            if batch:
                yield self._job(batch, inflight)

        try:
            for sigs, sketches in self.imap(sign_texts, jobs()):
                yield from self._take(passed)
                batch, todo = inflight.popleft()
                self._index(batch, todo, sigs, sketches, spill)
            yield from self._take(passed)
            winner = self.index.resolve(keep_order(self.members), self.imap)
        except BaseException:
            spill.close()
            raise
        finally:
            self.index.close()
        self.log = _follow(winner, self.members)
        yield from _replay(self, spill, self.members, winner, "near_duplicate", f"Jaccard >= {self.cfg.threshold}")

    @staticmethod
    def _take(passed: list[Rejected]) -> list[Rejected]:
        out = passed[:]
        passed.clear()
        return out

    def _job(self, batch: list[Conversation], inflight: deque[tuple[list[Conversation], list[int]]]) -> SignJob:
        todo = [i for i, c in enumerate(batch) if c.source not in self.skip]
        inflight.append((batch, todo))
        texts = [content_text(batch[i], include_system=self.cfg.include_system) for i in todo]
        return self.cfg.num_perm, self.cfg.shingle_size, self.cfg.seed, self.cfg.sketch_k, texts

    def _index(self, batch: list[Conversation], todo: list[int], sigs: np.ndarray, sketches: np.ndarray,
               spill: Spill) -> None:
        empty = (sigs == MinHasher.EMPTY).all(axis=1)  # fewer words than a shingle: exact dedup's job
        self.index.add_many(sigs[~empty], sketches[~empty])
        sig_of = {i: n for n, i in enumerate(todo)}
        for i, conv in enumerate(batch):
            n = sig_of.get(i)
            if n is None or empty[n]:
                self.changes["too_short_to_compare"] += n is not None
                spill.write(-1, conv)
                continue
            spill.write(self.members.add(self.order.key(conv)), conv)
