"""`build_stage`: resolve the tokenizer, plan shards, run them on an executor, finalize the folder.

The config fingerprint covers the manifest, the tokenizer's bytes and the input files' names and sizes;
``.state/stage.json`` also records each input's content digest (read once per run). A folder built under
another fingerprint, or from inputs whose content changed, is never silently reused (``--force`` rebuilds
it from scratch). Files of finished shards are reused only intact: a missing or damaged one makes its
shard run again (`outputs.LostFiles`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from crystalmix.core.atomic import atomic_open, fingerprint, sweep_temporaries, write_json
from crystalmix.core.digest import Digests, hub_revision
from crystalmix.core.errors import UserError
from crystalmix.core.executors import Executor
from crystalmix.core.remote import size as input_size
from crystalmix.core.tokenizer import tokenizer_parts
from pretrain.config import StageConfig
from pretrain.executors import Progress, run_plan
from pretrain.outputs import LostFiles, finalize
from pretrain.stages import STATE_DIR, ShardTask, StageContext, input_labels, make_plan, plan_files

STAGE_STATE = "stage.json"
TOKENIZER_NAME = "tokenizer.json"


@dataclass(frozen=True)
class StageInputs:
    """What a stage is built from, resolved and checked before any output folder is touched."""

    tok_json: str
    specials: dict[str, int]
    vocab_size: int
    files: list[tuple[int, list[str], int]]
    fingerprint: str
    digests: list[list[Any]]


def resolve_inputs(cfg: StageConfig) -> StageInputs:
    """Load the tokenizer and find and digest the input files; a bad one is a `UserError` here (the CLI calls
    this before it says anything about its output, so a bad input is that one line)."""
    tok_json, specials, vocab_size = tokenizer_parts(cfg.tokenizer)
    if cfg.model_vocab_size is not None and cfg.model_vocab_size < vocab_size:
        raise UserError(f"model_vocab_size {cfg.model_vocab_size} is smaller than the tokenizer's {vocab_size} "
                        "tokens: the model could not embed every id")
    files = plan_files(cfg)
    return StageInputs(tok_json, specials, vocab_size, files, stage_fingerprint(cfg, tok_json, files),
                       input_digests(cfg, files))


def prepare(cfg: StageConfig, out_dir: str | Path, *, force: bool = False, skip_bad_files: bool = False,
            resolved: StageInputs | None = None) -> tuple[list[ShardTask], int]:
    """Check the output folder, save the tokenizer, and make the shard plan; returns (plan, vocab size).

    `resolved` is `resolve_inputs(cfg)` when the caller has it already."""
    out = Path(out_dir).resolve()
    found = resolved if resolved is not None else resolve_inputs(cfg)
    tok_json, specials, vocab_size = found.tok_json, found.specials, found.vocab_size
    files, fp, inputs = found.files, found.fingerprint, found.digests
    state = out / STATE_DIR / STAGE_STATE
    if out.exists() and not out.is_dir():
        raise UserError("--out names an existing file; give a folder to build the stage into", path=out)
    if out.exists() and any(out.iterdir()):
        if not state.exists():
            raise UserError("output folder is not empty and was not made by `crystalmix pretrain build`; "
                            "pick a new --out", path=out)
        if force:
            shutil.rmtree(out)  # --force: from scratch, whatever the folder holds
        else:
            why = _changed(_read_state(state), fp, inputs)
            if why:
                raise UserError(f"output folder was built with {why}; use a new --out or --force to rebuild it",
                                path=out)
    out.mkdir(parents=True, exist_ok=True)
    # first: it marks the folder as ours, and what it is built from
    write_json(state, {"fingerprint": fp, "stage": cfg.stage, "inputs": inputs})
    sweep_temporaries(out)
    tok_path = out / TOKENIZER_NAME
    if not tok_path.exists() or tok_path.read_text(encoding="utf-8") != tok_json:
        with atomic_open(tok_path) as fh:
            fh.write(tok_json)
    ctx = StageContext(cfg, str(out), str(tok_path), tuple(sorted(specials.items())), fp, skip_bad_files)
    return make_plan(ctx, files), vocab_size


def stage_fingerprint(cfg: StageConfig, tok_json: str, files: list[tuple[int, list[str], int]]) -> str:
    """A digest of what decides the bytes: options, tokenizer content, input names and sizes.

    Absolute paths are left out so the same data built from another checkout gets the same fingerprint.
    ``--skip-bad-files`` is left out too: re-running with it after a bad file keeps the finished shards.
    """
    conf = cfg.to_dict()
    conf["tokenizer"] = xxhash.xxh64_hexdigest(tok_json.encode())
    for src in conf["sources"]:
        src.pop("paths")
    inputs = [[i, [[lab, input_size(p)]
                   for p, lab in zip(paths, input_labels(paths), strict=True)], n] for i, paths, n in files]
    return fingerprint({"config": conf, "inputs": inputs}, length=16)


def input_digests(cfg: StageConfig, files: list[tuple[int, list[str], int]]) -> list[list[Any]]:
    """Per source: ``[label, size, content digest]`` of each input (a hub source: its id and revision, when
    the local cache knows it). Each file is read once, by a few threads (the digest releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    digests = Digests()
    paths = [p for _, ps, _ in files for p in ps]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        found = dict(zip(paths, pool.map(digests.file, paths), strict=True))
    out: list[list[Any]] = []
    for i, ps, _ in files:
        src = cfg.sources[i]
        if src.hub:
            out.append([src.name, [["hub", src.hub, hub_revision(src.hub)]]])
        else:
            out.append([src.name, [[lab, input_size(p), found[p]]
                                   for p, lab in zip(ps, input_labels(ps), strict=True)]])
    return out


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _changed(state: dict[str, Any], fp: str, inputs: list[list[Any]]) -> str | None:
    """Why a folder built under `state` is not this build's (another config, or inputs that changed)."""
    if state.get("fingerprint") != fp:
        return f"another config (fingerprint {state.get('fingerprint')}, now {fp})"
    if state.get("inputs") == inputs:
        return None
    old = {(src, str(rec[0])): rec for src, recs in state.get("inputs") or [] for rec in recs}
    for src, recs in inputs:
        for rec in recs:
            if old.get((src, str(rec[0]))) != rec:
                return f"other content in input {rec[0]} of source {src!r}"
    return "inputs that are not recorded (an older version of crystalmix)"


def build_stage(cfg: StageConfig, out_dir: str | Path, executor: Executor, *, force: bool = False,
                skip_bad_files: bool = False, progress: bool = False,
                resolved: StageInputs | None = None) -> dict[str, Any]:
    """Build (or resume) one stage; returns the summary also written to ``build.json``.

    Shards whose files were lost or damaged since they finished run again before the folder is finalized.
    `resolved` is `resolve_inputs(cfg)` when the caller has it already.
    """
    tasks, vocab_size = prepare(cfg, out_dir, force=force, skip_bad_files=skip_bad_files, resolved=resolved)
    bar = Progress(tasks, enabled=progress)
    try:
        markers = run_plan(executor, tasks, bar)
        for attempt in range(2):
            try:
                summary = finalize(tasks, markers, vocab_size, cfg.tokenizer_name or cfg.tokenizer)
                break
            except LostFiles as lost:
                if attempt:  # files lost again right after their shards ran: not something a rerun fixes
                    raise
                redo = [t for t in tasks if t.name in lost.shards]
                for t in redo:
                    t.marker.unlink(missing_ok=True)
                markers.update(run_plan(executor, redo, bar))
    finally:
        bar.close()
    if cfg.offline_mix and summary["folders"]:
        from pretrain.mix import mix_offline

        summary["offline_mix"] = mix_offline(Path(out_dir).resolve(), cfg, vocab_size)
    summary["tokens_per_second"] = round(bar.rate, 1)
    return summary
