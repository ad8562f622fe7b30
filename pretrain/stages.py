"""A stage as a sorted plan of shards, and `run_shard`, the one function every executor runs.

One shard = one input file (or hub shard) for one epoch of one source. It reads, selects, tokenizes,
packs, optionally FIMs and writes its rows to its own staging folder, then writes a done-marker. Its RNG
comes from (seed, shard name, epoch) only, so results never depend on how many workers run or in which
order; `outputs.finalize` later numbers the files in plan order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from crystalmix.core.atomic import read_files, write_files, write_json
from crystalmix.core.digest import Digests
from crystalmix.core.errors import UserError
from crystalmix.core.hdf5 import ShardedWriter, add_stats, row_stats
from pretrain import cerebras
from pretrain.config import SourceConfig, StageConfig
from pretrain.documents import BadFileError, Record, Skipped, expand_paths, read_file, read_hub_shard
from pretrain.fim import ContextFim, DocumentFim, FimTokens, Llm360Fim, fresh_text_tokenizer
from pretrain.pack import Packer, to_row
from pretrain.split import keep_document
from pretrain.tokenize import Encoder, cached_encoder, normalize_text, text_encoder

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
    tokenizer_json: str = ""  # the tokenizer itself, for a task that cannot read `tokenizer_path` (`run_detached`)

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
    labels: tuple[str, ...] = ()  # one per path (a hub shard: its one label)

    @property
    def label(self) -> str:
        return ",".join(self.labels)

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


def replay_rows(folder: str, seq_len: int) -> int:
    """Rows in a replayed data folder (the sum of its files' ``n_examples``); a UserError if it is unusable."""
    import h5py

    files = sorted(Path(folder).glob("data-*.h5"))
    if not files:
        raise UserError("replayed folder holds no data-*.h5 files (build that stage first, or fix the path)",
                        path=folder)
    rows = 0
    for f in files:
        try:
            with h5py.File(f, "r") as fh:
                shape = fh["data"].shape
        except (OSError, KeyError) as exc:
            raise UserError(f"cannot read a replayed data file ({exc.__class__.__name__}: {exc})", path=f) from None
        if len(shape) != 3 or shape[2] != seq_len:
            raise UserError(f"replayed rows have shape {shape[1:]}, this stage writes rows of length {seq_len}",
                            path=f)
        rows += shape[0]
    return rows


def plan_files(cfg: StageConfig) -> list[tuple[int, list[str], int]]:
    """Per source: (source index, input files, hub shard count); fails early naming an empty pattern or an
    unusable replayed folder."""
    for entry in cfg.replay:
        for folder in entry.folders:
            replay_rows(folder, cfg.seq_len)
    out = []
    for i, src in enumerate(cfg.sources):
        if src.ftfy:
            cerebras.require_ftfy(src.name)
        if src.hub:
            from pretrain.documents import hub_shard_count

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
                tasks += [ShardTask(ctx, i, epoch, k, (), n_hub, (f"{hub}#{k}",)) for k in range(n_hub)]
                continue
            labels = input_labels(paths)
            step = ctx.cfg.sources[i].files_per_shard
            for k, start in enumerate(range(0, len(paths), step)):
                group = tuple(paths[start:start + step])
                tasks.append(ShardTask(ctx, i, epoch, k, group, 0, tuple(labels[start:start + step])))
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
    # a marker without the digests of its files cannot have its files verified: its shard runs again
    ok = marker.get("fingerprint") == task.ctx.fingerprint and isinstance(marker.get("digests"), dict)
    return marker if ok else None


@dataclass
class _Output:
    """One output folder's packer, FIM pass, writer and counters inside one packing stream."""

    packer: Packer
    writer: ShardedWriter
    fim: ContextFim | Llm360Fim | None
    pad_id: int
    samples_per_file: int
    cerebras: cerebras.RowStats | None = None
    stats: dict[str, int] = field(default_factory=dict)
    file_stats: list[dict[str, int]] = field(default_factory=list)
    rows: int = 0
    doc_rows: list[int] = field(default_factory=list)  # per document: the row holding its EOS label
    doc_raw: list[tuple[int, int]] = field(default_factory=list)  # per document: raw chars and bytes
    parts: deque[tuple[int, int]] = field(default_factory=deque)  # stream spans of documents encoded in parts

    def add(self, ids: np.ndarray, raw_chars: int = 0, raw_bytes: int = 0, whole: bool = True
            ) -> list[tuple[np.ndarray, int]]:
        """Pack one document; remembers which row its last label (its EOS) falls in, and where it lies in
        the stream when it was not encoded as one text (`whole` False)."""
        end = self.packer.position + len(ids) - 1  # stream index of the EOS
        self.doc_rows.append(max(end - 1, 0) // self.packer.seq_len)
        if self.cerebras is not None:
            self.doc_raw.append((raw_chars, raw_bytes))
        if not whole:
            self.parts.append((self.packer.position, end + 1))
        return self.packer.add(ids)

    def whole(self, row: int) -> bool:
        """Whether chunk `row` (stream ids row*L .. row*L + L) holds only documents encoded as one text."""
        start, stop = row * self.packer.seq_len, (row + 1) * self.packer.seq_len + 1
        while self.parts and self.parts[0][1] <= start:  # chunks come in order: spans behind them are done
            self.parts.popleft()
        return not any(a < stop and b > start for a, b in self.parts)

    def write(self, row: np.ndarray) -> None:
        part = row_stats(row[None], self.pad_id)
        self.stats = add_stats(self.stats, part)
        k = self.rows // self.samples_per_file
        if k == len(self.file_stats):
            self.file_stats.append({})
        self.file_stats[k] = add_stats(self.file_stats[k], part)
        if self.cerebras is not None:
            self.cerebras.add(row, k)
        self.writer.write(row)
        self.rows += 1

    def blocks(self) -> list[dict[str, Any]]:
        """Per written file: its rows' statistics and the documents whose EOS label it holds.

        A document whose end fell in a dropped tail is in no file, so it is counted nowhere.
        """
        rows = np.asarray(self.doc_rows, dtype=np.int64)
        files = len(self.file_stats)
        inside = rows < self.rows
        block = rows[inside] // self.samples_per_file
        docs = np.bincount(block, minlength=files)
        out: list[dict[str, Any]] = [{"documents": int(docs[i]), "stats": self.file_stats[i]} for i in range(files)]
        if self.cerebras is not None:
            raw = np.asarray(self.doc_raw, dtype=np.int64).reshape(-1, 2)[inside]
            chars = np.bincount(block, weights=raw[:, 0], minlength=files)
            size = np.bincount(block, weights=raw[:, 1], minlength=files)
            for i, b in enumerate(out):
                b["cerebras"] = {**self.cerebras.totals[i], "raw_chars_count": int(chars[i]),
                                 "raw_bytes_count": int(size[i])}
        return out


def _streams(task: ShardTask, exclude: frozenset[str], per_file: bool) -> Iterator[tuple[str, Iterator[Record]]]:
    """(input label, records) of each packing stream: the whole shard, or each input file on its own.

    Per-file streams make every packed row independent of how inputs are grouped into shards, which the
    file-parity halves need (a row's half must not depend on `files_per_shard`).
    """
    src = task.source
    if not task.paths:
        assert src.hub is not None
        yield task.label, read_hub_shard(src.hub, src.hub_split, task.file_index, task.hub_shards,
                                         src.text_field, src.subset_field)
        return
    paths = [(p, lab) for p, lab in zip(task.paths, task.labels, strict=True) if p not in exclude]
    if per_file:
        for path, lab in paths:
            yield lab, read_file(path, src.text_field, src.subset_field)
        return
    yield task.label, (rec for path, _ in paths for rec in read_file(path, src.text_field, src.subset_field))


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Build one shard (or return its marker if already done); returns the marker's content."""
    done = read_marker(task)
    if done is not None:
        return {**done, "resumed": True}
    return _run_new(task)


def detached(tasks: Iterable[ShardTask]) -> Iterator[ShardTask]:
    """`tasks` as sent to a node without this disk: their context carries the tokenizer's JSON (read once)."""
    ctxs: dict[int, StageContext] = {}  # a plan's tasks share one context
    for task in tasks:
        if id(task.ctx) not in ctxs:
            text = Path(task.ctx.tokenizer_path).read_text(encoding="utf-8")
            ctxs[id(task.ctx)] = dataclasses.replace(task.ctx, tokenizer_json=text)
        yield dataclasses.replace(task, ctx=ctxs[id(task.ctx)])


def run_detached(task: ShardTask) -> tuple[dict[str, Any], dict[str, bytes]]:
    """`run_shard` on a node without the driver's disk (the driver has checked the marker): the shard is
    built in a temporary folder of its own, and its marker and files' bytes (by their paths relative to
    the stage folder) are returned for `land` to write there. `task` comes from `detached`."""
    with tempfile.TemporaryDirectory(prefix="crystalmix-shard-") as tmp:
        marker = _run_new(dataclasses.replace(task, ctx=dataclasses.replace(task.ctx, out_dir=tmp)))
        return marker, read_files(tmp, list(marker["digests"]))


def land(task: ShardTask, marker: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """Write what `run_detached` returned into the stage folder, the marker last (as `run_shard` does)."""
    if task.staging.exists():
        shutil.rmtree(task.staging)  # a killed attempt's files
    write_files(task.ctx.out_dir, files)
    write_json(task.marker, marker)
    return marker


def _run_new(task: ShardTask) -> dict[str, Any]:
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
    # size and content of every file written, so a later run reuses them only intact (outputs.finalize)
    digests = Digests()
    body["digests"] = {rel: digests.record(Path(task.ctx.out_dir, rel))
                       for o in body["outputs"].values() for rel in o["files"]}
    body.update({"shard": task.name, "input": task.label,
                 "fingerprint": task.ctx.fingerprint, "seconds": round(time.perf_counter() - start, 3)})
    write_json(task.marker, body)
    return body


Selected = tuple[str, str, int, int]  # output name, text, raw characters and bytes (cerebras mode only)


def select_documents(records: Iterable[Record], src: SourceConfig, cfg: StageConfig,
                     skipped: Counter[str], rewritten: Counter[str] | None = None) -> Iterator[Selected]:
    """(output name, text, raw chars, raw bytes) of every document this stage keeps; the others are counted
    by reason, and documents ftfy changed are counted in `rewritten`."""
    half = src.half if cfg.split_method == "hash" else None  # file parity acts on packed files instead
    raw_size = cfg.tokenization == "cerebras"  # for data_params.json's raw_chars_count / raw_bytes_count
    for rec in records:
        if isinstance(rec, Skipped):
            skipped[rec.reason] += 1
            continue
        sub = src.subset_for(rec.subset)
        if sub is None:
            skipped["excluded_subset"] += 1
            continue
        text = rec.text
        if src.ftfy:
            text = cerebras.fix_text(text)
            if rewritten is not None and text != rec.text:
                rewritten["ftfy_changed"] += 1
        text = normalize_text(text) if cfg.normalize else text
        ok, why = keep_document(text, cfg.split_seed, half, src.fraction)
        if not ok:
            skipped[why] += 1
            continue
        if raw_size:
            yield sub.name, text, len(rec.text), len(rec.text.encode("utf-8"))
        else:
            yield sub.name, text, 0, 0


def batched(items: Iterable[Selected], max_docs: int = BATCH_DOCS, max_chars: int = BATCH_CHARS
            ) -> Iterator[list[Selected]]:
    """Batches for `encode_batch`: bounded in documents and characters, so memory stays flat."""
    batch: list[Selected] = []
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
    """Counts the records passing through (documents read, good or bad), over successive streams."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records, self.n = records, 0

    def __iter__(self) -> Iterator[Record]:
        for rec in self.records:
            self.n += 1
            yield rec


def _build(task: ShardTask, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    cfg, src, sp = task.ctx.cfg, task.source, task.ctx.special
    if task.ctx.tokenizer_json:
        enc = text_encoder(task.ctx.tokenizer_json, sp["eos"], cfg.max_doc_chars)
    else:
        enc = cached_encoder(task.ctx.tokenizer_path, sp["eos"], cfg.max_doc_chars)
    fim_tokens = FimTokens.from_specials(sp) if src.fim.rate > 0 else None
    mode = src.fim.mode if fim_tokens is not None else None
    doc_fim = DocumentFim(enc, src.fim, fim_tokens) if fim_tokens and mode == "document" else None
    fims: list[ContextFim | DocumentFim | Llm360Fim] = [doc_fim] if doc_fim else []
    rng = shard_rng(cfg.seed, task)
    per_file = cfg.split_method == "file_parity"
    cerebras_mode = cfg.tokenization == "cerebras"
    skipped: Counter[str] = Counter()
    rewritten: Counter[str] = Counter()
    counted = _Counted(())
    outputs: dict[str, dict[str, Any]] = {
        output_folder(sub.name, task.epoch): {"files": [], "rows": [], "blocks": [], "stats": {}, "documents": 0}
        for sub in src.outputs()}
    for k, (label, records) in enumerate(_streams(task, exclude, per_file)):
        outs = {sub.name: _Output(Packer(cfg.seq_len, sp["pad"], cfg.tail),
                                  ShardedWriter(task.staging / sub.name / (f"{k:05d}" if per_file else ""),
                                                cfg.seq_len, cfg.samples_per_file),
                                  _row_fim(task, enc, mode, fim_tokens), sp["pad"],
                                  cfg.samples_per_file,
                                  cerebras.RowStats(sp["eos"], sp["pad"], enc) if cerebras_mode else None)
                for sub in src.outputs()}
        fims += [o.fim for o in outs.values() if o.fim]
        counted.records = records
        try:
            for batch in batched(select_documents(counted, src, cfg, skipped, rewritten)):
                texts = [t for _, t, _, _ in batch]
                if doc_fim:
                    encoded: Iterable[np.ndarray] = doc_fim.encode(texts, rng)
                elif cerebras_mode:
                    encoded = cerebras.encode_documents(enc.doc, texts, sp["bos"], sp["eos"])
                else:
                    encoded = enc.encode_docs(texts)
                for (name, text, chars, size), ids in zip(batch, encoded, strict=True):
                    if len(ids) - 1 - int(cerebras_mode) < cfg.min_sequence_len:  # BOS and EOS are not text
                        skipped["too_short"] += 1
                        continue
                    whole = not cerebras_mode and not enc.splits(text)
                    _emit(outs[name], outs[name].add(ids, chars, size, whole), rng)
            for name, out in sorted(outs.items()):
                _emit(out, out.packer.finish(), rng)
                files = out.writer.close()
                blocks = out.blocks()
                entry = outputs[output_folder(name, task.epoch)]
                entry["files"] += [str(f.relative_to(Path(task.ctx.out_dir))) for f in files]
                entry["rows"] += [b["stats"]["num_sequences"] for b in blocks]
                entry["blocks"] += [{"input": label, "index": i, **b} for i, b in enumerate(blocks)]
                entry["stats"] = add_stats(entry["stats"], out.stats)
                entry["documents"] += sum(b["documents"] for b in blocks)
        except BaseException:
            for out in outs.values():
                out.writer.abort()
            raise
    fim_stats: dict[str, int] = {}
    for f in fims:
        fim_stats = {key: fim_stats.get(key, 0) + v for key, v in f.stats.as_dict().items()}
    return {"outputs": outputs, "skipped": dict(sorted(skipped.items())), "documents": counted.n,
            "fim": fim_stats, "rewritten": dict(sorted(rewritten.items()))}


def _row_fim(task: ShardTask, enc: Encoder, mode: str | None, tokens: FimTokens | None
             ) -> ContextFim | Llm360Fim | None:
    """The FIM pass applied to packed rows, one per output folder (each keeps its own counts)."""
    if tokens is None or mode == "document":
        return None
    if mode == "llm360":
        tok = fresh_text_tokenizer(task.ctx.tokenizer_path, task.ctx.tokenizer_json)
        return Llm360Fim(tok, task.source.fim, tokens)
    return ContextFim(enc, task.source.fim, tokens)


def _emit(out: _Output, chunks: list[tuple[np.ndarray, int]], rng: np.random.Generator) -> None:
    """Chunks -> FIM -> rows -> the stream's writer."""
    for chunk, valid in chunks:
        if isinstance(out.fim, Llm360Fim):  # LLM360's pass works on the row of L inputs
            out.write(out.fim.apply_row(to_row(chunk, valid), rng))
            continue
        if out.fim is not None:
            chunk, valid = out.fim.apply(chunk, valid, rng, out.whole(out.rows))
        out.write(to_row(chunk, valid))


def set_worker_env() -> None:
    """One tokenizer thread per worker: N workers then mean N cores, and the scaling figures stay honest."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
