"""The Ray executor runs the same `run_shard` and must give the local executor's bytes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import RayExecutor

from .conftest import DEMO, stage_manifest, tree_hashes

ray = pytest.importorskip("ray")


def test_ray_matches_local_bytes(local_ray, reference_build, tmp_path: Path) -> None:
    ref_out, hashes, _ = reference_build
    cfg = load_manifest(ref_out.parent / "stage.yaml")
    start = time.perf_counter()
    summary = build_stage(cfg, tmp_path / "out", RayExecutor(), progress=False)
    print(f"ray build took {time.perf_counter() - start:.1f}s")
    assert tree_hashes(tmp_path / "out") == hashes
    assert summary["tokens_per_second"] > 0


def test_ray_bad_file_is_the_same_one_line_error(local_ray, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DEMO / "starcoder" / "css" / "train-00000-of-00001.parquet", data / "a.parquet")
    (data / "b.parquet").write_bytes(b"PAR1 not parquet")
    sources = [{"name": "code", "paths": [str(data / "*.parquet")], "text_field": "content"}]
    cfg = load_manifest(stage_manifest(tmp_path, sources=sources, mixture={"offline": False}))
    with pytest.raises(UserError, match="b.parquet: not a readable parquet file"):
        build_stage(cfg, tmp_path / "out", RayExecutor(), progress=False)
