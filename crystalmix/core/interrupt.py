"""Ctrl-C: one clean stop, reported once, in the command's process and in every worker process of its pools.

A terminal sends SIGINT to every process of the foreground group. Left alone, each worker would raise its
own KeyboardInterrupt and print a traceback while the parent prints its one line; a worker that ignored the
signal would keep the parent waiting for its task; a worker that exited at once would break the pool, which
then kills the other workers before they clean up. So, in every `crystalmix.core.workers.WorkerPool` (its
initializer calls `worker_init`, each task runs inside `worker_task`): SIGINT during a task stops it with
KeyboardInterrupt (its atomic writes remove their temporaries on the way out, and the parent gets it back as
the task's result); an idle worker only notes it, refuses the tasks already queued to it, and ends normally
when the parent shuts the pool. The command line runs inside `watch_ctrl_c`, which notes the Ctrl-C too.

A worker is started with SIGINT blocked (`starting_workers` around the parent's process launch; the mask is
inherited through fork and exec) and takes it only once `worker_init` has installed the handler: a Ctrl-C
while it was still importing (a spawned worker re-imports the command line, which takes a while under load)
would otherwise stop it with a traceback of its own. The stdlib starts its resource tracker the same way.

Two ways a KeyboardInterrupt gets lost are handled: raised inside a finalizer or a weakref callback, Python can
only print it ("Exception ignored in ...") and drop it, so it is raised again a moment later (SIGALRM) in the
code that was running; turned by a library into its own error (langdetect's bare ``except:``), it is still a
Ctrl-C, which `watch_ctrl_c` and `worker_task` know from the note.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

INTERRUPTED = 128 + signal.SIGINT  # the shell's exit status for a process stopped by Ctrl-C
_AGAIN = 0.01  # seconds before a dropped KeyboardInterrupt is raised again


@dataclass
class CtrlC:
    pressed: bool = False  # SIGINT arrived
    busy: bool = False  # a KeyboardInterrupt is wanted now (a command or a worker's task is running)


_state = CtrlC()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _state.pressed = True
    if _state.busy:
        raise KeyboardInterrupt


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _state.busy:
        raise KeyboardInterrupt


def _on_unraisable(info: Any) -> None:
    if issubclass(info.exc_type, KeyboardInterrupt) and _state.busy and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, _AGAIN)  # dropped in a finalizer: raise it again, elsewhere
        return
    sys.__unraisablehook__(info)


def _cancel_again() -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)
    sys.unraisablehook = _on_unraisable


def worker_init() -> None:
    """Pool-worker initializer: SIGINT stops the running task, and no new task starts."""
    _state.pressed = _state.busy = False  # a forked worker starts with its parent's state
    _install()
    if hasattr(signal, "pthread_sigmask"):  # a Ctrl-C held back since the launch arrives now, and is noted
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Around code that may start worker processes: they begin with SIGINT blocked (see the module docstring).

    In this process the signal is held back too, in this thread, and on the main thread a KeyboardInterrupt
    waits until the block ends, so it never splits a launch (a worker started but not yet known to its pool).
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    busy, pressed = _state.busy, _state.pressed
    if main:
        _state.busy = False  # a SIGINT taken meanwhile (by another thread's delivery) is only noted
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if signal.SIGINT not in old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if main:
            _state.busy = busy
    if main and busy and _state.pressed and not pressed:
        raise KeyboardInterrupt


@contextlib.contextmanager
def worker_task() -> Iterator[None]:
    """Run one task of a worker process (see the module docstring); after a Ctrl-C, refuse it."""
    if _state.pressed:
        raise KeyboardInterrupt
    _state.busy = True
    try:
        yield
    except BaseException:
        if _state.pressed:  # whatever a library made of the KeyboardInterrupt, the task was interrupted
            raise KeyboardInterrupt from None
        raise
    finally:
        _state.busy = False
        _cancel_again()


@contextlib.contextmanager
def watch_ctrl_c() -> Iterator[CtrlC]:
    """Around one run of the command line: Ctrl-C raises KeyboardInterrupt and is noted in the state yielded.

    Nothing is installed when SIGINT is ignored (started by nohup, or as a background job) or off the main
    thread; the previous handlers come back afterwards.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None) or threading.current_thread() is not threading.main_thread():
        yield CtrlC()
        return
    alarm = signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else None
    hook = sys.unraisablehook
    _state.pressed, _state.busy = False, True
    _install()
    try:
        yield _state
    finally:
        _state.busy = False
        _cancel_again()
        signal.signal(signal.SIGINT, previous)
        if alarm is not None:
            signal.signal(signal.SIGALRM, alarm)
        sys.unraisablehook = hook
