"""A stage as a sorted plan of shards, and `run_shard`, the one function every executor runs.

One shard = one input file (or hub shard) for one epoch of one source. It reads, selects, tokenizes,
packs, optionally FIMs and writes its rows to its own staging folder, then writes a done-marker. Its RNG
comes from (seed, shard name, epoch) only, so results never depend on how many workers run or in which
order; `outputs.finalize` later numbers the files in plan order.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from crystalmix.core.atomic import write_json
from crystalmix.core.errors import UserError
from crystalmix.core.hdf5 import ShardedWriter, add_stats, row_stats
from pretrain.config import SourceConfig, StageConfig
from pretrain.fim import ContextFim, DocumentFim, FimTokens
from pretrain.pack import Packer, to_row
from pretrain.sources import BadFileError, Record, Skipped, expand_paths, read_file, read_hub_shard
from pretrain.split import keep_document, keep_row_by_file_parity
from pretrain.tokenize import cached_encoder, normalize_text

STATE_DIR = ".state"
BATCH_DOCS = 256
BATCH_CHARS = 2_000_000


@dataclass(frozen=True, slots=True)
class StageContext:
    """What every shard of a stage shares (small and picklable: it travels to Ray workers)."""

    cfg: StageConfig
    out_dir: str
    tokenizer_path: str
    specials: tuple[tuple[str, int], ...]
    fingerprint: str
    skip_bad_files: bool = False

    @property
    def special(self) -> dict[str, int]:
        return dict(self.specials)


@dataclass(frozen=True, slots=True)
class ShardTask:
    ctx: StageContext
    source_index: int
    epoch: int
    file_index: int
    paths: tuple[str, ...] = ()
    hub_shards: int = 0
    label: str = ""

    @property
    def source(self) -> SourceConfig:
        return self.ctx.cfg.sources[self.source_index]

    @property
    def name(self) -> str:
        return f"{self.source.name}/epoch-{self.epoch}/{self.file_index:05d}"

    @property
    def marker(self) -> Path:
        return Path(self.ctx.out_dir, STATE_DIR, self.name + ".done.json")

    @property
    def staging(self) -> Path:
        return Path(self.ctx.out_dir, STATE_DIR, self.name)


def output_folder(subset_name: str, epoch: int) -> str:
    return f"{subset_name}/epoch-{epoch}"


def plan_files(cfg: StageConfig) -> list[tuple[int, list[str], int]]:
    """Per source: (source index, input files, hub shard count); fails early naming an empty pattern."""
    out = []
    for i, src in enumerate(cfg.sources):
        if src.hub:
            from pretrain.sources import hub_shard_count

            out.append((i, [], hub_shard_count(src.hub, src.hub_split)))
            continue
        files = expand_paths(src.paths)
        if not files:
            raise UserError(f"source {src.name!r}: no input files match {list(src.paths)}")
        out.append((i, files, 0))
    return out


def make_plan(ctx: StageContext, files: list[tuple[int, list[str], int]]) -> list[ShardTask]:
    """The sorted shard plan: source order, then epoch, then sorted file order."""
    tasks = []
    for i, paths, n_hub in files:
        for epoch in range(ctx.cfg.sources[i].epochs):
            if n_hub:
                hub = ctx.cfg.sources[i].hub
                tasks += [ShardTask(ctx, i, epoch, k, (), n_hub, f"{hub}#{k}") for k in range(n_hub)]
                continue
            labels = input_labels(paths)
            step = ctx.cfg.sources[i].files_per_shard
            for k, start in enumerate(range(0, len(paths), step)):
                group = tuple(paths[start:start + step])
                tasks.append(ShardTask(ctx, i, epoch, k, group, 0, ",".join(labels[start:start + step])))
    return tasks


def input_labels(paths: list[str]) -> list[str]:
    """Input names relative to the source's common folder: stable across machines and checkouts."""
    if len(paths) <= 1:
        return [Path(p).name for p in paths]
    root = os.path.commonpath(paths)
    return [os.path.relpath(p, root) for p in paths]


def shard_rng(seed: int, task: ShardTask) -> np.random.Generator:
    key = xxhash.xxh64_intdigest(f"{task.source.name}/{task.file_index}".encode())
    return np.random.default_rng([seed, key, task.epoch])


