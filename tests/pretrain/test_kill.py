"""SIGKILL a real build (both worker processes) mid-run, re-run it: same bytes as an uninterrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor

from .conftest import tree_hashes

CLI = Path(sys.executable).with_name("crystalmix")


@pytest.mark.slow
@pytest.mark.parametrize("markers_before_kill", [1, 4])
def test_sigkill_then_rerun_gives_same_bytes(reference_build, tmp_path: Path,
                                             markers_before_kill: int) -> None:
    ref_out, hashes, _ = reference_build
    manifest = ref_out.parent / "stage.yaml"
    out = tmp_path / "out"
    cmd = [str(CLI), "pretrain", "build", str(manifest), "--out", str(out), "--workers", "2", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / ".state").rglob("*.done.json"))) >= markers_before_kill:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its spawned workers, nothing else
        proc.wait()
    assert not (out / "build.json").exists()
    build_stage(load_manifest(manifest), out, LocalExecutor(1), progress=False)
    assert tree_hashes(out) == hashes
