"""A pretraining stage whose shard tasks cannot see the driver's disk (a cluster without a shared one):
each shard runs while the stage folder is hidden, and the folder's bytes are the local build's."""

from __future__ import annotations

from pathlib import Path

from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor

from .conftest import DEMO, stage_manifest, tree_hashes


def test_no_shard_task_touches_the_stage_folder(hidden_disk, reference_build, tmp_path: Path) -> None:
    ref_out, hashes, summary = reference_build
    cfg = load_manifest(ref_out.parent / "stage.yaml")
    out = tmp_path / "out"
    out.mkdir()
    ex = hidden_disk(out)
    detached = build_stage(cfg, out, ex, progress=False)
    assert ex.tasks["_run_detached"] == len(list((ref_out / ".state").rglob("*.done.json"))) > 1
    assert tree_hashes(out) == hashes
    assert detached["folders"] == summary["folders"]
    # a rerun finds every shard done from the markers written here
    build_stage(cfg, out, again := hidden_disk(out), progress=False)
    assert not again.tasks and tree_hashes(out) == hashes


def test_llm360_fim_reads_the_tokenizer_the_task_carries(hidden_disk, tmp_path: Path) -> None:
    """LLM360's FIM pass builds a tokenizer of its own: from the JSON the task carries, not the stage's file."""
    sources = [{"name": "code", "paths": [str(DEMO / "starcoder" / "*" / "*.parquet")], "text_field": "content",
                "fim": {"rate": 0.9, "spm_rate": 0.5, "mode": "llm360"}}]
    cfg = load_manifest(stage_manifest(tmp_path, sources=sources, tail="drop", mixture={"offline": False}))
    build_stage(cfg, tmp_path / "local", LocalExecutor(1), progress=False)
    out = tmp_path / "hidden"
    out.mkdir()
    build_stage(cfg, out, hidden_disk(out), progress=False)
    assert tree_hashes(out) == tree_hashes(tmp_path / "local")
