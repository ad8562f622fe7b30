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
from crystalmix.core.digest import Digests
from crystalmix.core.errors import UserError
from crystalmix.core.hdf5 import add_stats, build_metadata, file_name, write_metadata
from pretrain import cerebras
from pretrain.split import data_subset_rows, file_parity_order
from pretrain.stages import STATE_DIR, ShardTask, replay_rows

INDEX_NAME = "index.json"
MIXTURE_NAME = "mixture.yaml"
SUMMARY_NAME = "build.json"
DATA_PARAMS_NAME = "data_params.json"


class LostFiles(UserError):
    """Files of finished shards that are missing or damaged: those shards must run again."""

    def __init__(self, lost: dict[str, str]) -> None:
        first = next(iter(sorted(lost.items())))
        super().__init__(f"{len(lost)} finished shards lost files (first: {first[0]}: {first[1]})")
        self.shards = lost


def finalize(tasks: list[ShardTask], markers: dict[str, dict[str, Any]], vocab_size: int,
             tokenizer_spec: str) -> dict[str, Any]:
    """Move every shard's files to their final names and write the per-folder and stage-level files.

    Files an earlier run wrote are placed (or kept in place) only with the size and digest their shard's
    marker recorded; any other raises `LostFiles` naming the shards to run again, before anything is
    written.
    """
    ctx = tasks[0].ctx
    cfg, out = ctx.cfg, Path(ctx.out_dir)
    folders: dict[str, dict[str, Any]] = {}
    skipped: dict[str, dict[str, int]] = {}
    bad_files = []
    fim: dict[str, dict[str, int]] = {}
    rewritten: dict[str, dict[str, int]] = {}
    inputs: dict[str, list[int]] = {}  # per source/epoch: input files processed, and those that were bad
    for task in tasks:
        m = markers[task.name]
        key = f"{task.source.name}/epoch-{task.epoch}"
        agg = skipped.setdefault(key, {})
        for reason, n in m["skipped"].items():
            agg[reason] = agg.get(reason, 0) + n
        agg["documents_read"] = agg.get("documents_read", 0) + m["documents"]
        for reason, n in m.get("rewritten", {}).items():
            rewritten.setdefault(key, {})[reason] = rewritten.get(key, {}).get(reason, 0) + n
        counts = inputs.setdefault(key, [0, 0])
        counts[0] += len(task.labels)
        counts[1] += len(m.get("bad_files", []))
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
        entry["stats"], entry["documents"], entry["cerebras"] = {}, 0, {}
        for block in entry["blocks"]:
            entry["stats"] = add_stats(entry["stats"], block["stats"])
            entry["documents"] += block["documents"]
            entry["cerebras"] = cerebras.add(entry["cerebras"], block.get("cerebras", {}))
    _check_files(folders, markers, out)
    written = []
    for folder, entry in sorted(folders.items(), key=lambda kv: _folder_order(kv[1]["task"], kv[0])):
        if not entry["files"]:
            continue
        written.append(folder)
        _place_folder(out / folder, entry, out)
        task = entry["task"]
        src = task.source
        sub = next(s for s in src.outputs() if f"{s.name}/epoch-{task.epoch}" == folder)
        key = f"{src.name}/epoch-{task.epoch}"
        extra: dict[str, Any] = {}
        if cfg.model_vocab_size is not None:
            extra["model_vocab_size"] = cfg.model_vocab_size
        if cfg.tokenization != "crystalmix":
            extra["tokenization"] = {"mode": cfg.tokenization, "split_chars": cerebras.SPLIT_CHARS, "bos": True,
                                     "ftfy": src.ftfy, **rewritten.get(key, {})}
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
            **extra,
        )
        write_metadata(out / folder, meta)
        if cfg.tokenization == "cerebras":
            _write_data_params(out / folder, entry, ctx, skipped[key], inputs[key],
                               cfg.model_vocab_size or vocab_size)
    mixture = write_mixture(out, folders, written, cfg.model_vocab_size, cfg)
    summary = {"stage": cfg.stage, "fingerprint": ctx.fingerprint, "folders": written,
               "empty_outputs": sorted(set(_all_outputs(tasks)) - set(written)),
               "documents": skipped, "fim": fim, "bad_files": bad_files,
               **({"rewritten": rewritten} if rewritten else {}),
               "num_sequences": sum(folders[f]["stats"].get("num_sequences", 0) for f in written),
               "non_pad_tokens": sum(folders[f]["stats"].get("non_pad_tokens", 0) for f in written),
               "mixture": mixture, "config": _portable_config(tasks)}
    write_json(out / SUMMARY_NAME, summary)
    return summary


UNUSABLE = ("not_utf8", "invalid_json", "missing_field", "not_text", "empty", "too_short")


