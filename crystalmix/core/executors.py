"""Executors: one ordered map for both wings, run in local worker processes or as Ray tasks.

`Executor.imap(fn, items)` yields ``fn(item)`` for each item in the order of `items`, whatever order the
tasks finish in, so where a task ran never reaches the output. At most `window` tasks are in flight (the
items are read lazily and the finished results wait only for the ones before them), so memory does not grow
with the number of tasks. The first task that fails ends the map with its own error; the rest are cancelled.

Use an executor as a context manager around several maps (a Ray session is then started once); a map
outside one starts and stops what it needs by itself.

`Executor.shared_disk` says whether a task may open this process's files. Where it may not (Ray: a node
of a cluster has its own disk), the callers send a task the data it reads and have it hand back the bytes
of what it makes, and write those here: a task then reads only the user's inputs (URLs, or paths that must
exist on every node) and its own temporary folder.
"""

from __future__ import annotations

import importlib.util
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from crystalmix.core.errors import UserError
from crystalmix.core.workers import WorkerPool

T = TypeVar("T")
R = TypeVar("R")

RAY_EXTRA = "pip install 'crystalmix[ray]'"
# one tokenizer thread per task, so a task takes the one CPU it is given (and N tasks mean N cores)
TASK_ENV: dict[str, str] = {"TOKENIZERS_PARALLELISM": "false"}


