"""A build whose tasks cannot see the driver's disk (a cluster without a shared one): every task runs while
the build's folder is hidden, and the published bytes are the local build's."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sft_builder.build import build

from .test_build_demo import outputs, split_demo


def test_no_task_touches_the_build_folder(hidden_disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, parts = split_demo(monkeypatch)
    assert parts["slimorca"] >= 4 and m.tokenize is not None
    assert "near_dedup" in m.order and "decontaminate" in m.order
    local = build(m, tmp_path / "local", workers=1)
    out = tmp_path / "hidden"
    out.mkdir()
    ex = hidden_disk(out)
    detached = build(m, out, executor=ex)
    assert outputs(out) == outputs(tmp_path / "local")
    assert detached.report == local.report
    # every stage's work went through the tasks that could not see the folder
    assert ex.tasks["_ingest_detached"] == sum(n or 1 for n in parts.values())
    shards = sorted((out / "conversations").glob("*.parquet"))
    groups = sum(pq.ParquetFile(p).num_row_groups for p in shards)
    assert ex.tasks["_encode_group"] == ex.tasks["row_group"] == groups > len(shards)
    for fn in ("exact_block", "sign_texts", "shared_buckets", "match_texts", "scan_chunk"):
        assert ex.tasks[fn] > 0, fn
    # a rerun reuses every stage the detached tasks wrote (their folders were sealed here, intact)
    again = build(m, out, executor=hidden_disk(out))
    assert again.report == local.report and again.skipped_stages
    assert outputs(out) == outputs(tmp_path / "local")
