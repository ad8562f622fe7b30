"""`mix: {shuffle: false}` keeps the manifest's order: sources as listed, records as read (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from sft_builder.build import build
from sft_builder.manifest import load_manifest
from sft_builder.mix import select
from tests.build.test_mix import MEMBERS, src


def _alpaca(path: Path, prefix: str, n: int) -> None:
    path.write_text("".join(json.dumps({"instruction": f"{prefix} question number {i} about sorting lists",
                                        "output": f"{prefix} answer number {i}: use sorted() on the list"}) + "\n"
                            for i in range(n)))


def _manifest(tmp_path: Path, shuffle: bool, test_fraction: float = 0.0) -> Path:
    for name, n in (("a", 7), ("b", 5), ("c", 6)):
        _alpaca(tmp_path / f"{name}.jsonl", name, n)
    (tmp_path / "m.yaml").write_text(
        "seed: 3\n"
        "sources:\n"
        # listed c, a, b; priorities make a the dedup winner: the output must still follow the listing
        "  - {name: c, adapter: alpaca, inputs: c.jsonl, priority: 2}\n"
        "  - {name: a, adapter: alpaca, inputs: a.jsonl, priority: 0, weight: 2}\n"
        "  - {name: b, adapter: alpaca, inputs: b.jsonl, priority: 1, max_samples: 3}\n"
        "steps:\n"
        "  quality: {min_chars: 1}\n"
        "  exact_dedup: {}\n"
        f"  mix: {{shuffle: {str(shuffle).lower()}}}\n"
        f"split: {{test_fraction: {test_fraction}}}\n")
    return tmp_path / "m.yaml"


def _ids(out: Path, split: str) -> list[str]:
    return [r["id"] for f in sorted((out / "conversations").glob(f"{split}-*.parquet"))
            for r in pq.read_table(f).to_pylist()]


def _line(cid: str) -> int:
    return int(cid.rsplit(":", 1)[1])


def test_unshuffled_mix_keeps_manifest_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(load_manifest(_manifest(tmp_path, shuffle=False)), out)
    ids = _ids(out, "train")
    sources = [i.split("/")[0] for i in ids]
    # c (6), then a twice over (weight 2: the source, then the source again), then 3 of b
    assert sources == ["c"] * 6 + ["a"] * 14 + ["b"] * 3
    assert [_line(i) for i in ids[:6]] == list(range(1, 7))
    assert [_line(i) for i in ids[6:13]] == list(range(1, 8)) == [_line(i) for i in ids[13:20]]
    b_lines = [_line(i) for i in ids[20:]]
    assert b_lines == sorted(b_lines) and len(set(b_lines)) == 3


def test_unshuffled_test_split_keeps_order_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(load_manifest(_manifest(tmp_path, shuffle=False, test_fraction=0.3)), out)
    rank = {"c": 0, "a": 1, "b": 2}
    test = [(rank[i.split("/")[0]], _line(i)) for i in _ids(out, "test")]
    assert test and test == sorted(test)
    train = [(rank[i.split("/")[0]], _line(i)) for i in _ids(out, "train")]
    assert [r for r, _ in train] == sorted(r for r, _ in train)
    a = [line for r, line in train if r == 1]  # two passes over a's train records, each in file order
    half = len(a) // 2
    assert a[:half] == a[half:] == sorted(a[:half])
    for r in (0, 2):
        lines = [line for k, line in train if k == r]
        assert lines == sorted(lines)


def test_shuffled_mix_mixes_sources(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(load_manifest(_manifest(tmp_path, shuffle=True)), out)
    sources = [i.split("/")[0] for i in _ids(out, "train")]
    assert sorted(sources) == sorted(["c"] * 6 + ["a"] * 14 + ["b"] * 3)
    assert sources != ["c"] * 6 + ["a"] * 14 + ["b"] * 3


def test_keep_order_chooses_the_same_records() -> None:
    for cfg in (src(), src(weight=0.5), src(weight=2.5), src(max_samples=7), src(epochs=2, max_samples=30)):
        shuffled, r1 = select(cfg, MEMBERS, seed=4)
        ordered, r2 = select(cfg, MEMBERS, seed=4, keep_order=True)
        assert np.array_equal(r1, r2)
        assert sorted(shuffled.tolist()) == sorted(ordered.tolist())
        n = len(MEMBERS)
        for k in range(0, len(ordered), n):  # each pass is in file order
            part = ordered[k:k + n].tolist()
            assert part == sorted(part)
