"""`crystalmix build` on the Ray executor: the demo build, with sources cut into parts, near-dedup,
decontamination and the tokenize stage, gives the local executor's bytes at 1 and 2 workers (on a local Ray,
as pretraining's test)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from crystalmix.core.executors import RayExecutor
from sft_builder.build import build

from .test_build_demo import DEMO, outputs, split_demo

ray = pytest.importorskip("ray")


class Counting(RayExecutor):
    """Counts the tasks each map sends to Ray, to show the build's work really went there."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[str] = []

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        self.tasks += [fn.__name__] * len(items)
        return super().imap(fn, items)


def test_ray_build_matches_local_bytes(local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, parts = split_demo(monkeypatch)
    assert parts["slimorca"] >= 4 and parts["guanaco"] >= 2
    one = build(m, tmp_path / "w1", workers=1)
    two = build(m, tmp_path / "w2", workers=2)
    ex = Counting()
    on_ray = build(m, tmp_path / "ray", executor=ex)
    assert ray.is_initialized()  # a session the caller started is left running
    ingest = sum(n or 1 for n in parts.values())
    assert ex.tasks.count("_ingest_detached") == ingest > len(m.sources)  # in folders of their own
    # the tokenize stage encoded in Ray tasks, a row group of a parquet shard each, for both splits
    shards = sorted((tmp_path / "ray" / "conversations").glob("*.parquet"))
    assert {p.name.split("-")[0] for p in shards} == {"train", "test"} and len(shards) > 2
    groups = sum(pq.ParquetFile(p).num_row_groups for p in shards)
    assert ex.tasks.count("_encode_group") == groups > len(shards)
    assert (tmp_path / "ray" / "tokenized" / "train").is_dir()
    # the global stage's and the mix's batches went to Ray too (decided and written in the driver)
    for fn in ("exact_block", "sign_texts", "shared_buckets", "match_texts", "scan_chunk", "row_group"):
        assert ex.tasks.count(fn) > 0, fn
    assert ex.tasks.count("row_group") == groups  # one task per row group written
    reference = outputs(tmp_path / "w1")
    assert outputs(tmp_path / "w2") == reference
    assert outputs(tmp_path / "ray") == reference
    assert one.report == two.report == on_ray.report
    # the checks that depend on the whole corpus did their work
    dedup = on_ray.report["dedup"]["near_dedup"]
    assert dedup["removed"] > 0
    dropped = [k for s in on_ray.report["sources"].values() for k in s["dropped"] if k.startswith("decontaminate")]
    assert dropped


def test_the_command_line_builds_on_ray(local_ray, run_cli, tmp_path: Path) -> None:
    """`crystalmix build --executor ray` (on the Ray this module started) writes the local command's bytes."""
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        code, err = run_cli("build", str(DEMO), "-o", str(tmp_path / name), "-q", *extra)
        assert code == 0, err
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert ray.is_initialized()