def read_marker(task: ShardTask) -> dict[str, Any] | None:
    """The shard's done-marker if it finished under the current fingerprint."""
    try:
        marker = json.loads(task.marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return marker if marker.get("fingerprint") == task.ctx.fingerprint else None


@dataclass
class _Output:
    """One output folder's packer, FIM pass, writer and counters inside a shard."""

    packer: Packer
    writer: ShardedWriter
    fim: ContextFim | None
    pad_id: int
    stats: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    rows_seen: int = 0


def _records(task: ShardTask, exclude: frozenset[str] = frozenset()) -> Iterator[Record]:
    src = task.source
    if not task.paths:
        assert src.hub is not None
        yield from read_hub_shard(src.hub, src.hub_split, task.file_index, task.hub_shards,
                                  src.text_field, src.subset_field)
        return
    for path in task.paths:
        if path not in exclude:
            yield from read_file(path, src.text_field, src.subset_field)


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Build one shard (or return its marker if already done); returns the marker's content."""
    done = read_marker(task)
    if done is not None:
        return {**done, "resumed": True}
    start = time.perf_counter()
    if task.staging.exists():
        shutil.rmtree(task.staging)  # a killed attempt: its files are incomplete by definition
    bad: dict[str, str] = {}
    while True:  # with --skip-bad-files, a shard is rebuilt without each bad file it meets
        try:
            body = _build(task, frozenset(bad))
            break
        except BadFileError as exc:
            shutil.rmtree(task.staging, ignore_errors=True)
            if not task.ctx.skip_bad_files or exc.path is None or exc.path in bad:
                raise
            bad[exc.path] = str(exc)
    body["bad_files"] = [bad[p] for p in sorted(bad)]
    body.update({"shard": task.name, "input": task.label,
                 "fingerprint": task.ctx.fingerprint, "seconds": round(time.perf_counter() - start, 3)})
    write_json(task.marker, body)
    return body


def select_documents(records: Iterable[Record], src: SourceConfig, cfg: StageConfig,
                     skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    """(output name, text) of every document this stage keeps; the others are counted by reason."""
    half = src.half if cfg.split_method == "hash" else None  # file parity acts on rows instead
    for rec in records:
        if isinstance(rec, Skipped):
            skipped[rec.reason] += 1
            continue
        sub = src.subset_for(rec.subset)
        if sub is None:
            skipped["excluded_subset"] += 1
            continue
        text = normalize_text(rec.text) if cfg.normalize else rec.text
        ok, why = keep_document(text, cfg.split_seed, half, src.fraction)
        if not ok:
            skipped[why] += 1
            continue
        yield sub.name, text


def batched(items: Iterable[tuple[str, str]], max_docs: int = BATCH_DOCS, max_chars: int = BATCH_CHARS
            ) -> Iterator[list[tuple[str, str]]]:
    """Batches for `encode_batch`: bounded in documents and characters, so memory stays flat."""
    batch: list[tuple[str, str]] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(item[1])
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _Counted:
    """Counts the records passing through (documents read, good or bad)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records, self.n = records, 0

    def __iter__(self) -> Iterator[Record]:
        for rec in self.records:
            self.n += 1
            yield rec


def _build(task: ShardTask, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    cfg, src, sp = task.ctx.cfg, task.source, task.ctx.special
    enc = cached_encoder(task.ctx.tokenizer_path, sp["eos"], cfg.max_doc_chars)
    fim_tokens = FimTokens.from_specials(sp) if src.fim.rate > 0 else None
    context_fim = fim_tokens is not None and src.fim.mode == "context"
    rng = shard_rng(cfg.seed, task)
    outs = {sub.name: _Output(Packer(cfg.seq_len, sp["pad"], cfg.tail),
                              ShardedWriter(task.staging / sub.name, cfg.seq_len, cfg.samples_per_file),
                              ContextFim(enc, src.fim, fim_tokens) if context_fim else None, sp["pad"])
            for sub in src.outputs()}
    doc_fim = DocumentFim(enc, src.fim, fim_tokens) if fim_tokens and not context_fim else None
    parity = src.half if cfg.split_method == "file_parity" else None
    skipped: Counter[str] = Counter()
    records = _Counted(_records(task, exclude))
    try:
        for batch in batched(select_documents(records, src, cfg, skipped)):
            texts = [t for _, t in batch]
            encoded = doc_fim.encode(texts, rng) if doc_fim else iter(enc.encode_docs(texts))
            for (name, _), ids in zip(batch, encoded, strict=True):
                if len(ids) - 1 < cfg.min_sequence_len:
                    skipped["too_short"] += 1
                    continue
                outs[name].documents += 1
                _emit(outs[name], outs[name].packer.add(ids), parity, cfg.samples_per_file, rng)
        outputs = {}
        for name, out in sorted(outs.items()):
            _emit(out, out.packer.finish(), parity, cfg.samples_per_file, rng)
            files = out.writer.close()
            outputs[output_folder(name, task.epoch)] = {
                "files": [str(f.relative_to(Path(task.ctx.out_dir))) for f in files],
                "rows": [min(cfg.samples_per_file, out.writer.n_rows - i * cfg.samples_per_file)
                         for i in range(len(files))],
                "stats": out.stats, "documents": out.documents,
            }
    except BaseException:
        for out in outs.values():
            out.writer.abort()
        raise
    fim_stats: dict[str, int] = {}
    for f in [o.fim for o in outs.values() if o.fim] + ([doc_fim] if doc_fim else []):
        fim_stats = {k: fim_stats.get(k, 0) + v for k, v in f.stats.as_dict().items()}
    return {"outputs": outputs, "skipped": dict(sorted(skipped.items())), "documents": records.n,
            "fim": fim_stats}


def _emit(out: _Output, chunks: list[tuple[np.ndarray, int]], parity: int | None, per_file: int,
          rng: np.random.Generator) -> None:
    """Chunks -> (file-parity selection) -> FIM -> rows -> the shard's writer."""
    for chunk, valid in chunks:
        index = out.rows_seen
        out.rows_seen += 1
        if parity is not None and not keep_row_by_file_parity(index, per_file, parity):
            continue
        if out.fim is not None:
            chunk, valid = out.fim.apply(chunk, valid, rng)
        row = to_row(chunk, valid)
        out.writer.write(row)
        out.stats = add_stats(out.stats, row_stats(row[None], out.pad_id))


def set_worker_env() -> None:
    """One tokenizer thread per worker: N workers then mean N cores, and the scaling figures stay honest."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
