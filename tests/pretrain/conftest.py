"""A small stage built from the bundled demo samples, shared by the build tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "pretrain" / "demo_data"


def stage_manifest(folder: Path, **changes: object) -> Path:
    """A stage-2-like manifest over the demo data: SlimPajama half by hash, StarCoder 2 epochs of FIM."""
    raw = {
        "stage": "test", "tokenizer": "demo", "seq_len": 256, "seed": 7,
        "samples_per_file": 64, "normalize": True, "min_sequence_len": 4,
        "split": {"method": "hash", "seed": 360},
        "mixture": {"offline": True, "shuffle_buffer": 32},
        "sources": [
            {"name": "slimpajama", "paths": [str(DEMO / "slimpajama" / "*.jsonl.zst")],
             "subset_field": "meta.redpajama_set_name", "half": 1,
             "subsets": {"RedPajamaC4": {"name": "c4", "weight": 0.27},
                         "RedPajamaWikipedia": {"name": "wikipedia", "weight": 0.03},
                         "RedPajamaArXiv": {"name": "arxiv", "weight": 0.04}}},
            {"name": "starcoder", "paths": [str(DEMO / "starcoder" / "*" / "*.parquet")],
             "text_field": "content",
             "weight": 0.63, "epochs": 2, "fim": {"rate": 0.9, "spm_rate": 0.5, "mode": "context"}},
        ],
    }
    raw.update(changes)
    path = folder / "stage.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def tree_hashes(out: Path) -> dict[str, str]:
    """sha256 of every output file except the per-run state (markers record timings)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".state" not in p.relative_to(out).parts}


@pytest.fixture(scope="session")
def reference_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict]:
    """The stage built once with one local worker: (folder, file hashes, summary)."""
    from pretrain.build import build_stage
    from pretrain.config import load_manifest
    from pretrain.executors import LocalExecutor

    tmp = tmp_path_factory.mktemp("reference")
    cfg = load_manifest(stage_manifest(tmp))
    out = tmp / "out"
    summary = build_stage(cfg, out, LocalExecutor(1), progress=False)
    return out, tree_hashes(out), summary
