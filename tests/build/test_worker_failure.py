"""A worker that fails (its start-up included) ends the run with that error; it never hangs it.

Each run is a subprocess with a timeout, so a regression (a pool respawning workers forever) fails the
test instead of hanging the suite. The failure is injected in the workers only (their pid differs from the
parent's): the manifest's template loads in the parent and fails in each tokenize worker's initializer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo_data"
TIMEOUT = 240  # a healthy run takes seconds; a respawning pool would run until killed

RUNNER = textwrap.dedent("""
    import os, sys
    from crystalmix.core.errors import UserError
    import sft_builder.encode as encode

    PARENT, KIND = os.getpid(), sys.argv[1]
    real = encode.load_template

    def load_template(spec, tokenizer=None):
        if os.getpid() != PARENT:  # in a worker only: the parent checked the template when it read the manifest
            if KIND == "user":
                raise UserError("template cannot be read in this worker", path=spec)
            raise RuntimeError("boom: a bug in the worker")
        return real(spec, tokenizer)

    encode.load_template = load_template
    if sys.argv[2] == "encode":
        cfg = encode.TokenizeConfig.from_mapping({"template": sys.argv[3], "workers": 2})
        encode.encode_file(sys.argv[4], sys.argv[5], cfg)
    else:
        from crystalmix.cli import main
        sys.argv = ["crystalmix", *sys.argv[2:]]
        main()
""")


def manifest(tmp: Path) -> Path:
    """A one-source build whose template sits beside the manifest, tokenized by two workers."""
    shutil.copy(DEMO / "guanaco.jsonl", tmp / "guanaco.jsonl")
    shutil.copy(ROOT / "templates" / "crystalchat.jinja", tmp / "t.jinja")
    path = tmp / "m.yaml"
    path.write_text(textwrap.dedent("""
        seed: 1
        sources:
          - {name: guanaco, adapter: guanaco, inputs: guanaco.jsonl}
        steps: {quality: {min_chars: 1}}
        tokenize: {tokenizer: demo, template: t.jinja, seq_len: 256, workers: 2}
    """), encoding="utf-8")
    return path


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp / "runner.py"
    script.write_text(RUNNER, encoding="utf-8")
    try:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=tmp)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run hung: no exit within {TIMEOUT} s")


def test_a_worker_that_cannot_start_ends_the_build_with_one_line(tmp_path: Path) -> None:
    m = manifest(tmp_path)
    proc = run(tmp_path, "user", "build", str(m), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "t.jinja" in lines[0] and "cannot be read in this worker" in lines[0]
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_bug_in_a_starting_worker_is_a_crash_not_a_hang(tmp_path: Path) -> None:
    m = manifest(tmp_path)
    proc = run(tmp_path, "bug", "build", str(m), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 70, proc.stderr[-2000:]  # the command line's contract for a bug (EX_SOFTWARE)
    assert "RuntimeError: boom: a bug in the worker" in proc.stderr
    assert proc.stderr.count("Traceback") >= 1
    assert proc.stderr.rstrip().splitlines()[-1].startswith("internal error:")


def test_encode_file_with_workers_fails_the_same_way(tmp_path: Path) -> None:
    manifest(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "source": "s", "messages": [{"role": "user", "content": "hi"}, '
                   '{"role": "assistant", "content": "hello"}]}\n', encoding="utf-8")
    proc = run(tmp_path, "user", "encode", str(tmp_path / "t.jinja"), str(src), str(tmp_path / "out.jsonl"))
    assert proc.returncode == 1  # no CLI here: the UserError itself reaches the top
    assert proc.stderr.rstrip().endswith("cannot be read in this worker")
    assert not (tmp_path / "out.jsonl").exists()
