"""`crystalmix pretrain ...`: the pretraining sub-app (build, plan, locate, mix)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from crystalmix.cli.common import (
    ExecutorName,
    Quiet,
    RayAddress,
    Verbose,
    Work,
    Workers,
    make_executor,
    out_option,
    out_target,
    publish_out,
    running_in,
    set_verbosity,
)
from crystalmix.core.errors import UserError

log = logging.getLogger(__name__)

app = typer.Typer(no_args_is_help=True, help="Pretraining stages 1-3: tokenize, FIM, pack to HDF5.")

_Manifest = Annotated[Path, typer.Argument(help="A stage manifest, e.g. manifests/pretrain/demo.yaml.")]
_Seed = Annotated[int | None, typer.Option("--seed", help="Override the manifest's seed.")]


@app.command()
def build(
    manifest: _Manifest,
    out: Annotated[str, out_option("Output folder or URL (resumable).")],
    executor: ExecutorName = "local",
    workers: Workers = 1,
    ray_address: RayAddress = None,
    tokenizer: Annotated[str | None, typer.Option(help="Override the manifest's tokenizer.")] = None,
    seed: _Seed = None,
    seq_len: Annotated[int | None, typer.Option(help="Override the manifest's seq_len.")] = None,
    skip_bad_files: Annotated[bool, typer.Option(help="Record unreadable files, do not stop.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild from scratch: discard what the folder holds (needed when it "
                                       "was built with another config or other input content).")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    work: Work = None,
) -> None:
    """Build one stage: per source and epoch, data-00000.h5 ... with metadata, index and mixture.yaml."""
    show_progress = set_verbosity(quiet, verbose)
    from pretrain.build import build_stage, resolve_inputs
    from pretrain.config import load_manifest
    from pretrain.executors import LocalExecutor

    runner = make_executor(executor, workers, ray_address, local=LocalExecutor)  # checked before any work
    cfg = load_manifest(manifest, tokenizer=tokenizer, seed=seed, seq_len=seq_len)
    local, url = out_target(out, "pretrain build", work, force=force)
    resolved = resolve_inputs(cfg)  # the tokenizer and the inputs: a bad one is one line, before running_in
    running_in(local, url)
    # one tokenizer thread per process, so N workers mean N cores (set here, at the edge, not in the library)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = build_stage(cfg, local, runner, force=force, skip_bad_files=skip_bad_files, progress=show_progress,
                          resolved=resolved)
    typer.echo(f"{summary['num_sequences']:,} sequences, {summary['non_pad_tokens']:,} tokens in "
               f"{len(summary['folders'])} folders under {out}")
    for key, counts in sorted(summary["documents"].items()):
        dropped = {k: v for k, v in counts.items() if k != "documents_read"}
        typer.echo(f"  {key}: {counts['documents_read']:,} documents read; skipped {dropped or 'none'}")
    for bad in summary["bad_files"]:
        typer.echo(f"  skipped bad file: {bad}")
    if not summary["folders"]:
        log.warning("no rows were produced; every document was skipped (see build.json)")
    publish_out(local, url, "pretrain build", skip=(".state",), force=force)


@app.command()
def locate(
    folder: Annotated[Path, typer.Argument(help="One data folder (holding index.json).")],
    sample: Annotated[int, typer.Argument(help="Global sample number, from 0.")],
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Print the file and row of a global sample number (to resume a trainer from a checkpoint)."""
    set_verbosity(quiet, verbose)
    from pretrain.outputs import locate as find

    path, row = find(folder, sample)
    typer.echo(json.dumps({"file": str(path), "row": row}))


@app.command()
def plan(
    manifest: _Manifest,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """List the shards a build would run (source, epoch, input), without running them."""
    set_verbosity(quiet, verbose)
    from pretrain.config import load_manifest
    from pretrain.stages import input_labels, plan_files

    cfg = load_manifest(manifest)
    for i, paths, n_hub in plan_files(cfg):
        src = cfg.sources[i]
        labels = [f"{src.hub}#{k}" for k in range(n_hub)] if n_hub else input_labels(paths)
        shards = len(labels) if n_hub else -(-len(labels) // src.files_per_shard)
        typer.echo(f"{src.name}: {len(labels)} inputs in {shards} shards x {src.epochs} epochs, "
                   f"fim {src.fim.rate} ({src.fim.mode}), outputs {[o.name for o in src.outputs()]}")
        for lab in labels[:5]:
            typer.echo(f"  {lab}")
        if len(labels) > 5:
            typer.echo(f"  ... {len(labels) - 5} more")


@app.command()
def mix(
    manifest: _Manifest,
    out: Annotated[Path, out_option("A finished `crystalmix pretrain build` folder; writes its mixed/.")],
    seed: _Seed = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write OUT/mixed/: rows of every folder in one order that follows mixture.yaml's weights.

    What ``mixture: {offline: true}`` does at the end of a build, for a build made without it.
    """
    set_verbosity(quiet, verbose)
    import yaml

    from crystalmix.core.hdf5 import read_metadata
    from pretrain.config import load_manifest
    from pretrain.mix import DONE, MIXED, mix_offline
    from pretrain.outputs import MIXTURE_NAME

    cfg = load_manifest(manifest, seed=seed)
    out = out.resolve()
    mixture = out / MIXTURE_NAME
    if not mixture.is_file():
        raise UserError(f"no {MIXTURE_NAME}: not a finished `crystalmix pretrain build` folder", path=out)
    entries = (yaml.safe_load(mixture.read_text(encoding="utf-8")) or {}).get("mixture") or []
    if not entries:
        raise UserError("the build produced no rows: nothing to mix", path=mixture)
    first = read_metadata(out / entries[0]["data_dir"])
    if int(first["seq_len"]) != cfg.seq_len:
        raise UserError(f"seq_len {cfg.seq_len} in the manifest, but the build has rows of {first['seq_len']}",
                        path=manifest)
    if (out / MIXED / DONE).exists():
        log.warning("%s is already mixed; remove that folder to mix again", out / MIXED)
    composition = mix_offline(out, cfg, int(first["vocab_size"]))
    total = sum(composition.values())
    typer.echo(f"{total:,} sequences in {out / MIXED}")
    for folder, n in composition.items():
        typer.echo(f"  {folder}: {n:,}")
