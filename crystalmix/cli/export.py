"""CLI command for the Hub export: ``crystalmix export BUILD_DIR --out HUB_DIR [--push REPO]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the export command to the main app."""
    app.command("export")(export_command)


def export_command(
    build_dir: Annotated[Path, typer.Argument(help="A finished `crystalmix build` output folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the Hub dataset into.")],
    manifest: Annotated[Path | None, typer.Option(help="The build's manifest (origins and licences).")] = None,
    name: Annotated[str, typer.Option(help="Dataset name for the card.")] = "crystalmix-sft",
    rows_per_shard: Annotated[int, typer.Option(min=1, help="Conversations per parquet shard.")] = 100_000,
    push: Annotated[str | None, typer.Option(help="Also upload to this hub repo id (needs network).")] = None,
    public: Annotated[bool, typer.Option(help="Create the hub repo public (default private).")] = False,
) -> None:
    """Write Hub-ready parquet shards and a dataset card (sources, licences, token counts) for a build."""
    from sft_builder.export import ExportConfig, export_build, push_to_hub

    m = None
    if manifest is not None:
        from sft_builder.manifest import load_manifest

        m = load_manifest(manifest)
    summary = export_build(ExportConfig(build_dir, out, dataset_name=name, rows_per_shard=rows_per_shard), m)
    rows = ", ".join(f"{k} {v:,}" for k, v in summary["rows"].items() if v)
    n_files = sum(len(v) for v in summary["files"].values())
    console.print(f"wrote {out}/README.md and {n_files} parquet shard(s): {rows}")
    if push:
        console.print(f"uploaded: {push_to_hub(out, push, private=not public)}")
