"""The `mix` step: per-source weights/epochs/max_samples with the seed, a grouped train/test split, a
deterministic shuffle, and the parquet shards in the interchange schema.

Memory stays at a few integers per conversation: one pass over the deduplicated conversations records their
byte offsets, sources and group hashes; the shards are then written by seeking to each chosen record.
Selection for a source is a sequence of seeded permutations of its records (one per pass), cut at the
target count, so ``weight: 1.5`` is every record once plus a random half twice, and ``max_samples`` keeps a
random subset. Pieces of one original conversation (``meta.group``) always land in the same split. With
``shuffle: false`` the output keeps the manifest's order: sources as listed, records as read.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from crystalmix.core.atomic import atomic_path
from crystalmix.core.records import Rejected, RejectWriter
from sft_builder.manifest import Manifest, SourceConfig

ROWS_PER_FILE = 100_000
ROW_GROUP = 1_000  # fixed, so file bytes never depend on how rows arrive
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("meta", pa.string()),  # JSON object with sorted keys: adapters' meta keys differ
        ("text", pa.string()),  # a document's text (its messages are empty); null for a conversation
    ]
)
KEPT, WEIGHT, MAX_SAMPLES = 0, 1, 2
REASONS = {WEIGHT: "weight", MAX_SAMPLES: "max_samples"}


def targets(src: SourceConfig, n: int) -> tuple[int, int]:
    """(samples wanted by weight/epochs, samples after the max_samples cap) for a source of `n` records."""
    if src.epochs is not None:
        by_weight = src.epochs * n
    else:
        by_weight = int(np.floor((1.0 if src.weight is None else src.weight) * n + 0.5))
    capped = by_weight if src.max_samples is None else min(by_weight, src.max_samples)
    return by_weight, capped


def select(src: SourceConfig, members: np.ndarray, seed: int,
           keep_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The sample sequence (record indices, repeats allowed) and a reason code per member.

    With `keep_order` the same records are chosen, and each pass over the source lists its records in
    their original order (``weight: 2`` is the source twice in a row).
    """
    n = len(members)
    reasons = np.full(n, KEPT, dtype=np.int8)
    if n == 0:
        return np.empty(0, dtype=np.int64), reasons
    by_weight, target = targets(src, n)
    rng = np.random.default_rng([seed, xxhash.xxh32_intdigest(src.name.encode())])
    first = rng.permutation(n)
    passes = [first] + [rng.permutation(n) for _ in range(-(-target // n) - 1)]
    if keep_order:
        passes = [np.sort(p[: max(target - k * n, 0)]) for k, p in enumerate(passes)]
    seq = np.concatenate(passes)[:target]
    reasons[first[min(target, n) : min(by_weight, n)]] = MAX_SAMPLES
    reasons[first[min(by_weight, n) :]] = WEIGHT
    return members[seq], reasons


def run_mix(
    m: Manifest, kept_path: Path, folder: Path, progress: Callable[[str, int], None] | None = None
) -> dict[str, Any]:
    """Select, split, shuffle; write ``{train,test}-NNNNN.parquet`` and ``rejects.jsonl`` into `folder`."""
    t0 = time.perf_counter()
    names = [s.name for s in m.sources]
    index = {n: i for i, n in enumerate(names)}
    offsets, src_ids, groups = array("q"), array("i"), array("Q")
    pos = 0
    with open(kept_path, "rb") as fh:
        for line in fh:
            rec = json.loads(line)
            offsets.append(pos)
            pos += len(line)
            src_ids.append(index[rec["source"]])
            group = str(rec["meta"].get("group") or rec["id"])
            groups.append(xxhash.xxh64_intdigest(f"{m.seed}\x1f{group}".encode()))
    src = np.frombuffer(src_ids, dtype=np.int32) if len(src_ids) else np.empty(0, np.int32)
    ghash = np.frombuffer(groups, dtype=np.uint64) if len(groups) else np.empty(0, np.uint64)
    reason = np.full(len(src), KEPT, dtype=np.int8)
    seqs = []
    for i, s in enumerate(m.sources):
        members = np.flatnonzero(src == i)
        seq, r = select(s, members, m.seed, keep_order=not m.mix.shuffle)
        reason[members] = r
        seqs.append(seq)
    # m.sources is in priority order; unshuffled, the mix follows the order the manifest lists them in
    listed = sorted(range(len(m.sources)), key=lambda i: m.sources[i].line)
    if not m.mix.shuffle:
        seqs = [seqs[i] for i in listed]
    samples = np.concatenate(seqs) if seqs else np.empty(0, np.int64)

    # grouped split: the test_fraction of the chosen records' groups with the smallest seeded hashes
    is_test = np.zeros(len(src), dtype=bool)
    chosen = reason == KEPT
    if m.split.test_fraction > 0 and chosen.any():
        uniq = np.unique(ghash[chosen])
        k = int(np.floor(m.split.test_fraction * len(uniq) + 0.5))
        if k > 0:
            is_test = chosen & (ghash <= uniq[k - 1])
    train = samples[~is_test[samples]]
    test = np.flatnonzero(is_test)
    if m.mix.shuffle:
        rng = np.random.default_rng([m.seed, 0x5EED])
        train = train[rng.permutation(len(train))]
        test = test[rng.permutation(len(test))]
    elif len(test):
        rank = np.empty(len(m.sources), dtype=np.int64)
        rank[listed] = np.arange(len(listed))
        test = test[np.argsort(rank[src[test]], kind="stable")]

    stats: dict[str, Any] = {"sources": {n: _empty_source_stats() for n in names}}
    _rejects_and_stats(m, kept_path, reason, is_test, src, stats, folder / "rejects.jsonl")
    for i, n in enumerate(names):
        st = stats["sources"][n]
        st["train"] = int(np.count_nonzero(src[train] == i)) if len(train) else 0
        st["test"] = int(np.count_nonzero(src[test] == i)) if len(test) else 0
    files = _write_split(kept_path, offsets, train, folder, "train", progress)
    if m.split.test_fraction > 0:
        files += _write_split(kept_path, offsets, test, folder, "test", progress)
    stats["splits"] = {"train": int(len(train)), "test": int(len(test))}
    stats["files"] = files
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _empty_source_stats() -> dict[str, Any]:
    return {
        "in": 0,
        "kept": 0,
        "dropped": {},
        "chars": 0,
        "turns": 0,
        "rounds": 0,
        "turns_hist": {},  # turns (system excluded) per kept conversation -> conversations
        "documents": 0,
        "train": 0,
        "test": 0,
        "test_kept": 0,
    }


def _rejects_and_stats(
    m: Manifest,
    kept_path: Path,
    reason: np.ndarray,
    is_test: np.ndarray,
    src: np.ndarray,
    stats: dict[str, Any],
    rejects_path: Path,
) -> None:
    """One sequential pass: write the mix's rejects; sum characters and turns of what was kept."""
    names = [s.name for s in m.sources]
    with open(kept_path, encoding="utf-8") as fh, RejectWriter(rejects_path) as out:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            st = stats["sources"][names[src[i]]]
            st["in"] += 1
            r = int(reason[i])
            if r != KEPT:
                key = f"mix:{REASONS[r]}"
                st["dropped"][key] = st["dropped"].get(key, 0) + 1
                meta = rec["meta"]  # a validated conversation's: ``line`` is an int, ``file`` a string
                out.write(Rejected(rec["source"], "mix", REASONS[r], meta.get("file", ""), meta.get("line", 0),
                                   rec, "not chosen by the source's mixing settings"))
                continue
            st["kept"] += 1
            st["test_kept"] += int(is_test[i])
            if "text" in rec:  # a document: no turns
                st["documents"] += 1
                st["chars"] += len(rec["text"])
                continue
            turns = [msg for msg in rec["messages"] if msg["role"] != "system"]
            st["turns"] += len(turns)
            st["rounds"] += len(turns) // 2
            st["turns_hist"][str(len(turns))] = st["turns_hist"].get(str(len(turns)), 0) + 1
            st["chars"] += sum(len(msg["content"]) for msg in turns)


def _write_split(
    kept_path: Path,
    offsets: array,
    order: np.ndarray,
    folder: Path,
    split: str,
    progress: Callable[[str, int], None] | None,
) -> list[str]:
    """Write the records at `order` (indices into the kept file) as parquet shards; returns the file names."""
    names = []
    n_files = max(1, -(-len(order) // ROWS_PER_FILE))
    with open(kept_path, "rb") as fh:
        for f in range(n_files):
            name = f"{split}-{f:05d}.parquet"
            part = order[f * ROWS_PER_FILE : (f + 1) * ROWS_PER_FILE]
            with atomic_path(folder / name) as tmp:
                writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd", write_statistics=False)
                try:
                    for g in range(0, max(len(part), 1), ROW_GROUP):
                        rows = []
                        for idx in part[g : g + ROW_GROUP]:
                            fh.seek(offsets[int(idx)])
                            rec = json.loads(fh.readline())
                            rows.append(
                                {
                                    "id": rec["id"],
                                    "source": rec["source"],
                                    "messages": rec.get("messages", []),
                                    "meta": json.dumps(rec["meta"], ensure_ascii=False, sort_keys=True),
                                    "text": rec.get("text"),
                                }
                            )
                        writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
                        if progress is not None:
                            progress(f"write {split}", f * ROWS_PER_FILE + g + len(rows))
                finally:
                    writer.close()
            names.append(name)
    return names
