"""Offline mixing: one folder whose row order already follows the mixture weights, for trainers that read
a single folder in order (what Cerebras' HDF5 shuffle produced for LLM360).

Rows are drawn without repetition: the largest total for which no source runs out (``N = min n_i / w_i``),
each source contributing ``round(N * w_i)`` rows chosen by seeded selection sampling, the sources
interleaved in a seeded random order and passed through a shuffle buffer. Memory is one read batch per
source plus the buffer, whatever the corpus size.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from crystalmix.core.atomic import write_json
from crystalmix.core.digest import Digests, records, text_digest
from crystalmix.core.errors import UserError
from crystalmix.core.hdf5 import (
    ShardedWriter,
    add_stats,
    build_metadata,
    iter_rows,
    read_metadata,
    row_stats,
    write_metadata,
)
from pretrain.config import StageConfig
from pretrain.outputs import INDEX_NAME, MIXTURE_NAME
from pretrain.split import data_subset_rows
from pretrain.stages import STATE_DIR

MIXED = "mixed"
DONE = ".mixed.done"


def plan_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """Rows to take per source: proportional to `weights`, never more than a source holds."""
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise UserError(f"mixture weights must be >= 0 with a positive sum, got {weights}")
    w = w / w.sum()
    total = min(n / wi for n, wi in zip(sizes, w, strict=True) if wi > 0)
    return [min(n, int(round(total * wi))) for n, wi in zip(sizes, w, strict=True)]


def select(rows: Iterator[np.ndarray], n: int, k: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Exactly `k` of the `n` rows, each subset equally likely, in one pass (Knuth's selection sampling)."""
    need = k
    for seen, row in enumerate(rows):
        if need == 0:
            return
        if rng.random() * (n - seen) < need:
            need -= 1
            yield row


def folder_rows(folder: Path, data_subset: str | None = None) -> Iterator[np.ndarray]:
    """The rows of a data folder in sorted file order; with `data_subset`, only those Cerebras' reader uses."""
    files = sorted(folder.glob("data-*.h5"))
    if data_subset is None:
        for f in files:
            yield from iter_rows(f)
        return
    sizes = [read_n_examples(f) for f in files]
    ranges = data_subset_rows(sum(sizes), data_subset)
    first = 0
    for f, n in zip(files, sizes, strict=True):
        for a, b in ranges:
            lo, hi = max(a, first) - first, min(b, first + n) - first
            if lo < hi:
                yield from _slice_rows(f, lo, hi)
        first += n


def _slice_rows(path: Path, lo: int, hi: int, batch: int = 256) -> Iterator[np.ndarray]:
    import h5py

    with h5py.File(path, "r") as fh:
        ds = fh["data"]
        for start in range(lo, hi, batch):
            yield from np.asarray(ds[start:min(start + batch, hi)])


def read_n_examples(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as fh:
        return int(fh["data"].shape[0])


def interleave(streams: list[Iterator[np.ndarray]], counts: list[int], rng: np.random.Generator
               ) -> Iterator[np.ndarray]:
    """A uniformly random order of the multiset of sources: pick each next row's source by what remains."""
    left = np.asarray(counts, dtype=np.int64)
    while left.sum() > 0:
        i = np.searchsorted(np.cumsum(left), rng.integers(left.sum()), side="right").item()
        left[i] -= 1
        yield next(streams[i])


def shuffle_buffer(rows: Iterator[np.ndarray], size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    for row in rows:
        if len(buf) < size:
            buf.append(row)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = row
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[j]


def mix_offline(out: Path, cfg: StageConfig, vocab_size: int) -> dict[str, Any]:
    """Write ``out/mixed/`` from the folders and weights of ``out/mixture.yaml``; idempotent."""
    dest = out / MIXED
    mixture = (out / MIXTURE_NAME).read_text(encoding="utf-8")
    entries = yaml.safe_load(mixture)["mixture"]
    done, record = dest / DONE, out / STATE_DIR / "mixed.json"
    # reused only when made from this mixture and every file it wrote is intact (a deleted or damaged file
    # of mixed/ is written again)
    key = {"mixture": text_digest(mixture), "fingerprint": read_metadata(out / entries[0]["data_dir"])["fingerprint"]}
    try:
        state = json.loads(record.read_text(encoding="utf-8"))
        if done.exists() and state["key"] == key and Digests().problem(dest, state["files"]) is None:
            return read_metadata(dest)["composition"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    record.unlink(missing_ok=True)
    if dest.exists():
        shutil.rmtree(dest)  # a killed, stale or damaged mix: start it over, it is a cheap pass
    sizes = [int(e["num_sequences"]) for e in entries]
    counts = plan_counts(sizes, [float(e["weight"]) for e in entries])
    rng = np.random.default_rng([cfg.seed, 0x6D6978])
    streams = [select(folder_rows(out / e["data_dir"], e.get("data_subset")), n, k, rng)
               for e, n, k in zip(entries, sizes, counts, strict=True)]
    first = read_metadata(out / entries[0]["data_dir"])
    pad = int(first["pad_id"])
    writer = ShardedWriter(dest, cfg.seq_len, cfg.samples_per_file)
    stats: dict[str, int] = {}
    for row in shuffle_buffer(interleave(streams, counts, rng), cfg.shuffle_buffer, rng):
        writer.write(row)
        stats = add_stats(stats, row_stats(row[None], pad))
    files = writer.close()
    n_per = [min(cfg.samples_per_file, writer.n_rows - i * cfg.samples_per_file) for i in range(len(files))]
    composition = {e["data_dir"]: k for e, k in zip(entries, counts, strict=True)}
    meta = build_metadata(seq_len=cfg.seq_len, vocab_size=vocab_size, special_tokens=first["special_tokens"],
                          files=list(zip(files, n_per, strict=True)), stats=stats,
                          fingerprint=first["fingerprint"], tokenizer=first["tokenizer"], stage=cfg.stage,
                          composition=composition, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)
    write_metadata(dest, meta)
    starts = np.r_[0, np.cumsum(n_per)[:-1]].tolist() if files else []
    write_json(dest / INDEX_NAME, {"num_sequences": writer.n_rows, "files": [
        {"name": f.name, "first_sample": int(s), "n_examples": n} for f, s, n in zip(files, starts, n_per,
                                                                                   strict=True)]})
    done.write_text("ok\n", encoding="utf-8")
    names = [p.name for p in sorted(dest.iterdir()) if p.is_file()]
    write_json(record, {"key": key, "files": records(dest, names, Digests())})
    return composition
