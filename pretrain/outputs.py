"""The cheap final pass: number shard files in plan order, write index, metadata and the mixture file.

It only renames files and writes small JSON/YAML, and every step is idempotent, so a run killed here
simply redoes it. Global sample numbers are assigned here, in sorted shard order, which is why they never
depend on how many workers built the shards.
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Any

import yaml

from crystalmix.core.atomic import atomic_open, write_json
from crystalmix.core.errors import UserError
from crystalmix.core.hdf5 import add_stats, build_metadata, file_name, write_metadata
from pretrain.split import file_parity_order
from pretrain.stages import STATE_DIR, ShardTask

INDEX_NAME = "index.json"
MIXTURE_NAME = "mixture.yaml"
SUMMARY_NAME = "build.json"


def finalize(tasks: list[ShardTask], markers: dict[str, dict[str, Any]], vocab_size: int,
             tokenizer_spec: str) -> dict[str, Any]:
    """Move every shard's files to their final names and write the per-folder and stage-level files."""
    ctx = tasks[0].ctx
    cfg, out = ctx.cfg, Path(ctx.out_dir)
    folders: dict[str, dict[str, Any]] = {}
    skipped: dict[str, dict[str, int]] = {}
    bad_files = []
    fim: dict[str, dict[str, int]] = {}
    for task in tasks:
        m = markers[task.name]
        key = f"{task.source.name}/epoch-{task.epoch}"
        agg = skipped.setdefault(key, {})
        for reason, n in m["skipped"].items():
            agg[reason] = agg.get(reason, 0) + n
        agg["documents_read"] = agg.get("documents_read", 0) + m["documents"]
        f_agg = fim.setdefault(key, {})
        for k, n in m.get("fim", {}).items():
            f_agg[k] = f_agg.get(k, 0) + n
        bad_files += m.get("bad_files", [])
        for folder, o in m["outputs"].items():
            entry = folders.setdefault(folder, {"files": [], "blocks": [], "task": task})
            for rel, n, block in zip(o["files"], o["rows"], o["blocks"], strict=True):
                entry["files"].append((rel, n, task.name, block["input"]))
                entry["blocks"].append(block)
    for entry in folders.values():
        _select_half(entry, cfg, out)
        entry["stats"], entry["documents"] = {}, 0
        for block in entry["blocks"]:
            entry["stats"] = add_stats(entry["stats"], block["stats"])
            entry["documents"] += block["documents"]
    written = []
    for folder, entry in sorted(folders.items(), key=lambda kv: _folder_order(kv[1]["task"], kv[0])):
        if not entry["files"]:
            continue
        written.append(folder)
        _place_folder(out / folder, entry, out)
        task = entry["task"]
        src = task.source
        sub = next(s for s in src.outputs() if f"{s.name}/epoch-{task.epoch}" == folder)
        meta = build_metadata(
            seq_len=cfg.seq_len, vocab_size=vocab_size, special_tokens=ctx.special,
            files=[(file_name(i), n) for i, (_, n, _, _) in enumerate(entry["files"])],
            stats=entry["stats"], fingerprint=ctx.fingerprint, tokenizer=tokenizer_spec,
            stage=cfg.stage, source=src.name, output=sub.name, epoch=task.epoch, epochs=src.epochs,
            weight=sub.weight, documents=entry["documents"],
            fim={"rate": src.fim.rate, "spm_rate": src.fim.spm_rate, "mode": src.fim.mode,
                 "seed": cfg.seed, **fim.get(f"{src.name}/epoch-{task.epoch}", {})},
            packing={"tail": cfg.tail, "stride": cfg.seq_len, "samples_per_file": cfg.samples_per_file,
                     "normalize": cfg.normalize, "min_sequence_len": cfg.min_sequence_len},
            selection={"split_method": cfg.split_method, "split_seed": cfg.split_seed, "half": src.half,
                       "fraction": src.fraction},
        )
        write_metadata(out / folder, meta)
    mixture = write_mixture(out, folders, written)
    summary = {"stage": cfg.stage, "fingerprint": ctx.fingerprint, "folders": written,
               "empty_outputs": sorted(set(_all_outputs(tasks)) - set(written)),
               "documents": skipped, "fim": fim, "bad_files": bad_files,
               "num_sequences": sum(folders[f]["stats"].get("num_sequences", 0) for f in written),
               "non_pad_tokens": sum(folders[f]["stats"].get("non_pad_tokens", 0) for f in written),
               "mixture": mixture, "config": _portable_config(tasks)}
    write_json(out / SUMMARY_NAME, summary)
    return summary


