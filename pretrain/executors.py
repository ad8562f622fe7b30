"""Pretraining's executors: `stages.run_shard` over a shard plan, on `crystalmix.core.executors`.

Local processes and Ray tasks run the very same function through the core layer's ordered map (on Ray,
whose nodes may not see this disk, inside `stages.run_detached`: a shard's files come back as bytes and are
written here); this module adds only what a shard plan needs: shards whose done-marker is valid are not
sent to any worker, and each finished shard is reported to a callback. Results are keyed by shard name, and
the final pass orders them by the plan, so where or when a shard ran never reaches the output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from crystalmix.core import executors as core
from crystalmix.core.progress import Progress as Bar
from crystalmix.core.remote import size as input_size
from pretrain.stages import ShardTask, detached, land, read_marker, run_detached, run_shard, set_worker_env

Marker = dict[str, Any]
OnDone = Callable[[ShardTask, Marker], None]


def shard_tokens(marker: Marker) -> int:
    return sum(int(o["stats"].get("non_pad_tokens", 0)) for o in marker["outputs"].values())


def _run(task: ShardTask) -> Marker:
    return run_shard(task)  # looked up when called, so a test can stand in for it in this process


def _run_detached(task: ShardTask) -> tuple[Marker, dict[str, bytes]]:
    return run_detached(task)


def run_plan(executor: core.Executor, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]:
    """Run the shards of `tasks` not yet done on `executor`; returns every shard's marker by name."""
    results: dict[str, Marker] = {}
    todo = []
    for task in tasks:  # finished shards need no worker at all
        done = read_marker(task)
        if done is not None:
            results[task.name] = {**done, "resumed": True}
            on_done(task, results[task.name])
        else:
            todo.append(task)
    with executor:
        if executor.shared_disk:
            markers = executor.imap(_run, todo)
        else:  # a shard built where this disk is not: its files come back and are written here
            done = executor.imap(_run_detached, detached(todo))
            markers = (land(t, *out) for t, out in zip(todo, done, strict=True))
        for task, marker in zip(todo, markers, strict=True):
            results[task.name] = marker
            on_done(task, marker)
    return results


class LocalExecutor(core.LocalExecutor):
    """`workers` spawned processes (fresh: no inherited tokenizer threads or Ray state), one tokenizer
    thread each; 1 runs in this process, with whatever threads the caller allows (the CLI sets one)."""

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers, start="spawn", initializer=set_worker_env)

    def run(self, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]:
        return run_plan(self, tasks, on_done)


class RayExecutor(core.RayExecutor):
    """One Ray task per shard (1 CPU each); Ray is imported only when it runs."""

    def run(self, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]:
        return run_plan(self, tasks, on_done)


class Progress:
    """Shards done, as bytes of their inputs when all are local files (else shards), with tokens and tokens/s.

    Fed by whichever executor runs; drawn by `crystalmix.core.progress.Progress` (a bar on a terminal, a
    plain line every 30 s elsewhere).
    """

    def __init__(self, tasks: list[ShardTask], enabled: bool = True) -> None:
        self.total, self.tokens, self.shards = len(tasks), 0, 0
        self.start = time.perf_counter()
        self._sizes: dict[str, int] | None = None
        if all(t.paths for t in tasks):
            self._sizes = {t.name: sum(input_size(p) for p in t.paths) for t in tasks}
        self._done = 0
        self._bar = Bar(enabled, label="pretrain build")

    def __call__(self, task: ShardTask, marker: Marker) -> None:
        self.shards += 1
        if not marker.get("resumed"):  # shards finished by an earlier run took no time now
            self.tokens += shard_tokens(marker)
        tokens = f"{self.tokens:,} tokens, {self.rate:,.0f} tokens/s"
        if self._sizes is None:
            self._bar("shards", min(self.shards, self.total), self.total, "shards", tokens=tokens)
        else:
            total = sum(self._sizes.values())
            self._done = min(self._done + self._sizes[task.name], total)  # a shard run again is not counted twice
            self._bar("shards", self._done, total, "bytes", shards=f"{min(self.shards, self.total)}/{self.total} "
                      "shards", tokens=tokens)

    @property
    def rate(self) -> float:
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        self._bar.close()
