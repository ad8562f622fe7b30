"""Conversations to token ids and loss masks: the build's last stage and `crystalmix encode`.

The stage (`run_tokenize`) writes packed training files (HDF5 or Megatron JSONL), ``metadata.json`` and the
rejects of conversations that give no training example. Encoding runs in worker processes over fixed-size
batches, and results are consumed in input order, so the output never depends on the number of workers.
Packed rows are spilled to a raw file, then written out in a seeded order; the spill and each finished data
file survive an interruption, so a rerun resumes.

`encode_file` is `crystalmix encode`: one interchange file to one ``{id, input_ids, loss_mask}`` line per
conversation, with the same contract as `convert`: a bad record is a reject with a reason, never the end
of the run, and ``read == kept + rejected``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core import hdf5
from crystalmix.core.atomic import atomic_open, atomic_path, sweep_temporaries, write_json
from crystalmix.core.config import Inline, at_least, between, build, non_empty, one_of, spec
from crystalmix.core.digest import Digests, hasher, records
from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, Rejected, RejectWriter, rejects_path_for
from crystalmix.core.tokenizer import (
    DEMO,
    demo_tokenizer_id,
    load_tokenizer,
    local_tokenizer_problem,
    special_token_ids,
)
from crystalmix.core.workers import WorkerPool
from sft_builder.chat import TOKENIZER_TEMPLATE, ChatEncoder, Encoded, load_template
from sft_builder.pack import PACKINGS, PackStats, pack
from sft_builder.report_data import add as hist_add
from sft_builder.report_data import length_bin

OUTPUTS = ("hdf5", "megatron-jsonl")
REJECTS_NAME = "rejects.jsonl"  # beside the training files: conversations that give no training example
DONE_NAME = ".done.json"  # written last: the fingerprint, and the size and digest of every file of the folder
BATCH = 256  # conversations per encoding task; fixed so batching never shows in the output


@dataclass(frozen=True)
class TokenizeConfig:
    """The ``tokenize:`` section of a build manifest (`tokenizer` and `template` paths: from its folder)."""

    tokenizer: str = field(default="demo", metadata=spec(non_empty, path="exists"))
    template: str = field(default="crystalchat", metadata=spec(non_empty, path="named"))
    seq_len: int = field(default=2048, metadata=spec(between(8, 1 << 20)))
    packing: str = field(default="bfd", metadata=spec(one_of(*PACKINGS)))
    output: str = field(default="hdf5", metadata=spec(one_of(*OUTPUTS)))
    samples_per_file: int = field(default=50_000, metadata=spec(at_least(1)))
    train_on: str = field(default="all", metadata=spec(one_of("all", "last")))
    train_on_prompt: bool = False
    shuffle: bool = True
    pack_buffer: int = field(default=20_000, metadata=spec(at_least(1)))
    system_prompt: str | None = None
    workers: int = field(default=0, metadata=spec(at_least(0)))  # 0 = all cores; does not change the output
    # HDF5 only: a 4th row, Cerebras' attention mask (1 on padding). It hides padding from attention; it cannot
    # keep packed conversations apart (one value per position), which `segment_ids` beside it does.
    attention_mask: bool = False

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "tokenize") -> TokenizeConfig:
        """Parse and check settings given outside a manifest; errors name the key (``tokenize.packing: ...``)."""
        return build(cls, raw, Inline(where))

    def problems(self) -> Iterator[tuple[str, str]]:
        """Files named here must be what they claim, found now rather than after the build's other stages."""
        if self.template.endswith(".jinja") and not Path(self.template).is_file():
            yield "template", (f"template file not found: {self.template} (a relative path is read from the "
                               "manifest's folder)")
        elif self.template != TOKENIZER_TEMPLATE:
            try:
                load_template(self.template)
            except UserError as exc:
                yield "template", str(exc)
        if self.attention_mask and self.output != "hdf5":
            yield "attention_mask", "the attention-mask row is part of the HDF5 format: set output: hdf5"
        tok = Path(self.tokenizer)
        if self.tokenizer != DEMO and tok.exists():
            why = local_tokenizer_problem(tok)
            if why:
                yield "tokenizer", f"{tok}: {why}"

    def identity(self) -> dict[str, Any]:
        """The settings that shape the output (for fingerprints): everything but ``workers``."""
        d = asdict(self)
        d.pop("workers")
        if not d["attention_mask"]:  # the 3-row default keeps the fingerprints it always had
            d.pop("attention_mask")
        return d

    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


