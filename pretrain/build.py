"""`build_stage`: resolve the tokenizer, plan shards, run them on an executor, finalize the folder.

The config fingerprint covers the manifest, the tokenizer's bytes and the input files' names and sizes;
a folder built under another fingerprint is never silently reused (``--force`` rebuilds it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

import xxhash

from crystalmix.core.atomic import atomic_open, fingerprint, sweep_temporaries, write_json
from crystalmix.core.errors import UserError
from crystalmix.core.tokenizer import load_tokenizer, special_token_ids, tokenizer_json
from pretrain.config import StageConfig
from pretrain.executors import Marker, OnDone, Progress
from pretrain.outputs import finalize
from pretrain.stages import STATE_DIR, ShardTask, StageContext, input_labels, make_plan, plan_files

STAGE_STATE = "stage.json"
TOKENIZER_NAME = "tokenizer.json"


class Executor(Protocol):
    def run(self, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]: ...


def tokenizer_parts(spec: str) -> tuple[str, dict[str, int], int]:
    """(tokenizer.json text, special token ids, vocabulary size) of what `load_tokenizer` resolves.

    The text is saved beside the outputs; workers load it with `tokenizers` alone (no transformers).
    """
    tok = load_tokenizer(spec)
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer {spec!r} has no fast (Rust) version; pretraining needs one")
    return tokenizer_json(tok), special_token_ids(tok), len(tok)


def prepare(cfg: StageConfig, out_dir: str | Path, *, force: bool = False,
            skip_bad_files: bool = False) -> tuple[list[ShardTask], int]:
    """Check the output folder, save the tokenizer, and make the shard plan; returns (plan, vocab size)."""
    out = Path(out_dir).resolve()
    tok_json, specials, vocab_size = tokenizer_parts(cfg.tokenizer)
    if cfg.model_vocab_size is not None and cfg.model_vocab_size < vocab_size:
        raise UserError(f"model_vocab_size {cfg.model_vocab_size} is smaller than the tokenizer's {vocab_size} "
                        "tokens: the model could not embed every id")
    files = plan_files(cfg)
    fp = stage_fingerprint(cfg, tok_json, files)
    state = out / STATE_DIR / STAGE_STATE
    if out.exists() and any(out.iterdir()):
        if not state.exists():
            raise UserError("output folder is not empty and was not made by `crystalmix pretrain build`; "
                            "pick a new --out", path=out)
        old = json.loads(state.read_text(encoding="utf-8")).get("fingerprint")
        if old != fp:
            if not force:
                raise UserError(f"output folder was built with another config (fingerprint {old}, now {fp}); "
                                "use a new --out or --force to rebuild it", path=out)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(state, {"fingerprint": fp, "stage": cfg.stage})  # first: it marks the folder as ours
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
    inputs = [[i, [[lab, Path(p).stat().st_size]
                   for p, lab in zip(paths, input_labels(paths), strict=True)], n] for i, paths, n in files]
    return fingerprint({"config": conf, "inputs": inputs}, length=16)


def build_stage(cfg: StageConfig, out_dir: str | Path, executor: Executor, *, force: bool = False,
                skip_bad_files: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build (or resume) one stage; returns the summary also written to ``build.json``."""
    tasks, vocab_size = prepare(cfg, out_dir, force=force, skip_bad_files=skip_bad_files)
    bar = Progress(len(tasks), enabled=progress)
    try:
        markers = executor.run(tasks, bar)
    finally:
        bar.close()
    summary = finalize(tasks, markers, vocab_size, cfg.tokenizer_name or cfg.tokenizer)
    if cfg.offline_mix and summary["folders"]:
        from pretrain.mix import mix_offline

        summary["offline_mix"] = mix_offline(Path(out_dir).resolve(), cfg, vocab_size)
    summary["tokens_per_second"] = round(bar.rate, 1)
    return summary
