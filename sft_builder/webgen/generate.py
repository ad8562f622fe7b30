"""The self-instruct loop: prompt with sampled seeds, parse, filter, ROUGE-L dedup, append; resumable.

Prompts are numbered; prompt r shows seeds sampled from (seed, r) and asks the backend for a completion seeded
from (seed, r). Batches of prompts may be in flight together, but their answers are processed and written in
prompt order, so a deterministic backend always gives the same file. After each batch the kept records and the
rejected ones are appended and fsynced, then a small state file is replaced atomically: that is the commit
point a re-run resumes from (bytes past it, from a batch that never committed, are cut off).

Tokens are counted twice over: what this process received (`Generator.spent`, every answer the server sent,
including a batch in flight that is discarded once ``--num`` is reached) and what the output holds
(`RunState.usage`, committed with each batch and summed over resumed runs, so it is the cost of the file).
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from crystalmix.core.atomic import fingerprint, write_json
from crystalmix.core.errors import DiskFullError, UserError, is_disk_full
from crystalmix.core.records import Rejected
from sft_builder.webgen.backends import Backend, Completion, Usage
from sft_builder.webgen.filters import FilterConfig, first_rejection
from sft_builder.webgen.parse import Candidate, parse_answer
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import SeedTask, sample_seeds, seeds_digest
from sft_builder.webgen.similarity import RougePool

OVER_QUOTA = "over_quota"  # read after --num was reached: counted, never judged
TOO_SIMILAR = "too_similar"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that decides the output file, plus how hard to drive the backend."""

    out: Path
    num: int
    seed: int
    seeds: tuple[SeedTask, ...]
    prompt: PromptTemplate
    backend_id: dict[str, Any]  # kind, model and sampling settings: part of the fingerprint
    prompt_tasks: int = 3
    batch_size: int = 5
    concurrency: int = 1
    similarity: float = 0.7
    top_k: int = 10
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_prompts: int | None = None
    stall_prompts: int = 200

    def fingerprint(self) -> str:
        """Settings that change what a prompt yields; --num, concurrency and limits may change on resume."""
        return fingerprint(
            {
                "seed": self.seed,
                "seeds": seeds_digest(self.seeds),
                "prompt": self.prompt.source,
                "num_tasks": self.prompt.num_tasks,
                "backend": self.backend_id,
                "prompt_tasks": self.prompt_tasks,
                "batch_size": self.batch_size,
                "similarity": self.similarity,
                "top_k": self.top_k,
                "filters": [self.filters.min_words, self.filters.max_words],
            }
        )

    @property
    def rejects_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".rejects.jsonl")

    @property
    def state_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".state.json")


@dataclass(slots=True)
class RunState:
    """Committed progress; `candidates == kept + sum(rejected.values())` always holds."""

    fingerprint: str
    next_batch: int = 0
    prompts: int = 0
    candidates: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    out_bytes: int = 0
    rejects_bytes: int = 0
    stopped: str = ""  # why the run ended before --num (empty when it reached it)
    stalled: bool = False  # ended because the model stopped producing keepable tasks
    usage: Usage = field(default_factory=Usage)  # tokens of the committed batches, over every run

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "next_batch": self.next_batch,
            "prompts": self.prompts,
            "candidates": self.candidates,
            "kept": self.kept,
            "rejected": dict(sorted(self.rejected.items())),
            "out_bytes": self.out_bytes,
            "rejects_bytes": self.rejects_bytes,
            "stopped": self.stopped,
            "usage": self.usage.to_json(),
        }


def _read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    """The records in the first `limit` bytes of `path`."""
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        data = fh.read(limit)
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError("not a webgen output line (JSON expected)", path=path, line=n) from None
    return out