# -- encoding, in parallel and in order ---------------------------------------------------------------
_WORKER: ChatEncoder | None = None


def make_encoder(cfg: TokenizeConfig, tokenizer: Any | None = None) -> ChatEncoder:
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer)
    enc = ChatEncoder(tok, load_template(cfg.template, tok), train_on=cfg.train_on,  # type: ignore[arg-type]
                      train_on_prompt=cfg.train_on_prompt)
    if cfg.system_prompt is not None:
        enc.template_vars["default_system_prompt"] = cfg.system_prompt
    return enc


@lru_cache(maxsize=2)
def encoder_for(cfg: TokenizeConfig) -> ChatEncoder:
    """The encoder of `cfg`, made once per process: for tasks that arrive with their settings (the build's
    executor sends each a part of a parquet shard) instead of a worker made for one stage."""
    return make_encoder(cfg)


def _init_worker(cfg: TokenizeConfig) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER = make_encoder(cfg)


def _encode_task(batch: list[Conversation]) -> list[Encoded | Rejected]:
    assert _WORKER is not None
    return _WORKER.encode(batch)


def batches(items: Iterable[Conversation], size: int) -> Iterator[list[Conversation]]:
    batch: list[Conversation] = []
    for c in items:
        batch.append(c)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_stream(conversations: Iterable[Conversation], cfg: TokenizeConfig,
                  encoder: ChatEncoder | None = None) -> Iterator[Encoded | Rejected]:
    """Encode a stream in input order, one result per conversation; memory holds at most a few batches per
    worker."""
    workers = cfg.n_workers()
    if workers <= 1:
        enc = encoder or make_encoder(cfg)
        for batch in batches(conversations, BATCH):
            yield from enc.encode(batch)
        return
    # A worker that cannot start (a template or tokenizer failing to load) fails its first task with
    # that error, and one that dies breaks the pool: either ends the run, neither hangs it.
    with WorkerPool(workers, start="fork", initializer=_init_worker, initargs=(cfg,)) as pool:
        pending: deque[Future[list[Encoded | Rejected]]] = deque()
        for batch in batches(conversations, BATCH):
            pending.append(pool.submit(_encode_task, batch))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


# -- the stage ------------------------------------------------------------------------------------------
@dataclass
class _SourceStats:
    conversations: int = 0  # records encoded, documents included
    tokens: int = 0
    trained_tokens: int = 0
    max_tokens: int = 0
    length_hist: dict[str, int] = field(default_factory=dict)  # tokens per conversation, `length_bin` keys
    documents: int = 0


