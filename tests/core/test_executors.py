"""The core executors' ordered map: input order whatever the finishing order, a bounded window of tasks,
the first error ends the map (with its own message), and a missing Ray is one line naming the extra.

Every wait has a timeout, so a regression fails here instead of hanging the suite.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from crystalmix.core.executors import LocalExecutor, RayExecutor

WAIT = 60


def _slow_first(x: int) -> tuple[int, int]:
    """Early items finish last, so completion order is the reverse of input order."""
    time.sleep(0.02 * max(0, 5 - x))
    return x, x * x


def _touch(args: tuple[str, int]) -> int:
    folder, x = args
    if x == 2:
        raise UserError("bad input", path=f"item-{x}.jsonl")
    Path(folder, f"{x}.done").touch()
    return x


def _head_waits(args: tuple[str, int]) -> int:
    """Item 0 waits for item 1's file; item 1 fails. The map must raise item 1's error, not wait for 0."""
    folder, x = args
    if x == 1:
        raise ValueError("the second item fails")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if Path(folder, "never").exists():
            return x
        time.sleep(0.05)
    raise TimeoutError("the head was waited for")


@pytest.mark.parametrize(("workers", "start"), [(1, "spawn"), (2, "fork"), (2, "spawn")])
def test_results_come_in_input_order(workers: int, start: str) -> None:
    ex = LocalExecutor(workers, start=start)  # type: ignore[arg-type]
    assert list(ex.imap(_slow_first, range(12))) == [(x, x * x) for x in range(12)]
    assert ex.in_process == (workers == 1)
    assert ex.shared_disk  # local workers write the stage folders themselves


def test_one_worker_runs_here_lazily() -> None:
    seen: list[int] = []

    def fn(x: int) -> int:  # a closure: it could not reach a worker process
        seen.append(os.getpid())
        return x + 1

    it = LocalExecutor(1).imap(fn, range(3))
    assert seen == []  # nothing runs until a result is asked for
    assert next(it) == 1 and seen == [os.getpid()]
    assert list(it) == [2, 3]


def test_items_are_read_a_window_ahead_only() -> None:
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for x in range(1000):
            pulled.append(x)
            yield x

    ex = LocalExecutor(2, start="fork", window=3)
    it = ex.imap(_slow_first, items())
    assert next(it) == (0, 0)
    assert len(pulled) == 4  # the window, plus the one submitted when the head was taken
    rest = list(it)
    assert len(rest) == 999 and rest[-1] == (999, 999 * 999)


@pytest.mark.parametrize("workers", [1, 2])
def test_first_error_stops_the_rest(tmp_path: Path, workers: int) -> None:
    ex = LocalExecutor(workers, start="fork", window=2)
    with pytest.raises(UserError, match=r"item-2\.jsonl: bad input"):
        list(ex.imap(_touch, [(str(tmp_path), x) for x in range(200)]))
    done = {int(p.stem) for p in tmp_path.glob("*.done")}
    assert len(done) < 10  # the window, not the 200 items
    # in order in one process; with two, item 2 starts only when 0 or 1 has freed a slot of the window, and
    # its error may end the map (killing the other) before that other one is done
    assert {0, 1} <= done if workers == 1 else done & {0, 1}


def test_a_later_failure_is_raised_without_waiting_for_the_head(tmp_path: Path) -> None:
    ex = LocalExecutor(2, start="fork")
    with pytest.raises(ValueError, match="the second item fails"):
        list(ex.imap(_head_waits, [(str(tmp_path), 0), (str(tmp_path), 1)]))


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find, real_import = importlib.util.find_spec, builtins.__import__

    def no_ray(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find(name, *a))
    with pytest.raises(UserError, match=r"pip install 'crystalmix\[ray\]'"):
        RayExecutor()  # when it is made, before any work
    monkeypatch.setattr(importlib.util, "find_spec", real_find)
    monkeypatch.setattr(builtins, "__import__", no_ray)  # found, but broken: said when it is first used
    ex = RayExecutor()
    with pytest.raises(UserError, match=r"pip install 'crystalmix\[ray\]'"):
        ex.imap(_slow_first, [1])
    with pytest.raises(UserError, match=r"pip install 'crystalmix\[ray\]'"), ex:
        pass


def _pid(_: int) -> int:
    time.sleep(0.01)
    return os.getpid()


def test_maps_inside_with_share_one_pool_and_an_error_ends_it(tmp_path: Path) -> None:
    ex = LocalExecutor(2, start="fork")
    with ex:
        first = set(ex.imap(_pid, range(20)))
        pool = ex._pool
        second = set(ex.imap(_pid, range(20)))
        assert ex._pool is pool and len(first | second) <= 2 and os.getpid() not in first
        with pytest.raises(UserError, match="bad input"):
            list(ex.imap(_touch, [(str(tmp_path), x) for x in range(10)]))
        assert ex._pool is None  # the failed map's pool is gone, its workers killed
        third = set(ex.imap(_pid, range(4)))
        assert not third & (first | second)  # a new pool, new workers
    assert ex._pool is None


def test_a_pool_ends_with_the_block_that_started_it() -> None:
    ex = LocalExecutor(2, start="fork")
    with ex:
        with ex:
            inner = set(ex.imap(_pid, range(8)))
        assert ex._pool is None  # the stage's block ended: its workers with it
        outer = set(ex.imap(_pid, range(8)))  # a new pool, for the outer block
        assert ex._pool is not None
        workers = set(ex._pool._processes)  # type: ignore[attr-defined]
        with ex:
            assert set(ex.imap(_pid, range(8))) <= workers  # an inner block uses the running pool
        assert ex._pool is not None and outer <= workers and not inner & workers
    assert ex._pool is None
