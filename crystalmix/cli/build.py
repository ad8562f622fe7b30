"""CLI commands for the build area: ``crystalmix build MANIFEST --out DIR`` and ``build --check MANIFEST``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

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


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("build")(build_command)


def build_command(
    manifest: Annotated[Path, typer.Argument(help="The build manifest (YAML).")],
    out: Annotated[str | None, out_option("Output folder or URL (not for --check).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only validate the manifest, its inputs.")] = False,
    workers: Workers = 1,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder holding other files.")] = False,
    work: Work = None,
) -> None:
    """Turn the sources of a manifest into one deduplicated, filtered, weighted mix of conversations."""
    show_progress = set_verbosity(quiet, verbose)
    from sft_builder.build import local_executor
    from sft_builder.manifest import load_manifest

    runner = make_executor(executor, workers, ray_address, local=local_executor)  # checked before any work

    m = load_manifest(manifest)
    if check:
        run_check(m)
        return
    if out is None:
        raise UserError("--out DIR is required to build (or use --check)")
    local, url = out_target(out, "build", work, force=force)
    running_in(local, url)  # the manifest and its inputs were checked when it was loaded
    from rich.console import Console

    from crystalmix.core.progress import Progress
    from sft_builder.build import build, steady_allocator
    from sft_builder.report import print_report

    steady_allocator()  # process-wide, so set here at the edge and not inside `build`
    with Progress(show_progress, label="build", transient=True) as progress:
        result = build(m, local, progress=progress, force=force, executor=runner)
    print_report(result.report, Console())
    for name, why in m.skipped:
        log.warning("skipped %s: %s", name, why)
    skipped = f" (reused {len(result.skipped_stages)} finished stages)" if result.skipped_stages else ""
    log.info("wrote %s/conversations, rejects/, report.json, report.md%s", local, skipped)
    from crystalmix.cli.report import write_html

    log.info("wrote %s", write_html(local))
    publish_out(local, url, "build", skip=(".work",), force=force)


def run_check(m: Any) -> None:
    """Everything but running: structure, adapters and options were checked on load; here the inputs."""
    from rich.console import Console
    from rich.table import Table

    from sft_builder.manifest import hub_name, is_hub

    table = Table(title=f"{m.path}: OK", title_justify="left")
    for col in ("source", "adapter", "inputs", "mixing", "steps off"):
        table.add_column(col)
    notes = []
    for s in m.sources:
        shown = []
        for spec in s.inputs:
            if is_hub(spec) and not Path(spec).exists():
                shown.append(f"hub {hub_name(spec)} [{s.split}]")
                note = check_hub(hub_name(spec), s.data_files)
                if note:
                    notes.append(f"{s.name}: {note}")
            else:
                shown.append(spec if "://" in spec else os.path.relpath(spec))
        mixing = (
            f"epochs {s.epochs}"
            if s.epochs is not None
            else f"weight {1.0 if s.weight is None else s.weight}"
        )
        if s.max_samples is not None:
            mixing += f", max {s.max_samples}"
        table.add_row(
            s.name,
            s.adapter,
            "\n".join(shown),
            mixing,
            ", ".join(n for n in m.order if n not in s.steps) or "-",
        )
    Console().print(table)
    tok = getattr(m.tokenize, "tokenizer", None)
    if tok and tok != "demo" and is_hub(tok) and not Path(tok).exists():
        notes.append(f"tokenize: tokenizer {tok} is a hub id, fetched when the tokenize stage runs (its form "
                     "checked here)")
    for name, why in m.skipped:
        notes.append(f"{name}: {why}")
    for n in notes:
        log.info("%s", n)


def check_hub(name: str, data_files: tuple[str, ...]) -> str:
    """Resolve a hub dataset (and its data_files) when online; offline, its form was already checked."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return f"hub id {name} checked for form only (HF_HUB_OFFLINE=1)"
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:
        return f"hub id {name} checked for form only (huggingface_hub not installed)"
    try:
        info = HfApi().dataset_info(name, timeout=5, files_metadata=False)
    except RepositoryNotFoundError:
        raise UserError(f"hub dataset {name!r} does not exist (or is private)") from None
    except Exception as exc:  # network errors of any kind mean offline: fall back to the form check
        return f"hub id {name} checked for form only (hub not reachable: {type(exc).__name__})"
    files = {s.rfilename for s in (info.siblings or [])}
    missing = [f for f in data_files if not any(Path(x).match(f) or x == f for x in files)]
    if missing:
        raise UserError(f"hub dataset {name!r} has no file matching {', '.join(missing)}")
    return ""
