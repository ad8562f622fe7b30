"""Progress for a person watching a long run: a bar with totals and ETA on a terminal, a plain line every 30 s
otherwise (Slurm, nohup, CI logs; ``CRYSTALMIX_PROGRESS_SECONDS`` sets another interval), nothing when disabled.

Library code reports through a callable, ``progress(task, done, total=None, unit="items")``, and never decides
where the output goes: the command line builds a `Progress` (the one implementation of that callable) and hands it
down. Plain lines go through `logging` (logger ``crystalmix.progress``, level INFO), so they appear only where the
caller configured logging. `InputBytes` measures how far a process has read into a set of input files, so a bar
can show bytes of the inputs read against their total size, whatever the format's records look like.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path
from typing import Any, Protocol

from crystalmix.core.errors import UserError

log = logging.getLogger("crystalmix.progress")

PLAIN_INTERVAL = 30.0  # seconds between plain progress lines when stderr is not a terminal
INTERVAL_ENV = "CRYSTALMIX_PROGRESS_SECONDS"  # another interval, for logs read more or less often than that


def plain_interval() -> float:
    """Seconds between plain lines: `INTERVAL_ENV` when set, else `PLAIN_INTERVAL`; a bad value is a `UserError`.

    An environment variable rather than an option of each command: it is about where the output is read (a
    cluster's log, a CI job), set once for every command run there.
    """
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return PLAIN_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise UserError(f"{INTERVAL_ENV} must be a number of seconds above 0, not {raw!r}")
    return seconds


class Reporter(Protocol):
    """What library code calls: `done` of `total` (None: not knowable) in `unit` for the task named `task`."""

    def __call__(self, task: str, done: int, total: int | None = None, unit: str = "items") -> None: ...


def format_amount(n: float, unit: str) -> str:
    """``12.3 MB`` for bytes, ``1,234 records`` for anything else."""
    if unit == "bytes":
        for size, name in ((1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
            if n >= size:
                return f"{n / size:.1f} {name}"
        return f"{int(n)} B"
    return f"{int(n):,} {unit}"


def format_seconds(s: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``."""
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class _Task:
    name: str
    unit: str
    total: int | None
    started: float
    first: int  # the amount at the first report: work resumed from an earlier run takes no time now
    done: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    bar_id: Any = None

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate of this run, or None when the total or the rate is not known yet."""
        if self.total is None or self.done >= self.total:
            return None if self.total is None else 0.0
        rate = (self.done - self.first) / max(now - self.started, 1e-9)
        return (self.total - self.done) / rate if rate > 0 else None

    def describe(self, now: float) -> str:
        if self.total is None:
            text = format_amount(self.done, self.unit)
        else:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            text = f"{format_amount(self.done, self.unit)} of {format_amount(self.total, self.unit)} ({pct:.0f}%)"
        eta = self.eta(now)
        if eta is not None and self.done < (self.total or 0):
            text += f", ETA {format_seconds(eta)}"
        return text


class Progress:
    """Tasks by name, each with an amount done and (when knowable) a total; callable as a `Reporter`.

    ``enabled=False`` shows nothing. Otherwise a rich bar on a terminal (`terminal` None: whether stderr is
    one), and elsewhere one INFO line on ``crystalmix.progress`` every `interval` seconds (None: `plain_interval`)
    listing the unfinished tasks. Use as a context manager, or call `close`.
    """

    def __init__(self, enabled: bool = True, *, label: str = "", interval: float | None = None,
                 terminal: bool | None = None, transient: bool = False) -> None:
        self.enabled = enabled
        self.label = label
        if interval is None:  # read only when it can matter: a bad value does not stop a quiet run
            interval = plain_interval() if enabled else PLAIN_INTERVAL
        self.interval: float = interval
        self.tasks: dict[str, _Task] = {}
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar: Any = None
        if enabled and (sys.stderr.isatty() if terminal is None else terminal):
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=transient)
            self._bar.start()

    def __call__(self, task: str, done: int, total: int | None = None, unit: str = "items", **fields: Any) -> None:
        """Set `task` to `done` (of `total`); extra `fields` (e.g. ``tokens="1.2M tokens/s"``) are shown after it."""
        if not self.enabled:
            return
        now = time.monotonic()
        t = self.tasks.get(task)
        if t is None:
            t = self.tasks[task] = _Task(task, unit, total, now, done)
            if self._bar is not None:
                t.bar_id = self._bar.add_task(task, total=total, text="")
        t.done, t.unit, t.fields = done, unit, {**t.fields, **fields}
        if total is not None:
            t.total = total
        if self._bar is not None:
            text = t.describe(now) + "".join(f", {v}" for v in t.fields.values())
            self._bar.update(t.bar_id, completed=done, total=t.total, text=text)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line: elapsed time, then each unfinished task."""
        now = time.monotonic() if now is None else now
        active = [t for t in self.tasks.values() if t.total is None or t.done < t.total] or list(self.tasks.values())
        parts = [f"{t.name}: {t.describe(now)}" + "".join(f", {v}" for v in t.fields.values()) for t in active]
        head = f"{self.label} " if self.label else ""
        return f"{head}progress after {format_seconds(now - self._start)}: " + "; ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InputBytes:
    """How many bytes of a set of input files this process has read so far, against their total size.

    The position of each open descriptor on one of the files is read with ``lseek`` (descriptors are listed
    from ``/dev/fd``); files before the furthest open one (the list is in reading order) count as read. No
    reader has to cooperate, so it works for every format that reads through a file descriptor (JSON, JSONL,
    and their .gz/.zst, whose compressed bytes are what is counted). Where descriptors cannot be listed, or a
    file is read by memory map, the count moves file by file or not at all; `done` never goes backwards.
    """

    MIN_GAP = 0.2  # seconds between two looks at the descriptors (a look costs one fstat per open descriptor)

    def __init__(self, files: Iterable[tuple[str | os.PathLike[str], int]]) -> None:
        self._index: dict[tuple[int, int], int] = {}
        self._sizes: list[int] = []
        for path, size in files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in self._index:
                self._index[key] = len(self._sizes)
                self._sizes.append(int(size))
        self.total = sum(self._sizes)
        self._done = 0
        self._last = 0.0
        self._fd_dir = next((d for d in ("/dev/fd", "/proc/self/fd") if os.path.isdir(d)), None)

    def done(self) -> int:
        """Bytes read so far (looked up at most every `MIN_GAP` seconds)."""
        now = time.monotonic()
        if now - self._last < self.MIN_GAP or self._fd_dir is None or not self._sizes:
            return self._done
        self._last = now
        furthest, here = -1, 0
        try:
            fds = [int(x) for x in os.listdir(self._fd_dir)]
        except (OSError, ValueError):
            return self._done
        for fd in fds:
            try:
                st = os.fstat(fd)
                i = self._index.get((st.st_dev, st.st_ino))
                if i is not None and i >= furthest:
                    pos = min(os.lseek(fd, 0, os.SEEK_CUR), self._sizes[i])
                    here = pos if i > furthest else max(here, pos)
                    furthest = i
            except OSError:  # closed since the listing, or not seekable
                continue
        if furthest >= 0:
            self._done = max(self._done, sum(self._sizes[:furthest]) + here)
        return self._done


def local_files(specs: Iterable[str | os.PathLike[str]]) -> list[tuple[str, int]] | None:
    """The files under input specs (files, folders, globs) with their sizes, in reading order.

    None when a spec is not a local path (a hub id, a URL), whose size is not known before it is read.
    """
    from crystalmix.core.remote import is_url

    out: list[tuple[str, int]] = []
    for spec in specs:
        text = str(spec)
        if is_url(text):
            return None
        path = Path(text).expanduser()
        if path.exists():
            matches = [path]
        elif has_magic(text) and not text.startswith("hf:"):
            matches = sorted(Path(m) for m in glob(text, recursive=True))
        else:
            return None
        for m in matches:
            for f in sorted(m.rglob("*")) if m.is_dir() else [m]:
                if f.is_file():
                    out.append((str(f), f.stat().st_size))
    return out


def input_meter(specs: Iterable[str | os.PathLike[str]]) -> InputBytes | None:
    """An `InputBytes` over the files of `specs`, or None when one is not local (see `local_files`)."""
    files = local_files(specs)
    return None if files is None else InputBytes(files)
