"""The `mix` step: per-source weights/epochs/max_samples with the seed, a grouped train/test split, a
deterministic shuffle, and the parquet shards in the interchange schema.

Memory stays at a few integers per conversation: one pass over the deduplicated conversations records their
byte offsets, sources, group hashes and sizes; the shards are then written by seeking to each chosen record.
Both passes are cut into pure jobs (chunks of the file, row groups of a shard) handed to an ordered map,
so other processes may parse and build them while the results are used here in order: the output does
not depend on the map. A job names the kept file and where to read, or, for a map whose tasks cannot open
this machine's files (Ray), carries the bytes it reads.
Selection for a source is a sequence of seeded permutations of its records (one per pass), cut at the
target count, so ``weight: 1.5`` is every record once plus a random half twice, and ``max_samples`` keeps a
random subset. Pieces of one original conversation (``meta.group``) always land in the same split. With
``shuffle: false`` the output keeps the manifest's order: sources as listed, records as read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from crystalmix.core.atomic import atomic_path
from crystalmix.core.records import Rejected, RejectWriter
from sft_builder.manifest import Manifest, SourceConfig
from sft_builder.steps.base import OrderedMap

ROWS_PER_FILE = 100_000
ROW_GROUP = 1_000  # fixed, so file bytes never depend on how rows arrive
CHUNK_BYTES = 4 << 20  # the scan's jobs: about this many bytes of the kept file each
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


ScanJob = tuple[str | bytes, int, int, int, tuple[str, ...]]  # (kept file or its bytes, start, end, seed, names)
Scan = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # lengths, sources, groups, chars, turns
SCAN_TYPES = (np.int64, np.int32, np.uint64, np.int64, np.int32)
NO_TURNS = -1  # `turns` of a document


def scan_chunk(job: ScanJob) -> Scan:
    """For each line of ``[start, end)`` of the kept file: its length, source, seeded group hash, trained
    characters and turns (system excluded; `NO_TURNS` for a document). A pure job for the ordered map."""
    kept, start, end, seed, names = job
    index = {n: i for i, n in enumerate(names)}
    lengths, src, groups, chars, turns = array("q"), array("i"), array("Q"), array("q"), array("i")
    with _open(kept) as fh:
        fh.seek(start)
        pos = start
        while pos < end:
            line = fh.readline()
            if not line:
                break
            pos += len(line)
            rec = json.loads(line)
            lengths.append(len(line))
            src.append(index[rec["source"]])
            group = str(rec["meta"].get("group") or rec["id"])
            groups.append(xxhash.xxh64_intdigest(f"{seed}\x1f{group}".encode()))
            if "text" in rec:  # a document: no turns
                chars.append(len(rec["text"]))
                turns.append(NO_TURNS)
                continue
            said = [msg for msg in rec["messages"] if msg["role"] != "system"]
            chars.append(sum(len(msg["content"]) for msg in said))
            turns.append(len(said))
    cols = (lengths, src, groups, chars, turns)
    out = [np.frombuffer(a, dtype=t) if len(a) else np.empty(0, t) for a, t in zip(cols, SCAN_TYPES, strict=True)]
    return out[0], out[1], out[2], out[3], out[4]


def _open(kept: str | bytes) -> BinaryIO:
    """The kept file by its path, or the bytes a job carries in its place."""
    return io.BytesIO(kept) if isinstance(kept, bytes) else open(kept, "rb")  # noqa: SIM115


def _read(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


def chunks(path: Path, size: int | None = None) -> Iterator[tuple[int, int]]:
    """Byte ranges of about `size` (`CHUNK_BYTES`) that start and end at line starts."""
    size = size or CHUNK_BYTES
    total = os.path.getsize(path)
    with open(path, "rb") as fh:
        start = 0
        while start < total:
            fh.seek(min(start + size, total) - 1)
            fh.readline()  # to the end of the line the cut falls in
            end = min(fh.tell(), total)
            yield start, end
            start = end


def run_mix(
    m: Manifest, kept_path: Path, folder: Path, progress: Callable[[str, int], None] | None = None,
    imap: OrderedMap = map, shared_disk: bool = True,
) -> dict[str, Any]:
    """Select, split, shuffle; write ``{train,test}-NNNNN.parquet`` and ``rejects.jsonl`` into `folder`.
    The scan and the row groups run through `imap`; unless `shared_disk` (its tasks can open `kept_path`),
    each job carries the bytes it reads."""
    t0 = time.perf_counter()
    names = [s.name for s in m.sources]
    jobs = ((str(kept_path), a, b, m.seed, tuple(names)) if shared_disk
            else (_read(kept_path, a, b), 0, b - a, m.seed, tuple(names)) for a, b in chunks(kept_path))
    scans = list(imap(scan_chunk, jobs))
    lengths, src, ghash, chars, turns = (
        np.concatenate([sc[k] for sc in scans]) if scans else np.empty(0, t) for k, t in enumerate(SCAN_TYPES)
    )
    del scans
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if len(lengths) else lengths
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
    _write_rejects(kept_path, offsets, reason, folder / "rejects.jsonl")
    for i, n in enumerate(names):
        st = stats["sources"][n]
        _source_stats(st, src == i, reason, is_test, chars, turns)
        st["train"] = int(np.count_nonzero(src[train] == i)) if len(train) else 0
        st["test"] = int(np.count_nonzero(src[test] == i)) if len(test) else 0
    splits = [("train", train)] + ([("test", test)] if m.split.test_fraction > 0 else [])
    files = _write_splits(kept_path, offsets, splits, folder, progress, imap, shared_disk)
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


def _first_seen(values: np.ndarray) -> list[tuple[int, int]]:
    """(value, count) of each distinct value, in the order values first appear."""
    uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
    return [(int(uniq[j]), int(counts[j])) for j in np.argsort(first)]


def _source_stats(st: dict[str, Any], mine: np.ndarray, reason: np.ndarray, is_test: np.ndarray,
                  chars: np.ndarray, turns: np.ndarray) -> None:
    """A source's counts: what the mix dropped (by reason, in the order first met), and the characters,
    turns and rounds of what it kept (the turn histogram in the order its sizes first appear)."""
    st["in"] = int(np.count_nonzero(mine))
    for r, count in _first_seen(reason[mine & (reason != KEPT)]):
        st["dropped"][f"mix:{REASONS[r]}"] = count
    kept = mine & (reason == KEPT)
    doc = turns == NO_TURNS
    st["kept"] = int(np.count_nonzero(kept))
    st["test_kept"] = int(np.count_nonzero(kept & is_test))
    st["documents"] = int(np.count_nonzero(kept & doc))
    st["chars"] = int(chars[kept].sum())
    said = turns[kept & ~doc].astype(np.int64)
    st["turns"] = int(said.sum())
    st["rounds"] = int((said // 2).sum())
    st["turns_hist"] = {str(t): count for t, count in _first_seen(said)}


def _write_rejects(kept_path: Path, offsets: np.ndarray, reason: np.ndarray, rejects_path: Path) -> None:
    """The records the mixing settings left out, in the order of the kept file."""
    with open(kept_path, "rb") as fh, RejectWriter(rejects_path) as out:
        for i in np.flatnonzero(reason != KEPT).tolist():
            fh.seek(int(offsets[i]))
            rec = json.loads(fh.readline())
            r = int(reason[i])
            meta = rec["meta"]  # a validated conversation's: ``line`` is an int, ``file`` a string
            out.write(Rejected(rec["source"], "mix", REASONS[r], meta.get("file", ""), meta.get("line", 0),
                               rec, "not chosen by the source's mixing settings"))


RowGroupJob = tuple[str | bytes, np.ndarray]  # (kept file or the rows' lines, byte offsets of the rows in it)


def row_group(job: RowGroupJob) -> pa.Table:
    """One row group of a shard: the records at `offsets`, in that order (a pure job for the ordered map)."""
    kept, offsets = job
    rows = []
    with _open(kept) as fh:
        for off in offsets.tolist():
            fh.seek(off)
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
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _write_splits(
    kept_path: Path,
    offsets: np.ndarray,
    splits: list[tuple[str, np.ndarray]],
    folder: Path,
    progress: Callable[[str, int], None] | None,
    imap: OrderedMap,
    shared_disk: bool = True,
) -> list[str]:
    """Write each split's records (`order`: indices into the kept file) as parquet shards of `ROWS_PER_FILE`
    rows in row groups of `ROW_GROUP` (one empty group for an empty split); returns the file names.
    Row groups are built through `imap` and written here in order."""
    plan: list[tuple[str, int, int, int]] = []  # (split, file, first row in the file, rows)
    for split, order in splits:
        for f in range(max(1, -(-len(order) // ROWS_PER_FILE))):
            n = len(order[f * ROWS_PER_FILE : (f + 1) * ROWS_PER_FILE])
            plan += [(split, f, g, min(ROW_GROUP, n - g)) for g in range(0, max(n, 1), ROW_GROUP)]
    orders = dict(splits)

    def jobs() -> Iterator[RowGroupJob]:
        with open(kept_path, "rb") as fh:
            for split, f, g, n in plan:
                rows = orders[split][f * ROWS_PER_FILE + g : f * ROWS_PER_FILE + g + n]
                if shared_disk:
                    yield str(kept_path), offsets[rows]
                    continue
                lines = []  # the rows' lines, read here, for a task that cannot open the kept file
                for off in offsets[rows].tolist():
                    fh.seek(off)
                    lines.append(fh.readline())
                yield b"".join(lines), np.cumsum([0, *map(len, lines[:-1])], dtype=np.int64)[: len(lines)]

    names: list[str] = []
    with contextlib.ExitStack() as stack:
        writer = None
        for (split, f, g, n), table in zip(plan, imap(row_group, jobs()), strict=True):
            if g == 0:  # a new file: close the one before (renamed into place), open this one
                stack.close()
                name = f"{split}-{f:05d}.parquet"
                tmp = stack.enter_context(atomic_path(folder / name))
                writer = stack.enter_context(pq.ParquetWriter(tmp, SCHEMA, compression="zstd", write_statistics=False))
                names.append(name)
            assert writer is not None
            writer.write_table(table)
            if progress is not None:
                progress(f"write {split}", f * ROWS_PER_FILE + g + n)
    return names
