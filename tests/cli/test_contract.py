"""The command-line contract, through the installed `crystalmix` script, for every command and exit path.

0 success; 1 the command ran and found the data bad; 2 a user error, as one line naming the file (and line),
no traceback; 130 Ctrl-C, one line saying what was interrupted and what a rerun does; anything else a bug:
the traceback, then a one-line hint (exit 70).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from crystalmix import __version__

from .conftest import ROOT, Result

DEMO = ROOT / "manifests" / "demo.yaml"
PRETRAIN_DEMO = ROOT / "manifests" / "pretrain" / "demo.yaml"
Cli = Callable[..., Result]


def test_no_arguments_prints_help(cli: Cli) -> None:
    res = cli()
    assert res.code == 0 and "Traceback" not in res.err + res.out
    assert "Usage: crystalmix" in res.out and "pretrain" in res.out and "--install-completion" in res.out


def test_version(cli: Cli) -> None:
    res = cli("--version")
    assert (res.code, res.out, res.err) == (0, f"crystalmix {__version__}\n", "")


USAGE_ERRORS = [
    (["nope"], ["No such command 'nope'", "crystalmix --help"]),
    (["build", "--nope", "x.yaml"], ["No such option", "--nope", "crystalmix build --help"]),
    (["build", str(DEMO), "-o", "x", "--workers", "0"], ["'--workers'"]),
    (["pretrain", "build", str(PRETRAIN_DEMO), "-o", "x", "-j", "0"], ["'--workers'"]),
    (["tokenizer", "demo"], ["Missing option '--out'"]),
]


def test_usage_errors_are_one_line_exit_2(cli_many: Callable[..., list[Result]]) -> None:
    for res, (_, needles) in zip(cli_many([a for a, _ in USAGE_ERRORS]), USAGE_ERRORS, strict=True):
        res.one_line(2, "error:", *needles)


@pytest.mark.parametrize(("args", "needles"), [
    (["pretrain", "nope"], ["No such command 'nope'", "crystalmix pretrain --help"]),
    (["sources", "-q", "-v"], ["--quiet and --verbose exclude each other"]),
])
def test_more_usage_errors_in_process(run_cli, args: list[str], needles: list[str]) -> None:
    code, err = run_cli(*args)
    Result(code, "", err).one_line(2, "error:", *needles)


def test_group_alone_prints_its_help(cli: Cli) -> None:
    res = cli("pretrain")
    assert res.code == 0 and "Traceback" not in res.err and "locate" in res.out and "mix" in res.out


def _bad_sft_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\nsources:\n  - name: a\n    adapter: alpaca\n    inputs: [x.json]\n    wieght: 2\n")
    return path


def _bad_pretrain_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "stage.yaml"
    path.write_text("stage: x\ntokenizer: demo\nseq_len: 512\nshuffel: true\nsources: []\n")
    return path


def test_manifest_errors_name_the_file_and_line(cli_many: Callable[..., list[Result]], tmp_path: Path) -> None:
    missing, out = tmp_path / "missing.yaml", ["-o", str(tmp_path / "out")]
    sft, pre = _bad_sft_manifest(tmp_path), _bad_pretrain_manifest(tmp_path)
    a, b, c, d = cli_many([["build", missing, *out], ["pretrain", "build", missing, *out],
                           ["build", sft, *out], ["pretrain", "build", pre, *out]])
    a.one_line(2, "error:", str(missing))
    b.one_line(2, "error:", str(missing))
    c.one_line(2, f"{sft}:6:", "wieght")
    d.one_line(2, f"{pre}:4:", "shuffel")


@pytest.mark.parametrize("command", [["build", "--check"], ["pretrain", "plan"], ["pretrain", "mix"]])
def test_other_manifest_readers_in_process(run_cli, tmp_path: Path, command: list[str]) -> None:
    out = ["-o", str(tmp_path / "out")] if command[-1] == "mix" else []
    bad = _bad_pretrain_manifest(tmp_path) if command[0] == "pretrain" else _bad_sft_manifest(tmp_path)
    code, err = run_cli(*command, str(bad), *out)
    Result(code, "", err).one_line(2, f"{bad}:", "shuffel" if command[0] == "pretrain" else "wieght")


def _hdf5_folder(folder: Path) -> Path:
    """A valid folder of one data file and its metadata.json."""
    from crystalmix.core import hdf5

    rng = np.random.default_rng(0)
    toks = rng.integers(3, 100, size=(5, 17))
    rows = np.stack([toks[:, :-1], np.ones((5, 16), dtype=np.int64), toks[:, 1:]], axis=1).astype(np.int32)
    w = hdf5.ShardedWriter(folder, seq_len=16)
    w.write_many(rows)
    files = w.close()
    stats = hdf5.row_stats(rows, 0)
    hdf5.write_metadata(folder, hdf5.build_metadata(
        seq_len=16, vocab_size=100, special_tokens={"eos": 2, "pad": 0}, files=[(files[0], 5)], stats=stats,
        fingerprint="f", tokenizer="example/tokenizer"))  # a hub id: validate does not load it
    return folder


def test_validate_ok_bad_data_and_user_error(cli: Cli, tmp_path: Path) -> None:
    folder = _hdf5_folder(tmp_path / "data")
    res = cli("validate", tmp_path)
    assert res.code == 0 and "ok " in res.out and res.err == "", res.err
    meta = json.loads((folder / "metadata.json").read_text())
    meta["num_sequences"] += 1  # tampered: the files no longer match what the metadata claims
    (folder / "metadata.json").write_text(json.dumps(meta))
    res = cli("validate", tmp_path)
    assert res.code == 1 and "INVALID" in res.out and "num_sequences" in res.out and "Traceback" not in res.err
    cli("validate", tmp_path / "nowhere").one_line(2, str(tmp_path / "nowhere"))


def test_every_command_through_the_script(cli_many: Callable[..., list[Result]], tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text('{"instruction": "Say hi", "output": "hi"}\n')
    none = tmp_path / "none"
    ok_convert, convert, encode, inspect, export, webgen, locate, mix, sources, plan = cli_many([
        ["convert", "--source", "alpaca", src, "-o", tmp_path / "c.jsonl", "-q"],
        ["convert", "--source", "alpaca", none, "-o", tmp_path / "c.jsonl"],
        ["encode", none, "-o", tmp_path / "e.jsonl"],
        ["inspect", none],
        ["export", none, "-o", tmp_path / "hub"],
        ["webgen", "-o", tmp_path / "w.jsonl", "--num", "1", "--model", "m"],
        ["pretrain", "locate", tmp_path, "0"],
        ["pretrain", "mix", PRETRAIN_DEMO, "-o", tmp_path],
        ["sources"],
        ["pretrain", "plan", PRETRAIN_DEMO],
    ])
    assert ok_convert.code == 0 and ok_convert.err == "" and (tmp_path / "c.jsonl").is_file()
    convert.one_line(2, f"{none}: no such file")
    encode.one_line(2, f"{none}: no such file")
    inspect.one_line(2, f"{none}:")
    export.one_line(2, f"{none}:")
    webgen.one_line(2, "--base-url")
    locate.one_line(2, f"{tmp_path}:")
    mix.one_line(2, f"{tmp_path}: no mixture.yaml")
    assert sources.code == 0 and "sharegpt" in sources.out and sources.err == ""
    assert plan.code == 0 and "starcoder:" in plan.out and plan.err == ""


@pytest.mark.parametrize("exc", ["RuntimeError", "EOFError"])
def test_a_bug_shows_the_traceback_and_a_hint(cli: Cli, tmp_path: Path, exc: str) -> None:
    # EOFError included: click turns it into "Abort", which must not pass for a Ctrl-C
    res = cli("validate", tmp_path, env={"CRYSTALMIX_TEST_FAULT": f"crystalmix.core.hdf5:data_folders:{exc}"})
    assert res.code == 70, res.err
    assert "Traceback (most recent call last)" in res.err and f"{exc}: fault injected by the test" in res.err
    assert res.err.strip().splitlines()[-1] == (f"internal error: this is a bug in crystalmix {__version__}; "
                                                "please report it with the traceback above")
    assert "interrupt" not in res.err.lower()


def _interrupt(proc, ready: Callable[[], bool], timeout: float = 120) -> tuple[int, str]:
    """Ctrl-C as a terminal sends it (to the whole process group) once `ready()`; returns (code, stderr)."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted: " + proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # a run that ignored the Ctrl-C: nothing of it is left running
        raise
    return proc.returncode, err


