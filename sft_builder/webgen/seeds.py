"""Seed tasks for the website-creation loop: loading (ours or Alpaca's layout), seeded sampling per prompt."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crystalmix.core.errors import UserError
from crystalmix.core.readers import iter_records
from crystalmix.core.records import RawRecord, UnparsedRecord
from crystalmix.core.remote import UrlFile, as_path

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def bundled(name: str) -> Traversable:
    """A file of the bundled webgen templates (``templates/webgen`` in the repository), from the package."""
    return files("crystalmix.templates").joinpath("webgen").joinpath(name)


DEFAULT_SEEDS = bundled("seed_tasks.jsonl")


@dataclass(frozen=True, slots=True)
class SeedTask:
    id: str
    instruction: str
    input: str
    output: str


def _task(rec: RawRecord, path: Path | UrlFile | Traversable) -> SeedTask:
    record, line = rec.data, rec.line
    if not isinstance(record, dict):
        raise UserError("a seed task must be a JSON object", path=str(path), line=line)
    inst = record.get("instruction")
    # Alpaca's seed file keeps input/output in `instances`; ours has them flat.
    inner = (
        record["instances"][0]
        if isinstance(record.get("instances"), list) and record["instances"]
        else record
    )
    inp, out = inner.get("input", ""), inner.get("output")
    if not isinstance(inst, str) or not inst.strip():
        raise UserError("seed task has no instruction", path=str(path), line=line)
    if not isinstance(out, str) or not out.strip():
        raise UserError("seed task has no output", path=str(path), line=line)
    if not isinstance(inp, str):
        raise UserError("seed task input must be a string", path=str(path), line=line)
    return SeedTask(str(record.get("id") or f"line_{rec.ref}"), inst.strip(), inp.strip(), out.strip())


def load_seeds(path: str | Path | Traversable = DEFAULT_SEEDS) -> tuple[SeedTask, ...]:
    """Read seed tasks (a file, or the bundled ones) through the core readers: JSON Lines, a JSON array, or
    their .gz/.zst; a local path or a URL (``s3://...``). A bad line stops with its line number."""
    p = as_path(path) if isinstance(path, str) else path
    if not p.is_file():
        raise UserError("seed task file not found", path=str(p))
    tasks: list[SeedTask] = []
    # a real file even when the package is not on disk (a zip); a URL is read as it is
    with as_file(p) if not isinstance(p, UrlFile) else nullcontext(p) as real:
        for rec in iter_records(str(real)):
            if type(rec.data) is UnparsedRecord:
                raise UserError(f"not JSON: {rec.data.error}", path=str(p), line=rec.line)
            tasks.append(_task(rec, p))
    if not tasks:
        raise UserError("seed task file is empty", path=str(p))
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise UserError("seed task ids must be unique", path=str(p))
    return tuple(tasks)


def seeds_digest(tasks: tuple[SeedTask, ...]) -> str:
    """Content hash of the seed set, part of the run fingerprint."""
    blob = json.dumps([[t.id, t.instruction, t.input, t.output] for t in tasks]).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def sample_seeds(tasks: tuple[SeedTask, ...], k: int, seed: int, request: int) -> tuple[SeedTask, ...]:
    """The k seed tasks shown in prompt number `request`: depends only on (seed, request), never on timing."""
    if k > len(tasks):
        raise UserError(f"cannot show {k} seed tasks: the seed file has only {len(tasks)}")
    rng = np.random.default_rng([seed, request])
    return tuple(tasks[i] for i in rng.choice(len(tasks), size=k, replace=False))