def _committed_size(path: Path) -> int:
    """Size up to the last complete line (a killed writer may leave a partial one)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


def load_state(cfg: RunConfig) -> tuple[RunState, list[dict[str, Any]]]:
    """The committed state and kept records of an earlier run on `cfg.out` (empty for a new file)."""
    fp = cfg.fingerprint()
    if cfg.state_path.exists():
        raw = json.loads(cfg.state_path.read_text(encoding="utf-8"))
        if raw.get("fingerprint") != fp:
            raise UserError(
                "this output was made with other settings (seed, seeds, prompt, model, sampling or "
                "filters); use a new --out, or delete the file and its .state.json",
                path=cfg.out,
            )
        state = RunState(
            fp,
            raw["next_batch"],
            raw["prompts"],
            raw["candidates"],
            raw["kept"],
            Counter(raw["rejected"]),
            raw["out_bytes"],
            raw["rejects_bytes"],
            usage=Usage.from_json(raw.get("usage"), raw["prompts"]),
        )
        for path, size in ((cfg.out, state.out_bytes), (cfg.rejects_path, state.rejects_bytes)):
            actual = path.stat().st_size if path.exists() else 0
            if actual < size:
                raise UserError(
                    f"shorter than its state file says ({actual} < {size} bytes): edited by hand?", path=path
                )
        records = _read_jsonl(cfg.out, state.out_bytes)
        if len(records) != state.kept:
            raise UserError("line count disagrees with its state file", path=cfg.out)
        return state, records
    # No state file: rebuild it from the records themselves (each carries its batch and the fingerprint).
    state = RunState(fp, out_bytes=_committed_size(cfg.out), rejects_bytes=_committed_size(cfg.rejects_path))
    records = _read_jsonl(cfg.out, state.out_bytes)
    rejects = _read_jsonl(cfg.rejects_path, state.rejects_bytes)
    for r in records + rejects:
        if _meta(r).get("config") != fp:
            raise UserError("this output was made with other settings; use a new --out", path=cfg.out)
    state.kept = len(records)
    if records or rejects:
        state.next_batch = max(_meta(r)["batch"] for r in records + rejects) + 1
    state.prompts = state.next_batch * cfg.batch_size
    state.usage = Usage.from_json(None, state.prompts)  # what those prompts cost is not in the records
    state.rejected = Counter(r["reason"] for r in rejects)
    state.candidates = state.kept + sum(state.rejected.values())
    return state, records


def _ordered(jobs: Iterator[Callable[[], Any]], workers: int) -> Iterator[Any]:
    """Run jobs with up to `workers` in flight; yield results in submission order. Closing the iterator
    cancels what has not started (a request already on the wire finishes and is discarded)."""
    if workers <= 1:
        for job in jobs:
            yield job()
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webgen")
    window: deque[Future[Any]] = deque()
    try:
        for job in jobs:
            window.append(pool.submit(job))
            if len(window) >= workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _backend_seed(seed: int, prompt: int) -> int:
    # Fits numpy/torch seeding (< 2**32) with room for the per-prompt offset added by the backend.
    return (seed * 1_000_003 + prompt) % (2**31)


class Generator:
    """One run of the loop for a config and a backend. `on_progress(state)` is called after every commit."""

    def __init__(
        self, cfg: RunConfig, backend: Backend, on_progress: Callable[[RunState], None] | None = None
    ) -> None:
        if cfg.num < 0 or cfg.batch_size < 1 or cfg.concurrency < 1 or cfg.prompt_tasks < 1:
            raise UserError("--num must be >= 0; --batch-size, --concurrency and --prompt-tasks >= 1")
        if not 0.0 < cfg.similarity <= 1.0:
            raise UserError("--similarity must be in (0, 1]")
        self.cfg = cfg
        self.backend = backend
        self.on_progress = on_progress or (lambda s: None)
        self.state, records = load_state(cfg)
        self.spent = Usage()  # every answer this process received, committed or not
        self.pool = RougePool(cfg.similarity, cfg.top_k)
        self.pool.extend([t.instruction for t in cfg.seeds])
        self.pool.extend([r["instruction"] for r in records])

    def _job(self, batch: int) -> Callable[[], tuple[int, list[tuple[SeedTask, ...]], list[Completion]]]:
        cfg = self.cfg
        first = batch * cfg.batch_size
        shown = [
            sample_seeds(cfg.seeds, cfg.prompt_tasks, cfg.seed, first + i) for i in range(cfg.batch_size)
        ]
        prompts = [cfg.prompt.render(s) for s in shown]

        def job() -> tuple[int, list[tuple[SeedTask, ...]], list[Completion]]:
            completions = self.backend.complete(prompts, _backend_seed(cfg.seed, first))
            self.spent.add(completions)
            return batch, shown, completions

        return job

    def run(self) -> RunState:
        """Generate until `num` records are kept (counting those already in the file); returns the state."""
        cfg, state = self.cfg, self.state
        for path, size in ((cfg.out, state.out_bytes), (cfg.rejects_path, state.rejects_bytes)):
            if path.exists() and path.stat().st_size > size:
                with open(path, "r+b") as fh:  # drop the tail of a batch that never committed
                    fh.truncate(size)
        if state.kept >= cfg.num:
            return state
        workers = cfg.concurrency if self.backend.parallel else 1
        jobs = (self._job(b) for b in count(state.next_batch))
        idle = 0
        results = _ordered(jobs, workers)
        try:
            for batch, shown, completions in results:
                kept_before = state.kept
                self._commit(batch, shown, completions)
                idle = idle + cfg.batch_size if state.kept == kept_before else 0
                self.on_progress(state)
                if state.kept >= cfg.num:
                    break
                if cfg.max_prompts is not None and state.prompts >= cfg.max_prompts:
                    state.stopped = f"--max-prompts {cfg.max_prompts} reached"
                    break
                if idle >= cfg.stall_prompts:
                    state.stopped = f"nothing kept from the last {idle} prompts"
                    state.stalled = True
                    break
        finally:
            results.close()
        return state

    def _commit(self, batch: int, shown: list[tuple[SeedTask, ...]], completions: list[Completion]) -> None:
        cfg, state = self.cfg, self.state
        fp = state.fingerprint
        first_prompt = batch * cfg.batch_size
        rejects: list[Rejected] = []
        survivors: list[tuple[int, Candidate]] = []
        for i, (seeds, comp) in enumerate(zip(shown, completions, strict=True)):
            for cand in parse_answer(comp.text, len(seeds) + 1, comp.finish_reason == "length"):
                reason = first_rejection(cand, cfg.filters)
                if reason:
                    rejects.append(_reject(cand, reason, batch, first_prompt + i, fp))
                else:
                    survivors.append((i, cand))
        decisions = self.pool.check_and_add([c.instruction for _, c in survivors], limit=cfg.num - state.kept)
        kept_lines = []
        for j, (i, cand) in enumerate(survivors):
            if j >= len(decisions):
                rejects.append(_reject(cand, OVER_QUOTA, batch, first_prompt + i, fp))
                continue
            keep, sim = decisions[j]
            if not keep:
                rejects.append(_reject(cand, TOO_SIMILAR, batch, first_prompt + i, fp, sim.max_score))
                continue
            meta = {
                "source": "webgen",
                "model": self.backend.model,
                "backend": cfg.backend_id.get("kind"),
                "seed_tasks": [s.id for s in shown[i]],
                "batch": batch,
                "prompt": first_prompt + i,
                "item": cand.number,
                "config": fp,
                **sim.to_meta(),
            }
            record = {
                "instruction": cand.instruction,
                "input": cand.input,
                "output": cand.output,
                "meta": meta,
            }
            kept_lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        state.out_bytes += _append(cfg.out, kept_lines)
        state.rejects_bytes += _append_bytes(cfg.rejects_path, b"".join(r.to_json_bytes() for r in rejects))
        state.kept += len(kept_lines)
        state.rejected.update(r.reason for r in rejects)
        state.candidates += len(kept_lines) + len(rejects)
        state.prompts += len(completions)
        state.usage.add(completions)
        state.next_batch = batch + 1
        write_json(cfg.state_path, state.to_json())


def _reject(
    c: Candidate, reason: str, batch: int, prompt: int, fp: str, score: float | None = None
) -> Rejected:
    """A rejected candidate as the one reject type: the record is the candidate in the output's own shape
    (``instruction``, ``input``, ``output``, ``meta`` with batch, prompt, item and the config fingerprint)."""
    meta: dict[str, Any] = {"source": "webgen", "batch": batch, "prompt": prompt, "item": c.number, "config": fp}
    if score is not None:
        meta["max_similarity"] = score
    record = {"instruction": c.instruction, "input": c.input, "output": c.output, "meta": meta}
    detail = f"prompt {prompt}, item {c.number}" + ("" if score is None else f", max ROUGE-L {score:.3f}")
    return Rejected("webgen", "webgen", reason, "", 0, record, detail)


def _meta(line: dict[str, Any]) -> dict[str, Any]:
    """The meta of an output line or of a rejects line (whose record is a candidate; older rejects lines were flat)."""
    return line["record"]["meta"] if "record" in line else line.get("meta", line)


def _append(path: Path, lines: list[str]) -> int:
    """Append lines durably; returns the bytes written."""
    return _append_bytes(path, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")


def _append_bytes(path: Path, data: bytes) -> int:
    """Append `data` durably (creating the file even when empty); returns the bytes written."""
    if not data:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # a torn tail is past the committed size in the state file: the rerun drops it
        if is_disk_full(exc):
            raise DiskFullError.from_os_error(exc, path) from exc
        raise
    return len(data)
