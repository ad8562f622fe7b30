"""CLI command for the build report: ``crystalmix report DIR`` redraws report.html, report.md and the plots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from crystalmix.cli.common import Quiet, Verbose, set_verbosity

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add the report command to the main app."""
    app.command("report")(report_command)


def report_command(
    build_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A `crystalmix build` output folder.")],
    rows: Annotated[int, typer.Option("--rows", min=0, help="Packed rows shown in the sample viewer.")] = 4,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Redraw DIR/report.html (plots, sampled records, packed-row viewer), DIR/report.md and DIR/plots/*.png
    from DIR/report.json."""
    set_verbosity(quiet, verbose)
    log.info("wrote %s", write_html(build_dir, rows))


def write_html(build_dir: Path, rows: int = 4) -> str:
    """Write the report's HTML, markdown and plots; returns a one-line summary of what was written (shared by
    `crystalmix build`)."""
    from sft_builder.report_html import write_html_report

    out = write_html_report(build_dir, viewer=rows)
    return f"{out['html']}, {build_dir / 'report.md'} and {len(out['plots'])} plots in {build_dir / 'plots'}"
