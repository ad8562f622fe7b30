"""kill -9 of `pretrain build --workers 2` (the parent only): no worker outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

CLI = Path(sys.executable).with_name("crystalmix")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def big_manifest(folder: Path) -> Path:
    """Two inputs of ~40 MB of text each: a shard keeps a worker busy for many seconds."""
    import zstandard

    para = "The quick brown fox jumps over the lazy dog while the compiler reports an error. " * 25
    for k in range(2):
        lines = "".join(f'{{"text": "{i} {para}"}}\n' for i in range(20_000)).encode()
        (folder / f"big-{k}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    raw = {"stage": "big", "tokenizer": "demo", "seq_len": 256, "seed": 1,
           "sources": [{"name": "big", "paths": [str(folder / "big-*.jsonl.zst")]}]}
    path = folder / "stage.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_workers_die_with_a_killed_build(tmp_path: Path) -> None:
    manifest = big_manifest(tmp_path)
    out = tmp_path / "out"
    cmd = [str(CLI), "pretrain", "build", str(manifest), "--out", str(out), "--workers", "2", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(group_members(proc.pid)) < 4:
            time.sleep(0.05)  # the parent, its resource tracker and its two workers
        time.sleep(1)  # the workers are inside their shards
        assert proc.poll() is None, "the build finished before it could be killed"
        workers = [p for p in group_members(proc.pid) if p != proc.pid]
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as a kill -9 of the command does
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_members(proc.pid):
            time.sleep(0.1)
        left = group_members(proc.pid)
        assert not left, f"processes alive 10 s after their parent was killed: {left}"
    finally:
        for pid in group_members(proc.pid):  # never leave them behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
