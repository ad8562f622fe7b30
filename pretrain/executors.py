"""Executors: run `stages.run_shard` over a shard plan, in local processes or as Ray tasks.

Both call the very same function; they differ only in where it runs. Results are keyed by shard name and
the final pass orders them by the plan, so completion order never reaches the output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.progress import Progress as Bar
from crystalmix.core.workers import WorkerPool
from pretrain.stages import ShardTask, read_marker, run_shard, set_worker_env

Marker = dict[str, Any]
OnDone = Callable[[ShardTask, Marker], None]


def shard_tokens(marker: Marker) -> int:
    return sum(int(o["stats"].get("non_pad_tokens", 0)) for o in marker["outputs"].values())


class LocalExecutor:
    """`workers` processes (spawned, one tokenizer thread each); 1 runs in this process."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    def run(self, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]:
        # the calling process's environment is its own: one worker runs with whatever threads it allows
        # (the CLI sets one tokenizer thread at its edge); spawned workers set it in their initializer
        results: dict[str, Marker] = {}
        if self.workers == 1:
            for task in tasks:
                results[task.name] = run_shard(task)
                on_done(task, results[task.name])
            return results
        # spawned: fresh processes, no inherited tokenizer threads or Ray state; they die with this process,
        # and the first error stops the others at once (no new shards)
        with WorkerPool(self.workers, start="spawn", initializer=set_worker_env) as pool:
            pending: dict[Future[Marker], ShardTask] = {}
            queue = iter(tasks)
            for task in _take(queue, self.workers * 2):  # a bounded window: the plan can be huge
                pending[pool.submit(run_shard, task)] = task
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    results[task.name] = fut.result()  # re-raises a worker's UserError here
                    on_done(task, results[task.name])
                for task in _take(queue, len(finished)):
                    pending[pool.submit(run_shard, task)] = task
        return results


def _take(it: Iterator[ShardTask], n: int) -> list[ShardTask]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


class RayExecutor:
    """One Ray task per shard (1 CPU each); the optional ``[ray]`` extra is imported only here."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus

    def run(self, tasks: list[ShardTask], on_done: OnDone) -> dict[str, Marker]:
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'crystalmix[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
            if self.address:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        remote = ray.remote(num_cpus=1, max_retries=2)(run_shard)
        results: dict[str, Marker] = {}
        try:
            todo = []
            for task in tasks:  # finished shards need no worker at all
                done = read_marker(task)
                if done is not None:
                    results[task.name] = {**done, "resumed": True}
                    on_done(task, results[task.name])
                else:
                    todo.append(task)
            refs = {remote.remote(t): t for t in todo}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        results[task.name] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        if isinstance(exc.cause, UserError):  # a bad file: one line, like locally
                            raise exc.cause from None
                        raise
                    on_done(task, results[task.name])
        finally:
            if started_here:
                ray.shutdown()
        return results


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
            self._sizes = {t.name: sum(os.path.getsize(p) for p in t.paths) for t in tasks}
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
