"""Pools of worker processes that fail fast, report a failed start-up as its own error, and die with their parent.

`WorkerPool` is a `concurrent.futures.ProcessPoolExecutor` (a dead worker breaks the pool and fails its
tasks; `multiprocessing.Pool` respawns a worker whose initializer fails forever, and waits forever for the
task of a killed one) with four more guarantees, for every pool of both wings:

- an exception in the initializer is kept and raised by each task the worker is given, so the run ends
  with that error's own message (a `UserError` stays one line naming its file), not ``BrokenProcessPool``;
- workers die with their parent: on Linux the kernel kills them when it dies (``PR_SET_PDEATHSIG``),
  elsewhere a thread polls the parent's pid; a ``kill -9`` of a build leaves no orphan working on;
- leaving the ``with`` block on an error cancels queued tasks and kills running workers at once (their
  writes are atomic, so nothing half-written is left under a final name); on Ctrl-C it waits for them;
- a worker takes a Ctrl-C only once it can stop cleanly (`crystalmix.core.interrupt.starting_workers`).

Workers are started by the thread that submits (Linux ties the death signal to that thread): submit from
a thread that outlives the pool, as every caller here does (the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context, resource_tracker
from types import TracebackType
from typing import Any, Literal

from crystalmix.core.interrupt import starting_workers, worker_init, worker_task

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_INIT_ERROR: BaseException | None = None  # the initializer's exception, in a worker process


def die_with_parent(parent: int) -> None:
    """End this process when `parent` (the pid it was started by) ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the signal was armed
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _start(parent: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    global _INIT_ERROR
    die_with_parent(parent)
    worker_init()  # Ctrl-C: the running task stops cleanly, the worker stays silent (crystalmix.core.interrupt)
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - raised again by the first task (see _call)
        _INIT_ERROR = exc


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    with worker_task():
        return fn(*args, **kwargs)


class WorkerPool(ProcessPoolExecutor):
    """`workers` processes started by `start` (``fork`` or ``spawn``); see the module docstring."""

    def __init__(self, workers: int, *, start: Literal["fork", "spawn"] = "spawn",
                 initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()) -> None:
        super().__init__(max_workers=max(1, workers), mp_context=get_context(start), initializer=_start,
                         initargs=(os.getpid(), initializer, tuple(initargs)))
        if start != "fork":
            # started now, not during a launch: starting it unblocks SIGINT in the launching thread (bpo-33613)
            resource_tracker.ensure_running()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:  # type: ignore[override]
        with starting_workers():  # a submit starts the workers the pool still lacks
            return super().submit(_call, fn, args, kwargs)

    def abort(self) -> None:
        """Cancel queued tasks and kill the running workers now."""
        procs = list((getattr(self, "_processes", None) or {}).values())
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        if exc_type is None:
            return super().__exit__(exc_type, exc, tb)
        if issubclass(exc_type, KeyboardInterrupt):  # the workers got the Ctrl-C too: let them clean up
            self.shutdown(wait=True, cancel_futures=True)
        else:
            self.abort()
        return False
