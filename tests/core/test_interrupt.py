"""crystalmix.core.interrupt: after a Ctrl-C a worker takes no new task, and a task's error is the interruption."""

from __future__ import annotations

import pytest

from crystalmix.core import interrupt


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
