"""`crystalmix pretrain ...`: the pretraining sub-app (build, locate, plan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crystalmix.core.errors import UserError

app = typer.Typer(no_args_is_help=True, help="Pretraining stages 1-3: tokenize, FIM, pack to HDF5.")


@app.command()
def build(
    manifest: Annotated[Path, typer.Argument(help="A stage manifest, e.g. manifests/pretrain/demo.yaml.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumable).")],
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray).")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Override the manifest's tokenizer.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the manifest's seed.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Override the manifest's seq_len.")] = None,
    skip_bad_files: Annotated[bool, typer.Option(help="Record unreadable files, do not stop.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild from scratch: discard what the folder holds (needed when it "
                                       "was built with another config or other input content).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build one stage: per source and epoch, data-00000.h5 ... with metadata, index and mixture.yaml."""
    from pretrain.build import build_stage
    from pretrain.config import load_manifest

    cfg = load_manifest(manifest, tokenizer=tokenizer, seed=seed, seq_len=seq_len)
    runner = _executor(executor, workers, ray_address)
    summary = build_stage(cfg, out, runner, force=force, skip_bad_files=skip_bad_files, progress=progress)
    typer.echo(f"{summary['num_sequences']:,} sequences, {summary['non_pad_tokens']:,} tokens in "
               f"{len(summary['folders'])} folders under {out}")
    for key, counts in sorted(summary["documents"].items()):
        dropped = {k: v for k, v in counts.items() if k != "documents_read"}
        typer.echo(f"  {key}: {counts['documents_read']:,} documents read; skipped {dropped or 'none'}")
    for bad in summary["bad_files"]:
        typer.echo(f"  skipped bad file: {bad}")
    if not summary["folders"]:
        typer.echo("warning: no rows were produced; every document was skipped (see build.json)", err=True)


def _executor(name: str, workers: int, ray_address: str | None):  # noqa: ANN202 - one of two executors
    from pretrain.executors import LocalExecutor, RayExecutor

    if name == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address)
    raise UserError(f"unknown executor {name!r}; choose local or ray")


@app.command()
def locate(
    folder: Annotated[Path, typer.Argument(help="One data folder (holding index.json).")],
    sample: Annotated[int, typer.Argument(help="Global sample number, from 0.")],
) -> None:
    """Print the file and row of a global sample number (to resume a trainer from a checkpoint)."""
    from pretrain.outputs import locate as find

    path, row = find(folder, sample)
    typer.echo(json.dumps({"file": str(path), "row": row}))


@app.command()
def plan(
    manifest: Annotated[Path, typer.Argument(help="A stage manifest.")],
) -> None:
    """List the shards a build would run (source, epoch, input), without running them."""
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