def test_ctrl_c_during_a_build(popen, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = popen("build", DEMO, "-o", out, "-j", "2")  # two worker processes get the Ctrl-C too
    code, err = _interrupt(proc, lambda: any((out / ".work").glob("ingest-*/stats.json")))
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines() == ["interrupted: crystalmix build stopped by Ctrl-C; finished stages are kept; "
                                        "rerun the same command to resume"]
    assert not list(out.rglob("*.tmp")) and not (out / "report.json").exists()


def test_ctrl_c_during_a_pretrain_build_with_two_workers(popen, tmp_path: Path) -> None:
    out, held = tmp_path / "out", tmp_path / "held"
    held.mkdir()
    # two shards run, the later ones wait: the Ctrl-C comes after a finished shard and before the build can end
    proc = popen("pretrain", "build", PRETRAIN_DEMO, "-o", out, "-j", "2",
                 env={"CRYSTALMIX_TEST_HOLD": f"pretrain.executors:run_shard:{held}:2"})
    code, err = _interrupt(proc, lambda: any((out / ".state").rglob("*.done.json")) and any(held.glob("held-*")))
    assert code == 130, err
    # the workers got the signal too, and stayed silent: one line, from the parent
    assert err.strip().splitlines() == ["interrupted: crystalmix pretrain build stopped by Ctrl-C; finished shards "
                                        "are kept; rerun the same command to resume"]
    assert any((out / ".state").rglob("*.done.json")) and not (out / "build.json").exists()
    assert not list(out.rglob("*.tmp"))