class Executor(Protocol):
    """Where tasks run; `imap` is the ordered map every caller uses."""

    @property
    def in_process(self) -> bool: ...

    @property
    def shared_disk(self) -> bool: ...

    def imap(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class LocalExecutor:
    """`workers` processes of a `WorkerPool` (started by `start`, each running `initializer` first);
    one worker runs each task in this process, lazily, with no pool at all. Inside ``with`` the maps share
    one pool, started at the first task and ended with the (innermost) block it was started in: a stage of
    many maps starts its workers once, and a stage in a block of its own gets workers forked from what the
    process holds then.

    In this process `fn` may be any callable; with a pool, `fn` and the items must pickle (``fork`` shares
    what the parent loaded, ``spawn`` starts fresh processes that inherit no threads or sessions).
    """

    def __init__(self, workers: int = 1, *, start: Literal["fork", "spawn"] = "spawn",
                 initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = (),
                 window: int | None = None) -> None:
        self.workers = max(1, workers)
        self.start, self.initializer, self.initargs = start, initializer, tuple(initargs)
        # a few tasks per worker, so a slow task at the head of the order leaves the others busy
        self.window = max(1, window or 4 * self.workers)
        self._depth = 0
        self._pool: WorkerPool | None = None
        self._pool_depth = 0  # the `with` block that started the pool: the pool ends with it

    @property
    def in_process(self) -> bool:
        """Whether tasks run in the calling process (so they may take callbacks and other unpicklable things)."""
        return self.workers == 1

    @property
    def shared_disk(self) -> bool:
        """Worker processes on this machine see its files: tasks read and write the stage folders directly."""
        return True

    def imap(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self.in_process:
            # the caller's environment is its own: the initializer is for worker processes only
            return map(fn, items)
        return self._pooled(fn, items)

    def _pooled(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self._depth == 0:  # a map on its own: its own pool, gone when it ends
            with self._new_pool() as pool:
                yield from self._ordered(pool, fn, items)
            return
        if self._pool is None:  # inside `with`: one pool for every map until the block ends
            self._pool, self._pool_depth = self._new_pool(), self._depth
        pool = self._pool
        try:
            yield from self._ordered(pool, fn, items)
        except BaseException as exc:
            # an error, or a caller that stopped reading: the pool ends as a `with` block ends on one (its
            # running tasks killed; on Ctrl-C they finish cleaning up), and the next map starts a new one
            self._pool = None
            pool.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def _new_pool(self) -> WorkerPool:
        return WorkerPool(self.workers, start=self.start, initializer=self.initializer, initargs=self.initargs)

    def _ordered(self, pool: WorkerPool, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        queue = iter(items)
        pending: deque[Future[R]] = deque()
        for item in _take(queue, self.window):
            pending.append(pool.submit(fn, item))
        while pending:
            _wait_head(pending)
            result = pending.popleft().result()
            for item in _take(queue, 1):  # before the caller takes its time with the result
                pending.append(pool.submit(fn, item))
            yield result

    def __enter__(self) -> LocalExecutor:
        self._depth += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._pool is not None and self._depth < self._pool_depth:
            pool, self._pool = self._pool, None
            pool.__exit__(exc_type, exc, tb)


def _wait_head(pending: deque[Future[Any]]) -> None:
    """Wait until the first future is done, raising at once the error of any that fails before it."""
    while not pending[0].done():
        running = [f for f in pending if not f.done()]
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            if not fut.cancelled() and fut.exception() is not None:
                fut.result()  # a later task failed first: its error, not a wait for the head


def _take(it: Iterator[T], n: int) -> list[T]:
    out: list[T] = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


class RayExecutor:
    """One Ray task per item (1 CPU each) on the cluster at `address`, or on a local Ray with `num_cpus`.

    Ray (the optional ``[ray]`` extra) is imported only here. Ray is started only when this process has
    none running, and then stopped when the outermost ``with`` (or a map outside one) ends; a session the
    caller started is left as it was. A task's `UserError` is raised again as itself (one line, exit 2).
    A task may run on a node without this machine's disk (`shared_disk` is False), so the callers send it
    what it reads and write what it returns; inputs given as local paths must exist on every node.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 env: Mapping[str, str] | None = None, window: int | None = None,
                 max_retries: int = 2) -> None:
        if importlib.util.find_spec("ray") is None:  # said now, before any work, without importing Ray
            raise UserError(f"the Ray executor needs Ray: {RAY_EXTRA}")
        self.address, self.num_cpus = address, num_cpus
        self.env = dict(TASK_ENV if env is None else env)
        self.window, self.max_retries = window, max_retries
        self._depth = 0
        self._started = False

    in_process = False
    shared_disk = False  # even on a local Ray: one code path for one machine and for a cluster

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise UserError(f"the Ray executor needs Ray: {RAY_EXTRA}") from None
        return ray

    def __enter__(self) -> RayExecutor:
        ray = self._ray()
        if self._depth == 0 and not ray.is_initialized():
            runtime_env = {"env_vars": self.env}
            if self.address:
                ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, runtime_env=runtime_env,
                         log_to_driver=False)
            self._started = True
        self._depth += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0 and self._started:
            self._started = False
            self._ray().shutdown()

    def imap(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        self._ray()  # a missing Ray is a one-line error now, not at the first result
        return self._tasks(fn, items)

    def _tasks(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        with self:
            ray = self._ray()
            remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(fn)
            window = self.window or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
            queue = iter(items)
            pending: deque[Any] = deque()
            ready: dict[Any, Any] = {}  # finished results waiting for the ones before them (at most `window`)
            try:
                for item in _take(queue, window):
                    pending.append(remote.remote(item))
                while pending:
                    head = pending[0]
                    while head not in ready:
                        running = [r for r in pending if r not in ready]
                        done, _ = ray.wait(running, num_returns=1)
                        for ref in done:  # fetched now, so a later task's failure ends the map at once
                            ready[ref] = _get(ray, ref)
                    pending.popleft()
                    result = ready.pop(head)
                    for item in _take(queue, 1):
                        pending.append(remote.remote(item))
                    yield result
            finally:
                # only tasks still queued or running, and without force: force-cancelling a task that has just
                # finished (the failed one among them) can trip a check in Ray's task manager that aborts the
                # driver process; a running task gets a KeyboardInterrupt, and a Ray this map started is shut down
                unfinished = [r for r in pending if r not in ready]
                if unfinished:
                    finished, _ = ray.wait(unfinished, num_returns=len(unfinished), timeout=0)
                    for ref in set(unfinished) - set(finished):
                        ray.cancel(ref, force=False)


def _get(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):  # a bad file: one line, like locally
            raise exc.cause from None
        raise