def _select_half(entry: dict[str, Any], cfg: Any, out: Path) -> None:
    """With ``split: file_parity``, keep the packed files of this source's half, numbered plan-independently.

    The other half's staged files are deleted (the build packs both: packing runs on across documents of
    both halves, as it did for LLM360, who packed everything and then split by file number).
    """
    src = entry["task"].source
    if cfg.split_method != "file_parity" or src.half is None:
        return
    keys = [(b["input"], b["index"], n) for (_, n, _, _), b in zip(entry["files"], entry["blocks"], strict=True)]
    order = file_parity_order(keys, cfg.samples_per_file, cfg.split_seed)
    keep = order[src.half::2]
    for i in set(range(len(keys))) - set(keep):
        (out / entry["files"][i][0]).unlink(missing_ok=True)
    entry["files"] = [entry["files"][i] for i in keep]
    entry["blocks"] = [entry["blocks"][i] for i in keep]


def _portable_config(tasks: list[ShardTask]) -> dict[str, Any]:
    """The stage config without machine-specific paths (inputs by their labels), so build.json is portable."""
    conf = tasks[0].ctx.cfg.to_dict()
    conf["tokenizer"] = conf.get("tokenizer_name") or conf["tokenizer"]
    for i, src in enumerate(conf["sources"]):
        src["paths"] = sorted({t.label for t in tasks if t.source_index == i and t.epoch == 0})
    return conf


def _folder_order(task: ShardTask, folder: str) -> tuple[int, str]:
    return task.source_index, folder


def _all_outputs(tasks: list[ShardTask]) -> list[str]:
    return [f"{s.name}/epoch-{t.epoch}" for t in tasks for s in t.source.outputs()]


def _place_folder(final: Path, entry: dict[str, Any], out: Path) -> None:
    """Rename staging files to data-00000.h5 ... (idempotent) and write the sample index."""
    final.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (rel, _, shard, _) in enumerate(entry["files"]):
        target = final / file_name(i)
        staged = out / rel
        if staged.exists():
            os.replace(staged, target)
        elif not target.exists():
            raise UserError(f"shard {shard}: file {rel} is gone and {target.name} was never placed; "
                            "rebuild with --force", path=final)
        names.append(target.name)
    for stale in final.glob("data-*.h5"):
        if stale.name not in names:
            stale.unlink()  # left by an earlier build of this folder with more files
    first = 0
    files = []
    for i, (_, n, shard, src) in enumerate(entry["files"]):
        files.append({"name": file_name(i), "first_sample": first, "n_examples": n, "shard": shard,
                      "input": src})
        first += n
    write_json(final / INDEX_NAME, {"num_sequences": first, "files": files})


def write_mixture(out: Path, folders: dict[str, dict[str, Any]], written: list[str]) -> list[dict[str, Any]]:
    """Per-folder weights, in the form Cerebras' trainer reads (``mixture: [{data_dir, weight}]``).

    A source's weight is spread evenly over its epochs; empty folders are left out and the rest keep
    their manifest weights (the trainer normalises them).
    """
    entries = []
    for folder in written:
        task: ShardTask = folders[folder]["task"]
        sub = next(s for s in task.source.outputs() if f"{s.name}/epoch-{task.epoch}" == folder)
        entries.append({"data_dir": folder, "weight": round(sub.weight / task.source.epochs, 8),
                        "num_sequences": int(folders[folder]["stats"].get("num_sequences", 0))})
    with atomic_open(out / MIXTURE_NAME) as fh:
        fh.write("# Written by crystalmix pretrain build: data folders and their sampling weights.\n")
        yaml.safe_dump({"mixture": entries}, fh, sort_keys=True)
    return entries


def locate(folder: str | Path, sample: int) -> tuple[Path, int]:
    """(file, row) of global sample number `sample` in a data folder, from its index.json."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    if not path.exists():
        inner = sorted(str(p.parent.relative_to(folder)) for p in folder.rglob(INDEX_NAME)
                       if STATE_DIR not in p.parts)
        hint = f"; data folders below it: {', '.join(inner)}" if inner else ""
        raise UserError(f"no {INDEX_NAME} here (point at one data folder){hint}", path=folder)
    index = json.loads(path.read_text(encoding="utf-8"))
    total = int(index["num_sequences"])
    if not 0 <= sample < total:
        raise UserError(f"sample {sample} is out of range: this folder holds {total} samples", path=folder)
    starts = [f["first_sample"] for f in index["files"]]
    i = bisect.bisect_right(starts, sample) - 1
    return folder / index["files"][i]["name"], sample - starts[i]
