"""crystalmix.core.interrupt: after a Ctrl-C a worker takes no new task, and a task's error is the interruption;
a Ctrl-C while a worker is still starting is taken once it can be, not by a traceback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from crystalmix.core import interrupt
from crystalmix.core.workers import WorkerPool

WAIT = 60


def test_worker_task_after_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupt, "_state", interrupt.CtrlC())
    ran = []
    with interrupt.worker_task():
        ran.append(1)
    with pytest.raises(ValueError):  # no Ctrl-C: an error is itself
        with interrupt.worker_task():
            raise ValueError("bad")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C turned into a library's own error (langdetect does)
        with interrupt.worker_task():
            interrupt._state.pressed = True
            raise ValueError("profile format error")
    with pytest.raises(KeyboardInterrupt):  # a task queued before the Ctrl-C does not start
        with interrupt.worker_task():
            ran.append(2)
    assert ran == [1] and not interrupt._state.busy



def test_a_ctrl_c_while_workers_start_waits_for_the_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupt, "_state", interrupt.CtrlC(busy=True))  # as in a command's run
    previous = signal.signal(signal.SIGINT, interrupt._on_sigint)
    try:
        launched = []
        with pytest.raises(KeyboardInterrupt):  # noqa: PT012
            with interrupt.starting_workers():
                os.kill(os.getpid(), signal.SIGINT)
                launched.append(1)  # not split by the KeyboardInterrupt: it comes once the block ends
        assert launched == [1] and interrupt._state.busy
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.signal(signal.SIGINT, previous)

class _Handshake:
    """An initializer argument whose unpickling, in a spawned worker before its start-up code runs, says
    `ready` (with its pid) and waits for `go`: the test's Ctrl-C lands in that window every time."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _wait_for_go, (self.folder,)


def _wait_for_go(folder: str) -> str:
    Path(folder, "ready.tmp").write_text(str(os.getpid()))
    Path(folder, "ready.tmp").rename(Path(folder, "ready"))
    deadline = time.monotonic() + WAIT
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return folder


def _nothing(folder: str) -> None:
    pass


def _one(_: int) -> int:
    return 1


def test_ctrl_c_while_a_worker_starts(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # before the fix the worker died of it, printing a traceback, and the pool broke (BrokenProcessPool)
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012
        with WorkerPool(1, start="spawn", initializer=_nothing, initargs=(_Handshake(str(tmp_path)),)) as pool:
            future = pool.submit(_one, 0)
            deadline = time.monotonic() + WAIT
            while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(int((tmp_path / "ready").read_text()), signal.SIGINT)
            (tmp_path / "go").touch()
            future.result(timeout=WAIT)  # refused: the worker took the Ctrl-C once it could, and stayed up
    assert "Traceback" not in capfd.readouterr().err