def run_tokenize(conversations: Iterable[Conversation], cfg: TokenizeConfig, out_dir: Path, *, seed: int,
                 fingerprint: str, encodings: Iterable[Encoded | Rejected] | None = None) -> dict[str, Any]:
    """Write the packed training files, ``rejects.jsonl`` and ``metadata.json`` into `out_dir`; returns the
    report's stats. `encodings`, when given, is the stream of `conversations` already encoded elsewhere (one
    result per conversation, in order: the build's executor encodes in tasks), packed here instead; it is
    read only when the encoding pass has to run.

    A folder finished under `fingerprint` whose files are all intact (sizes and digests recorded in
    ``.done.json``) is left alone (``skipped: true``); otherwise the pieces an interrupted run with the same
    fingerprint finished, and that are still intact, are reused, and the rest is written again.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / hdf5.METADATA_NAME
    rejects = out_dir / REJECTS_NAME
    digests = Digests()
    report = finished(out_dir, fingerprint, digests)
    if report is not None:
        return {**report, "skipped": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out_dir)
    (out_dir / DONE_NAME).unlink(missing_ok=True)  # the folder is about to change
    spill, spill_meta = out_dir / f".rows-{fingerprint}.bin", out_dir / f".rows-{fingerprint}.json"
    for stale in [*out_dir.glob(".rows-*"), meta_path]:  # leftovers of another configuration
        if stale not in (spill, spill_meta):
            stale.unlink(missing_ok=True)
    # the encoding pass is reused only when the rows and rejects it wrote are intact
    encoded = _read_json(spill_meta)
    if "report" not in encoded or digests.problem(out_dir, encoded.get("outputs", {})) is not None:
        spill_meta.unlink(missing_ok=True)
        for old in _data_files(out_dir):
            old.unlink()
        encoded = {}
    tok = load_tokenizer(cfg.tokenizer)
    specials = special_token_ids(tok)
    if encoded:
        report = encoded["report"]
    else:
        report, spill_record = _encode_and_pack(conversations, cfg, tok, specials, spill, rejects, encodings)
        outputs = {spill.name: spill_record, REJECTS_NAME: digests.record(rejects)}
        write_json(spill_meta, {"report": report, "outputs": outputs, "written": {}})
    n_rows = int(report["rows"])
    order = np.arange(n_rows)
    if cfg.shuffle:
        order = np.random.default_rng([seed, 0x5F7]).permutation(n_rows)
    rows = np.memmap(spill, dtype=np.int32, mode="r", shape=(n_rows, 4, cfg.seq_len)) if n_rows else None
    files, totals = _write_outputs(rows, order, cfg, out_dir, specials["pad"], spill_meta, digests)
    report["files"] = len(files)
    report.update(totals)
    meta = hdf5.build_metadata(
        seq_len=cfg.seq_len, vocab_size=len(tok), special_tokens=specials, files=files, stats=totals,
        fingerprint=fingerprint, tokenizer=cfg.tokenizer, template=cfg.template, packing=cfg.packing,
        output=cfg.output, seed=seed, config=cfg.identity(), per_source=report["per_source"], report=report,
        # which bundled demo tokenizer (by content hash), so `inspect` can tell a file from another release
        demo_tokenizer=demo_tokenizer_id() if cfg.tokenizer == DEMO else None,
    )
    hdf5.write_metadata(out_dir, meta)
    del rows
    names = [*(name for name, _ in files), REJECTS_NAME, hdf5.METADATA_NAME]
    write_json(out_dir / DONE_NAME, {"fingerprint": fingerprint, "files": records(out_dir, names, digests)})
    spill.unlink(missing_ok=True)  # after the marker: a run killed before it still has the rows to resume
    spill_meta.unlink(missing_ok=True)
    return {**report, "skipped": False}


def finished(out_dir: Path, fingerprint: str, digests: Digests | None = None) -> dict[str, Any] | None:
    """The report of a folder finished under `fingerprint` whose files are all intact, else None."""
    done = _read_json(Path(out_dir) / DONE_NAME)
    if done.get("fingerprint") != fingerprint or not isinstance(done.get("files"), dict):
        return None
    if (digests or Digests()).problem(out_dir, done["files"]) is not None:
        return None
    report = _read_json(Path(out_dir) / hdf5.METADATA_NAME).get("report")
    return report if isinstance(report, dict) else None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing or damaged (then what it described is redone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _data_files(out_dir: Path) -> list[Path]:
    return sorted([*out_dir.glob("data-*.h5"), *out_dir.glob("data-*.jsonl")])


def _encode_and_pack(conversations: Iterable[Conversation], cfg: TokenizeConfig, tok: Any, specials: dict[str, int],
                     spill: Path, rejects_path: Path, encodings: Iterable[Encoded | Rejected] | None = None,
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode (unless `encodings` are given) and pack into the spill file; returns the report and the spill's
    size and digest."""
    per_source: dict[str, _SourceStats] = defaultdict(_SourceStats)
    if encodings is None:
        encoder = make_encoder(cfg, tok) if cfg.n_workers() <= 1 else None
        encodings = encode_stream(conversations, cfg, encoder)
    rejects = RejectWriter(rejects_path)

    def kept() -> Iterator[Encoded]:
        for item in encodings:
            if isinstance(item, Rejected):
                rejects.write(item)
                continue
            s = per_source[item.source]
            s.conversations += 1
            s.documents += item.document
            s.tokens += len(item.input_ids)
            s.trained_tokens += int(item.loss_mask.sum())
            s.max_tokens = max(s.max_tokens, len(item.input_ids))
            hist_add(s.length_hist, length_bin(len(item.input_ids)))
            yield item

    stats = PackStats()
    digest, size = hasher(), 0
    with rejects, atomic_path(spill) as tmp, open(tmp, "wb") as fh:
        block: list[np.ndarray] = []
        rows = pack(kept(), cfg.packing, cfg.seq_len, specials["pad"], stats, cfg.pack_buffer)  # type: ignore[arg-type]
        for row in rows:
            block.append(row)
            if len(block) == hdf5.WRITE_BATCH:
                size += _write_block(fh, block, digest)
                block = []
        if block:
            size += _write_block(fh, block, digest)
    if stats.rows == 0:  # e.g. a tiny test split under llm360 packing: an empty, valid folder, not an error
        stats.counts["no_rows"] = 1
    report = {
        "conversations": sum(s.conversations for s in per_source.values()),
        "dropped": dict(sorted(rejects.counts.items())),
        "packing": cfg.packing,
        "seq_len": cfg.seq_len,
        "packing_stats": stats.as_dict(),
        "packing_efficiency": round(stats.efficiency, 6),
        "rows": stats.rows,
        "per_source": {k: asdict(v) for k, v in sorted(per_source.items())},
    }
    return report, {"size": size, "xxh3": digest.hexdigest()}


