"""What every command shares: the options that mean the same thing everywhere, and logging set up at the edge.

`--out/-o` is where a command writes (for build, export and pretrain build also an fsspec URL: the command runs
in the local `--work` folder and publishes the finished files there), `--workers/-j` a number of processes
(>= 1; outputs never depend on it), `--executor local|ray` with `--ray-address` where tasks run (nor on that),
`--seed` the seed of everything random in a command, `--quiet/-q` only warnings and errors (no progress, no
info lines), `--verbose/-v` debug messages too. Messages go through `logging`: a rich handler when stderr is a
terminal, plain lines otherwise; library modules only log, and this module decides where it goes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crystalmix.core.errors import UserError

if TYPE_CHECKING:
    from crystalmix.core.executors import Executor

PACKAGES = ("crystalmix", "sft_builder", "pretrain")  # the loggers whose INFO messages are the user's
log = logging.getLogger(__name__)


def out_option(help: str) -> Any:  # noqa: A002 - typer's keyword
    """``--out/-o`` with a help text saying what is written there."""
    return typer.Option("--out", "-o", help=help)


ExecutorName = Annotated[str, typer.Option("--executor", help="local (worker processes) or ray (Ray tasks); the "
                                          "output does not depend on it.")]
RayAddress = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address, e.g. auto or "
                                                "ray://head:10001 (default: a local Ray); needs --executor ray.")]
Work = Annotated[Path | None, typer.Option(
    "--work", help="With an --out URL (s3://, gs://, hf://, ...): the local folder the command runs in, kept to "
    "resume (default: one under ~/.cache/crystalmix per URL).")]


def out_target(out: str, kind: str, work: Path | None, *, force: bool = False) -> tuple[Path, str | None]:
    """(local folder to write, URL to publish it to or None); a URL and its work folder are checked now, before
    the work is done. Nothing is said yet: `running_in` does, once the command's inputs are checked too."""
    from crystalmix.core.remote import claim_url, output_target

    local, url = output_target(out, kind, work)
    if url is not None:
        claim_url(url, kind, force=force)
        if local.exists() and not local.is_dir():
            raise UserError("--work names an existing file; give a folder to run in", path=local)
    return local, url


def running_in(local: Path, url: str | None) -> None:
    """Say where a command with an --out URL works (kept to resume), once its inputs passed their checks: a bad
    input is one line and nothing else."""
    if url is not None:
        log.info("running in %s; the finished files go to %s", local, url)


def publish_out(local: Path, url: str | None, kind: str, *, skip: Collection[str] = (), force: bool = False) -> None:
    """Publish `local`'s finished files to `url` (when there is one), and say what moved."""
    if url is None:
        return
    from crystalmix.core.remote import publish

    done = publish(local, url, kind=kind, skip=skip, force=force)
    log.info("published %s: %d file(s) uploaded, %d unchanged, %d removed", url, len(done.uploaded),
             len(done.reused), len(done.removed))


Workers = Annotated[int, typer.Option("--workers", "-j", min=1,
                                      help="Worker processes (>= 1); the output does not depend on it.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors: no progress, no info lines.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also debug messages.")]


def make_executor(name: str, workers: int, ray_address: str | None,
                  local: Callable[[int], Executor] | None = None) -> Executor:
    """The executor ``--executor``/``--workers``/``--ray-address`` name: ``local`` is `local(workers)` (the
    command's own kind of worker processes; by default `LocalExecutor`), ``ray`` one Ray task per item."""
    from crystalmix.core.executors import LocalExecutor, RayExecutor

    if name == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return (local or LocalExecutor)(workers)
    if name == "ray":
        return RayExecutor(ray_address)
    raise UserError(f"unknown executor {name!r}; choose local or ray")


class _PlainFormatter(logging.Formatter):
    """``message`` for info, ``warning: message`` (``error:``, ``debug:``) for the rest: one line each."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno == logging.INFO:
            return text
        return f"{record.levelname.lower()}: {text}"


def _ours_or_warning(record: logging.LogRecord) -> bool:
    """Our packages' messages, and other libraries' warnings and errors (not their info chatter)."""
    return record.levelno >= logging.WARNING or record.name.split(".", 1)[0] in PACKAGES


@contextlib.contextmanager
def logging_to_stderr() -> Iterator[None]:
    """For one command-line run: log records to stderr (rich on a terminal, plain elsewhere), INFO and up from
    our packages; the handler and levels are taken back afterwards (runs in one process leave nothing behind).
    """
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                                               markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter())
    handler.addFilter(_ours_or_warning)
    levels = {name: logging.getLogger(name).level for name in PACKAGES}
    root = logging.getLogger()
    root.addHandler(handler)
    set_verbosity(False, False)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def set_verbosity(quiet: bool, verbose: bool) -> bool:
    """Apply ``-q``/``-v`` to our loggers; returns whether progress is shown."""
    if quiet and verbose:
        raise UserError("--quiet and --verbose exclude each other")
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)
    return not quiet
