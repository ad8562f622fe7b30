"""Run the INSTALLED `crystalmix` console script in a subprocess, importing the checkout under test.

The script next to the test interpreter is what `pip install` put there; PYTHONPATH puts this checkout first,
so its `crystalmix.cli:main` is what runs. A `sitecustomize` in a temporary folder can inject a fault into the
child process (``CRYSTALMIX_TEST_FAULT=module:attribute:ExceptionName``), to see how a bug is reported, or hold
a run mid-way (``CRYSTALMIX_TEST_HOLD=module:attribute:folder:N``): the first N calls of that function, counted
across all the run's processes, run; each later one leaves ``held-<n>`` in the folder and waits there to be
interrupted (a test then interrupts a run that cannot have finished), failing after two minutes instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("crystalmix")

HOOK = '''
import os

spec = os.environ.get("CRYSTALMIX_TEST_FAULT")
if spec:
    import builtins
    import importlib

    module, attr, exc = spec.split(":")
    target = importlib.import_module(module)

    def fault(*args, **kwargs):
        raise getattr(builtins, exc)("fault injected by the test")

    setattr(target, attr, fault)

hold = os.environ.get("CRYSTALMIX_TEST_HOLD")
if hold:
    import importlib
    import time

    module, attr, folder, first = hold.rsplit(":", 3)
    target = importlib.import_module(module)
    real = getattr(target, attr)

    def held(*args, **kwargs):
        n = 0
        while True:  # this call's number: the first free one, taken atomically
            try:
                os.close(os.open(os.path.join(folder, f"call-{n}"), os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                n += 1
        if n >= int(first):
            open(os.path.join(folder, f"held-{n}"), "w").close()
            time.sleep(120)
            raise RuntimeError("held for two minutes and never interrupted")
        return real(*args, **kwargs)

    held.__qualname__ = held.__name__ = attr  # pickled by reference as the function it stands in for
    held.__module__ = module
    setattr(target, attr, held)
'''


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_line(self, code: int, *needles: str) -> str:
        """Assert the contract of an error: this exit code, one line on stderr holding `needles`, no traceback."""
        assert self.code == code, (self.code, self.err)
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        for n in needles:
            assert n in lines[0], (n, lines[0])
        return lines[0]


def _env(extra: dict[str, str] | None, hooks: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(hooks)] if hooks else []) + [p for p in [env.get("PYTHONPATH")] if p]
    env.update({"PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "200", "TERM": "dumb"})
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def hooks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def cli(hooks_dir: Path) -> Callable[..., Result]:
    """``cli("build", ..., env={...}) -> Result``: the installed script, stdin closed, stderr not a terminal."""
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"

    def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=_env(env, hooks_dir), stdin=subprocess.DEVNULL, cwd=ROOT)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def cli_many(cli: Callable[..., Result]) -> Callable[..., list[Result]]:
    """``cli_many([args, ...], env={...}) -> [Result, ...]``: independent runs side by side (each is mostly
    start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(calls: list[list[str | Path]], env: dict[str, str] | None = None) -> list[Result]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda args: cli(*args, env=env), calls))

    return run


@pytest.fixture(scope="session")
def popen(hooks_dir: Path) -> Callable[..., subprocess.Popen[str]]:
    """The installed script started in its own process group (so a test can send Ctrl-C to all of it)."""

    def start(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env(env, hooks_dir), stdin=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)

    return start
