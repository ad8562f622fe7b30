"""The Ray executor runs the same `run_shard` and must give the local executor's bytes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import RayExecutor

from .conftest import tree_hashes

pytest.importorskip("ray")


def test_ray_matches_local_bytes(reference_build, tmp_path: Path) -> None:
    ref_out, hashes, _ = reference_build
    manifest = ref_out.parent / "stage.yaml"
    cfg = load_manifest(manifest)
    start = time.perf_counter()
    summary = build_stage(cfg, tmp_path / "out", RayExecutor(num_cpus=2), progress=False)
    print(f"ray build took {time.perf_counter() - start:.1f}s")
    assert tree_hashes(tmp_path / "out") == hashes
    assert summary["tokens_per_second"] > 0