def _write_data_params(folder: Path, entry: dict[str, Any], ctx: Any, skipped: dict[str, int],
                       inputs: list[int], vocab_size: int) -> None:
    """Cerebras' ``data_params.json`` beside metadata.json (tokenization: cerebras).

    ``discarded_files`` counts the source's unusable documents (Cerebras counted discarded samples under
    that name); raw characters and bytes are those of the documents whose end lies in this folder's rows.
    """
    cfg, src = ctx.cfg, entry["task"].source
    stats = entry["cerebras"]
    params = cerebras.data_params(
        inputs=sorted({b["input"] for b in entry["blocks"]}), folder=str(folder.relative_to(Path(ctx.out_dir))),
        tokenizer_file=os.path.relpath(ctx.tokenizer_path, folder), eos_id=ctx.special["eos"],
        pad_id=ctx.special["pad"], seq_len=cfg.seq_len, samples_per_file=cfg.samples_per_file, seed=cfg.seed,
        text_field=src.text_field, use_ftfy=src.ftfy, min_sequence_len=cfg.min_sequence_len,
        discarded=sum(skipped.get(r, 0) for r in UNUSABLE), processed_files=inputs[0],
        successful_files=inputs[0] - inputs[1], raw_chars=stats.get("raw_chars_count", 0),
        raw_bytes=stats.get("raw_bytes_count", 0), vocab_size=vocab_size, stats=stats)
    with atomic_open(folder / DATA_PARAMS_NAME) as fh:
        json.dump(params, fh, indent=4, sort_keys=True)  # Cerebras' own layout
        fh.write("\n")


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


def _check_files(folders: dict[str, dict[str, Any]], markers: dict[str, dict[str, Any]], out: Path) -> None:
    """Every file to place must be intact: a staged file of a shard resumed from an earlier run, or a file
    already placed (under its final name) by one, must have the size and digest its marker recorded.
    Files written in this run were hashed as they were written and are not read again."""
    digests, lost = Digests(), {}
    for folder, entry in folders.items():
        for i, (rel, _, shard, _) in enumerate(entry["files"]):
            staged = out / rel
            path = staged if staged.exists() else out / folder / file_name(i)
            if staged.exists() and not markers[shard].get("resumed"):
                continue
            rec = markers[shard].get("digests", {}).get(rel)
            why = "no recorded digest" if rec is None else digests.problem(path.parent, {path.name: rec})
            if why is not None and shard not in lost:
                lost[shard] = f"{path.relative_to(out)}: {why}"
    if lost:
        raise LostFiles(lost)


def _place_folder(final: Path, entry: dict[str, Any], out: Path) -> None:
    """Rename staging files to data-00000.h5 ... (idempotent) and write the sample index."""
    final.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (rel, _, _, _) in enumerate(entry["files"]):
        target = final / file_name(i)
        staged = out / rel
        if staged.exists():
            os.replace(staged, target)
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


def write_mixture(out: Path, folders: dict[str, dict[str, Any]], written: list[str],
                  vocab_size: int | None = None, cfg: Any = None) -> list[dict[str, Any]]:
    """Per-folder weights, in the form Cerebras' trainer reads (``mixture: [{data_dir, weight}]``).

    A source's weight is spread evenly over its epochs; empty folders are left out and the rest keep
    their manifest weights (the trainer normalises them). Replayed folders (``mixture.replay``) follow
    with their ``data_subset``; their ``num_sequences`` counts only the rows that subset selects.
    `vocab_size` (the model's, when the manifest sets ``model_vocab_size``) goes beside the list:
    Cerebras' ``train_input`` takes both keys.
    """
    entries: list[dict[str, Any]] = []
    for folder in written:
        task: ShardTask = folders[folder]["task"]
        sub = next(s for s in task.source.outputs() if f"{s.name}/epoch-{task.epoch}" == folder)
        entries.append({"data_dir": folder, "weight": sub.weight / task.source.epochs,
                        "num_sequences": int(folders[folder]["stats"].get("num_sequences", 0))})
    for replay in cfg.replay if cfg is not None else ():
        for data_dir in replay.folders:
            n = replay_rows(data_dir, cfg.seq_len)
            entry = {"data_dir": data_dir, "weight": replay.weight / len(replay.folders),
                     "num_sequences": sum(b - a for a, b in data_subset_rows(n, replay.data_subset))}
            if replay.data_subset is not None:
                entry["data_subset"] = replay.data_subset
            entries.append(entry)
    with atomic_open(out / MIXTURE_NAME) as fh:
        fh.write("# Written by crystalmix pretrain build: data folders and their sampling weights.\n")
        doc: dict[str, Any] = {"mixture": entries}
        if vocab_size is not None:
            doc["vocab_size"] = vocab_size
        yaml.safe_dump(doc, fh, sort_keys=True)
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
