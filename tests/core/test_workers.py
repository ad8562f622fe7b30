"""WorkerPool: a failed start-up is the first task's error, a dead worker breaks the pool, workers die with it.

Every wait has a timeout, so a regression fails here instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from crystalmix.core.workers import WorkerPool

WAIT = 60


def _bad_start(path: str) -> None:
    raise UserError("cannot load the template", path=path)


def _square(x: int) -> int:
    return x * x


def _die(_: int) -> int:
    os._exit(3)


def _pid(_: int) -> int:
    return os.getpid()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_initializer_error_is_raised_by_the_first_task(start: str) -> None:
    with pytest.raises(UserError, match=r"^t\.jinja: cannot load the template$") as info:  # noqa: PT012
        with WorkerPool(2, start=start, initializer=_bad_start, initargs=("t.jinja",)) as pool:  # type: ignore[arg-type]
            futures = [pool.submit(_square, i) for i in range(20)]
            futures[0].result(timeout=WAIT)
    assert info.value.path == "t.jinja"


def test_tasks_run_and_map_keeps_order() -> None:
    with WorkerPool(2, start="fork") as pool:
        assert list(pool.map(_square, range(10), timeout=WAIT)) == [i * i for i in range(10)]


def test_a_dead_worker_breaks_the_pool() -> None:
    with pytest.raises(BrokenProcessPool), WorkerPool(2, start="fork") as pool:
        pool.submit(_die, 0).result(timeout=WAIT)


def test_an_error_kills_the_running_workers() -> None:
    with pytest.raises(ValueError), WorkerPool(2, start="fork") as pool:  # noqa: PT012
        pids = set(pool.map(_pid, range(8), timeout=WAIT))
        pool.submit(time.sleep, 600)
        procs = list(pool._processes.values())  # type: ignore[union-attr]
        raise ValueError("stop")
    assert pids
    # Asked of the kernel, not of `Process.is_alive`: the pool's own manager thread may be reaping the same
    # children at that moment, and a second waitpid then reads as "still running". Killed, they are gone at
    # once; left alone, the sleeping one would run 600 s.
    deadline = time.monotonic() + WAIT
    while any(alive(p.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p.pid) for p in procs)


SCRIPT = textwrap.dedent("""
    import sys, time
    from crystalmix.core.workers import WorkerPool
    pool = WorkerPool(2, start=sys.argv[1])
    futures = [pool.submit(time.sleep, 600) for _ in range(2)]
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_die_with_a_killed_parent(tmp_path: Path, start: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, start], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(p) for p in workers)
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)
