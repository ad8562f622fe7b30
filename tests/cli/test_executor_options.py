"""`--executor` and `--ray-address` mean the same in `crystalmix build` and `crystalmix pretrain build`, and
their misuse is a one-line usage error (exit 2) before any work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .conftest import ROOT, Result

DEMO = ROOT / "manifests" / "demo.yaml"
PRETRAIN_DEMO = ROOT / "manifests" / "pretrain" / "demo.yaml"
COMMANDS = [["build", str(DEMO)], ["pretrain", "build", str(PRETRAIN_DEMO)]]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("options", "needle"), [
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "local", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "dask"], "unknown executor 'dask'; choose local or ray"),
])
def test_executor_misuse_is_one_line_exit_2(run_cli, tmp_path: Path, command: list[str], options: list[str],
                                            needle: str) -> None:
    out = tmp_path / "out"
    code, err = run_cli(*command, "-o", str(out), *options)
    Result(code, "", err).one_line(2, needle)
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("command", COMMANDS)
def test_ray_executor_without_ray_names_the_extra(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  command: list[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    out = tmp_path / "out"
    code, err = run_cli(*command, "-o", str(out), "--executor", "ray")
    Result(code, "", err).one_line(2, "pip install 'crystalmix[ray]'")
    assert not out.exists()
