"""Shared fixtures: paths to the project's fixtures and to ../shared/realdata, and a demo tokenizer.

Also the session's private Hugging Face cache (`pytest_configure`): tests never read or write the user's.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach the network: make the Hugging Face libraries fail fast instead of waiting on timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Every variable that points a Hugging Face library at a folder; all go to the session's own.
CACHE_VARS = {"HF_HOME": "hf", "HF_DATASETS_CACHE": "hf/datasets", "HF_HUB_CACHE": "hf/hub",
              "HUGGINGFACE_HUB_CACHE": "hf/hub", "TRANSFORMERS_CACHE": "hf/hub", "HF_MODULES_CACHE": "hf/modules"}
_HF_MODULES = ("datasets", "huggingface_hub", "transformers")
_cache_root = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Point every cache at a fresh temporary folder before any test module imports `datasets`.

    The libraries read these variables when first imported, so this must run first; subprocesses that
    tests start inherit them. A warm user cache once served a stale earlier export to a test.
    """
    early = [m for m in _HF_MODULES if m in sys.modules]
    if early:
        raise pytest.UsageError(f"{', '.join(early)} imported before tests/conftest.py could isolate the "
                                "Hugging Face cache (a plugin or sitecustomize?)")
    root = Path(tempfile.mkdtemp(prefix="crystalmix-tests-cache-"))
    config.stash[_cache_root] = root
    for var, sub in CACHE_VARS.items():
        os.environ[var] = str(root / sub)


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_cache_root, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
REALDATA = Path(os.environ.get("CRYSTALMIX_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """Run the `crystalmix` entry point in-process: ``run_cli("convert", ...) -> (exit code, stderr)``."""
    from crystalmix.cli import main

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["crystalmix", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real third-party samples; skips when absent unless CI requires them."""
    if not REALDATA.is_dir():
        if os.environ.get("CRYSTALMIX_REQUIRE_REALDATA") == "1":
            pytest.fail(f"CRYSTALMIX_REQUIRE_REALDATA=1 but {REALDATA} is missing")
        pytest.skip(f"{REALDATA} not present")
    return REALDATA


@pytest.fixture(scope="session")
def demo_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tokenizer trained by the project itself, with the CrystalCoder special tokens."""
    from crystalmix.core.tokenizer import train_demo_tokenizer

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "sft_builder").rglob("*.py"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted(FIXTURES.rglob("*.json*")) if p.stat().st_size < 2_000_000]
    return train_demo_tokenizer(texts, tmp_path_factory.mktemp("demo_tokenizer"), vocab_size=3000)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_tokenizer_dir: Path):  # noqa: ANN201 - a transformers tokenizer
    from crystalmix.core.tokenizer import load_tokenizer

    return load_tokenizer(demo_tokenizer_dir)


@pytest.fixture(scope="session")
def crystal_tokenizer(realdata: Path):  # noqa: ANN201
    """The real CrystalCoder tokenizer from ../shared/realdata."""
    from crystalmix.core.tokenizer import load_tokenizer

    return load_tokenizer(realdata / "tokenizers" / "crystalcoder")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray with 2 CPUs for the module (starting Ray costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


class HiddenDiskExecutor:
    """An executor whose tasks cannot see the driver's disk, as on a cluster without a shared one.

    Each task runs here, one at a time, while the folder `hidden` (a build's output, with its stage cache)
    is renamed away; its job and its result go through pickle, as Ray's do. A task that opens a path in
    that folder fails, and one that creates it fails the test. `tasks` counts the tasks by function.
    """

    in_process = False
    shared_disk = False

    def __init__(self, hidden: Path) -> None:
        self.hidden = hidden
        self.tasks: Counter[str] = Counter()

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        away = self.hidden.with_name(self.hidden.name + ".away")
        for item in items:
            job = pickle.loads(pickle.dumps(item))
            os.rename(self.hidden, away)
            try:
                result = fn(job)
            finally:
                made = self.hidden.exists()
                if not made:
                    os.rename(away, self.hidden)
            assert not made, f"a {fn.__name__} task made {self.hidden}"
            self.tasks[fn.__name__] += 1
            yield pickle.loads(pickle.dumps(result))

    def __enter__(self) -> HiddenDiskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def hidden_disk() -> type[HiddenDiskExecutor]:
    """`HiddenDiskExecutor`, for a test to hide its build's folder from every task."""
    return HiddenDiskExecutor


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh memory:// folder (fsspec's memory file system is one per process), removed afterwards."""
    import fsspec

    root = f"/t-{uuid.uuid4().hex}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