def _write_block(fh: Any, block: list[np.ndarray], digest: Any) -> int:
    data = np.stack(block).tobytes()
    fh.write(data)
    digest.update(data)
    return len(data)


def _write_outputs(rows: np.ndarray | None, order: np.ndarray, cfg: TokenizeConfig, out_dir: Path, pad_id: int,
                   progress: Path, digests: Digests) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Write rows in `order`, `samples_per_file` per file. A file an interrupted run finished is kept when it
    is intact (its size and digest are recorded under ``written`` in the `progress` file); any other is
    written again."""
    files: list[tuple[str, int]] = []
    totals = dict.fromkeys(hdf5.STAT_KEYS, 0)
    state = _read_json(progress)
    written: dict[str, Any] = state.get("written", {})
    per = cfg.samples_per_file
    for index, start in enumerate(range(0, len(order), per)):
        idx = order[start:start + per]
        assert rows is not None
        suffix = ".h5" if cfg.output == "hdf5" else ".jsonl"
        path = out_dir / (hdf5.file_name(index).removesuffix(".h5") + suffix)
        for b in range(0, len(idx), hdf5.WRITE_BATCH):
            block = np.asarray(rows[idx[b:b + hdf5.WRITE_BATCH]])
            totals = hdf5.add_stats(totals, hdf5.row_stats(block[:, :3], pad_id))
        files.append((path.name, len(idx)))
        if path.name in written and digests.problem(out_dir, {path.name: written[path.name]}) is None:
            continue
        if cfg.output == "hdf5":
            _write_h5(path, rows, idx, cfg.seq_len, cfg.attention_mask)
        else:
            _write_jsonl(path, rows, idx)
        written[path.name] = digests.record(path)
        write_json(progress, {**state, "written": written})
    return files, totals


def _batched_rows(rows: np.ndarray, idx: np.ndarray) -> Iterator[np.ndarray]:
    for b in range(0, len(idx), hdf5.WRITE_BATCH):
        yield np.asarray(rows[idx[b:b + hdf5.WRITE_BATCH]])


def _write_h5(path: Path, rows: np.ndarray, idx: np.ndarray, seq_len: int, attention_mask: bool = False) -> None:
    w = hdf5.ShardedWriter(path.parent, seq_len=seq_len, samples_per_file=len(idx) + 1, with_segments=True,
                           first_index=int(path.stem.split("-")[1]), attention_mask=attention_mask)
    try:
        for block in _batched_rows(rows, idx):
            for r in block:
                if attention_mask:  # segment 0 is padding
                    w.write(np.concatenate([r[:3], hdf5.attention_row(r[3] == 0)[None, :]]), r[3])
                else:
                    w.write(r[:3], r[3])
        w.close()
    except BaseException:
        w.abort()
        raise


def _write_jsonl(path: Path, rows: np.ndarray, idx: np.ndarray) -> None:
    with atomic_open(path) as fh:
        for block in _batched_rows(rows, idx):
            for r in block:
                # LLM360's key order and separators (their sample's bytes): token_ids, loss_mask, label_ids
                fh.write(json.dumps({"token_ids": r[0].tolist(), "loss_mask": r[1].tolist(),
                                     "label_ids": r[2].tolist()}) + "\n")


# -- `crystalmix encode`: one interchange file, one line per conversation -----------------------------------
def encode_file(input_path: str | Path, out: str | Path, cfg: TokenizeConfig, *, rejects: str | Path | None = None,
                on_encoded: Callable[[Encoded], None] | None = None) -> dict[str, Any]:
    """Encode the interchange conversations of `input_path` into `out` (``{id, input_ids, loss_mask}`` per
    line) and their rejects into `rejects` (default ``OUT.rejects.jsonl``), both written atomically.

    Records are read by the ``conversations`` adapter, as `convert` and `build` read them, so a bad line or
    an invalid conversation (an empty final answer, a lone surrogate) is a reject with its file, line and
    reason, and the run goes on; so is a conversation the template gives no trained token. Rejects are
    written in input order whatever ``cfg.workers``. `on_encoded` sees each kept conversation (``--show``).
    Returns the report: ``read == kept + rejected``, and the reasons.
    """
    from sft_builder.sources.base import make_adapter  # the adapters are the build's; import them on use

    out = Path(out)
    rejects_path = Path(rejects) if rejects is not None else rejects_path_for(out)
    if out.resolve() == rejects_path.resolve():
        raise UserError("--out and --rejects must be different files", path=out)
    adapter = make_adapter("conversations", {})
    encoder = make_encoder(cfg) if cfg.n_workers() <= 1 else None
    # The adapter's rejects wait here, in input order, with a marker for each conversation sent to encoding:
    # results come back one per conversation, in order, so rejects and results are written interleaved as read.
    queue: deque[Rejected | None] = deque()
    kept = 0

    def conversations() -> Iterator[Conversation]:
        for item in adapter.stream([str(input_path)]):
            if isinstance(item, Rejected):
                queue.append(item)
            else:
                queue.append(None)
                yield item

    with atomic_open(out) as fh, RejectWriter(rejects_path) as rej_out:
        for result in encode_stream(conversations(), cfg, encoder):
            while (waiting := queue.popleft()) is not None:
                rej_out.write(waiting)
            if isinstance(result, Rejected):
                rej_out.write(result)
                continue
            fh.write(json.dumps({"id": result.id, "input_ids": result.input_ids.tolist(),
                                 "loss_mask": result.loss_mask.tolist()}) + "\n")
            kept += 1
            if on_encoded is not None:
                on_encoded(result)
        rej_out.write_all(q for q in queue if q is not None)  # rejects after the last conversation
    read = adapter.stats.candidates
    if read != kept + rej_out.total:  # a bug, not a user error: crash loudly
        raise RuntimeError(f"encode lost count: read {read} != kept {kept} + rejected {rej_out.total}")
    return {"input": str(input_path), "read": read, "kept": kept, "rejected": rej_out.total,
            "reasons": dict(sorted(rej_out.counts.items())), "out": str(out), "rejects": str(rejects_path)}
