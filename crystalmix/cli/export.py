"""CLI command for the Hub export: ``crystalmix export BUILD_DIR --out HUB_DIR [--push REPO]``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from crystalmix.cli.common import (
    Quiet,
    Verbose,
    Work,
    out_option,
    out_target,
    publish_out,
    running_in,
    set_verbosity,
)

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add the export command to the main app."""
    app.command("export")(export_command)


def export_command(
    build_dir: Annotated[Path, typer.Argument(help="A finished `crystalmix build` output folder.")],
    out: Annotated[str, out_option("Folder or URL to write the Hub dataset into.")],
    manifest: Annotated[Path | None, typer.Option(help="The build's manifest (origins, licences, hub ids).")] = None,
    name: Annotated[str, typer.Option(help="Dataset name (card, LLaMA-Factory entries).")] = "crystalmix-sft",
    pretty_name: Annotated[str | None, typer.Option(help="Title of the card (default: --name).")] = None,
    rows_per_shard: Annotated[int, typer.Option(min=1, help="Records per parquet shard.")] = 100_000,
    push: Annotated[str | None, typer.Option(help="Also upload to this hub repo id (network and a token).")] = None,
    public: Annotated[bool, typer.Option(help="Create the hub repo public (default private).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder or repo holding other files.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    work: Work = None,
) -> None:
    """Write a Hub dataset folder for a build: parquet configs, a dataset card (sources, licences, tokens, plots,
    how to train), LLaMA-Factory's dataset_info.json; optionally push it."""
    set_verbosity(quiet, verbose)
    from sft_builder.export import ExportConfig, export_build, prepare_push, push_to_hub, read_build

    read_build(build_dir)  # a folder that is not a finished build: that one line, before anything is said
    # no token, no network, a refused token or someone else's repo: one line now, before anything is written
    target = prepare_push(push, force=force) if push else None
    m = None
    if manifest is not None:
        from sft_builder.manifest import load_manifest

        m = load_manifest(manifest)
    local, url = out_target(out, "export", work, force=force)
    running_in(local, url)
    cfg = ExportConfig(build_dir, local, dataset_name=name, pretty_name=pretty_name, rows_per_shard=rows_per_shard,
                       repo_id=push, force=force)
    summary = export_build(cfg, m)
    parts = [f"{kind} " + ", ".join(f"{s} {n:,}" for s, n in summary[kind]["rows"].items() if n)
             for kind in ("messages", "text") if any(summary[kind]["rows"].values())]
    n_files = sum(len(f) for kind in ("messages", "text") for f in summary[kind]["files"].values())
    log.info("wrote %s/README.md, dataset_info.json, %d plot(s) and %d parquet shard(s): %s", local,
             len(summary["plots"]), n_files, "; ".join(parts))
    if m is None:
        log.warning("no --manifest: the card names no hub ids and shows the licences as unknown")
    publish_out(local, url, "export", force=force)
    if push:
        log.info("uploaded: %s", push_to_hub(local, push, private=not public, target=target))
