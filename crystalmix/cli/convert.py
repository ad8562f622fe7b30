"""`crystalmix sources` and `crystalmix convert`: list the adapters; turn one source into interchange JSONL.

`convert_source` is the whole conversion as a function (the CLI and the benchmark call it): it streams
records through the adapter into the output and rejects files (both written atomically) and returns the
report, whose ``read`` always equals ``kept + rejected``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crystalmix.cli.common import Quiet, Verbose, out_option, set_verbosity
from crystalmix.core.atomic import atomic_open, write_json
from crystalmix.core.errors import UserError
from crystalmix.core.progress import Progress, input_meter
from crystalmix.core.records import Conversation, InvalidRecordError, Rejected, RejectWriter, rejects_path_for
from sft_builder.sources.base import Adapter, adapter_names, get_adapter_class, make_adapter

PROGRESS_EVERY = 4096  # outputs between progress-bar updates; per-record updates would cost more than parsing
WRITE_BATCH = 64  # output lines joined into one write


def parse_option_args(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` strings from ``--option`` into a mapping (values are coerced by the adapter)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def convert_source(adapter: Adapter[Any], inputs: Sequence[str], out: Path, rejects: Path | None = None, *,
                   split: str = "train", data_files: Sequence[str] | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Convert `inputs` with `adapter` into `out` (+ rejects file); return the report dict."""
    rejects = rejects or rejects_path_for(out)
    if Path(out).resolve() == Path(rejects).resolve():
        raise UserError("--out and --rejects must be different files", path=out)
    stream = adapter.stream(list(inputs), split=split, data_files=list(data_files) if data_files else None)
    kept = 0
    bar = _Progress(progress, inputs)
    with bar, atomic_open(out, "wb") as fo, RejectWriter(rejects) as rej_out:
        write_out, write_rej = fo.write, rej_out.write
        batch: list[bytes] = []  # output lines, written WRITE_BATCH at a time (one write call per line costs more)
        n = 0
        for item in stream:
            n += 1
            if n % PROGRESS_EVERY == 0:
                bar.update(n)
            if type(item) is Conversation:
                try:
                    batch.append(item.to_json_bytes())
                except InvalidRecordError as exc:  # meta text UTF-8 cannot hold
                    write_rej(Rejected.of(item, "adapter", exc.reason, exc.detail))
                    continue
                kept += 1
                if len(batch) == WRITE_BATCH:
                    write_out(b"".join(batch))
                    batch.clear()
                continue
            assert isinstance(item, Rejected), f"adapter yielded {type(item).__name__}"
            write_rej(item)
        write_out(b"".join(batch))
        bar.finish(n)
    reasons = rej_out.counts
    rejected = sum(reasons.values())
    stats = adapter.stats
    if stats.candidates != kept + rejected:  # an adapter bug, not a user error: crash loudly
        raise RuntimeError(f"adapter {adapter.name} lost count: read {stats.candidates} != "
                           f"kept {kept} + rejected {rejected}")
    return {
        "adapter": adapter.name,
        "source": adapter.source,
        "options": dataclasses.asdict(adapter.options),
        "inputs": [str(i) for i in inputs],
        "records": stats.records,
        "read": stats.candidates,
        "kept": kept,
        "rejected": rejected,
        "reasons": dict(sorted(reasons.items())),
        "fixes": dict(sorted(stats.fixes.items())),
        "out": str(out),
        "rejects": str(rejects),
    }


class _Progress:
    """Bytes of the inputs read (records, for hub datasets) on a terminal bar or a plain line every 30 s."""

    def __init__(self, enabled: bool, inputs: Sequence[str]) -> None:
        self._bar = Progress(enabled, label="convert", transient=True)
        self._meter = input_meter(inputs) if enabled else None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def update(self, n: int) -> None:
        if self._meter is None:
            self._bar("convert", n, None, "records")
        else:
            self._bar("convert", self._meter.done(), self._meter.total, "bytes", records=f"{n:,} records")

    def finish(self, n: int) -> None:
        if self._meter is not None:
            self._bar("convert", self._meter.total, self._meter.total, "bytes", records=f"{n:,} records")


def summary_table(report: dict[str, Any]) -> Table:
    """The one-screen summary printed after a conversion."""
    table = Table(title=f"convert {report['source']} ({report['adapter']})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key in ("records", "read", "kept", "rejected"):
        table.add_row(key, f"{report[key]:,}")
    top = sorted(report["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    for reason, count in top[:10]:
        table.add_row(f"  rejected: {reason}", f"{count:,}")
    if len(top) > 10:
        table.add_row("  rejected: (other reasons)", f"{sum(c for _, c in top[10:]):,}")
    for fix, count in report["fixes"].items():
        table.add_row(f"  repaired: {fix}", f"{count:,}")
    table.add_row("out", escape(report["out"]))
    table.add_row("rejects", escape(report["rejects"]))
    return table


def _describe_options(options_cls: type) -> str:
    parts = []
    for f in dataclasses.fields(options_cls):
        default: Any = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        plain = isinstance(default, str) and default.isprintable() and " " not in default
        parts.append(f"{f.name}={default if plain or isinstance(default, bool) else json.dumps(default)}")
    return "\n".join(parts) or "(none)"


def sources(quiet: Quiet = False, verbose: Verbose = False) -> None:
    """List the source adapters, the forms each reads, and its options (with defaults)."""
    set_verbosity(quiet, verbose)
    table = Table(title="crystalmix source adapters", show_lines=True)
    table.add_column("adapter", style="bold")
    table.add_column("reads")
    table.add_column("options (default)")
    for name in adapter_names():
        cls = get_adapter_class(name)
        table.add_row(name, cls.forms, _describe_options(cls.Options))
    Console().print(table)


_Options = Annotated[list[str] | None, typer.Option("--option", help="Adapter option key=value (repeatable).")]
_Rejects = Annotated[Path | None, typer.Option("--rejects", help="Rejects JSONL [OUT.rejects.jsonl].")]


def convert(
    inputs: Annotated[list[str], typer.Argument(help="Files, folders, globs or hub ids.")],
    source: Annotated[str, typer.Option("--source", help="Adapter name (see `crystalmix sources`).")],
    out: Annotated[Path, out_option("Output interchange JSONL.")],
    option: _Options = None,
    rejects: _Rejects = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the report as JSON here.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of hub / save_to_disk datasets.")] = "train",
    data_files: Annotated[list[str] | None, typer.Option("--data-files", help="Hub data_files.")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Convert one source's records into crystalmix interchange JSONL, with rejects and a report."""
    show_progress = set_verbosity(quiet, verbose)
    adapter = make_adapter(source, parse_option_args(option or []))
    result = convert_source(adapter, inputs, out, rejects, split=split, data_files=data_files,
                            progress=show_progress)
    if report is not None:
        write_json(report, result)
    if show_progress:  # the summary is a message: --quiet leaves only --out, the rejects and --report
        Console(stderr=True).print(summary_table(result))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("sources")(sources)
    app.command("convert")(convert)
