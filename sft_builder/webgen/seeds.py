"""Seed tasks for the website-creation loop: loading (ours or Alpaca's layout), seeded sampling per prompt."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalmix.core.errors import UserError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "webgen"
DEFAULT_SEEDS = TEMPLATES / "seed_tasks.jsonl"


@dataclass(frozen=True, slots=True)
class SeedTask:
    id: str
    instruction: str
    input: str
    output: str


def _task(record: object, path: Path, line: int) -> SeedTask:
    if not isinstance(record, dict):
        raise UserError("a seed task must be a JSON object", path=path, line=line)
    inst = record.get("instruction")
    # Alpaca's seed file keeps input/output in `instances`; ours has them flat.
    inner = (
        record["instances"][0]
        if isinstance(record.get("instances"), list) and record["instances"]
        else record
    )
    inp, out = inner.get("input", ""), inner.get("output")
    if not isinstance(inst, str) or not inst.strip():
        raise UserError("seed task has no instruction", path=path, line=line)
    if not isinstance(out, str) or not out.strip():
        raise UserError("seed task has no output", path=path, line=line)
    if not isinstance(inp, str):
        raise UserError("seed task input must be a string", path=path, line=line)
    return SeedTask(str(record.get("id") or f"line_{line}"), inst.strip(), inp.strip(), out.strip())


def load_seeds(path: str | Path = DEFAULT_SEEDS) -> tuple[SeedTask, ...]:
    """Read a JSONL of seed tasks; a bad line stops with its line number."""
    p = Path(path)
    if not p.is_file():
        raise UserError("seed task file not found", path=p)
    tasks: list[SeedTask] = []
    with open(p, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"not JSON: {exc.msg}", path=p, line=n) from None
            tasks.append(_task(record, p, n))
    if not tasks:
        raise UserError("seed task file is empty", path=p)
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise UserError("seed task ids must be unique", path=p)
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
