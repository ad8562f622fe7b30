"""One source is ingested in parts (files, line ranges of a big JSONL file) by several workers; the output
bytes do not depend on the number of workers, nor on whether the source was read in parts at all."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import crystalmix.core.readers as readers
import sft_builder.build as build_mod
from crystalmix.core.readers import iter_records, plan_parts, read_part
from sft_builder.build import build
from sft_builder.manifest import load_manifest

rng = random.Random(3)
WORDS = [f"word{i}" for i in range(400)] + ["the", "a", "is", "of", "and", "to", "in", "that", "it", "for"]


def _sentence(n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _write_jsonl(path: Path, n: int, start: int) -> None:
    """Alpaca records with near and exact copies, a line that is not JSON and one missing its output."""
    recent: list[tuple[str, str]] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            if i == n // 2:
                fh.write("{not json\n")
                continue
            if i == n // 3:
                fh.write(json.dumps({"instruction": "no answer here"}) + "\n\n")  # and a blank line
                continue
            if recent and i % 11 == 0:
                q, a = rng.choice(recent)
            else:
                q, a = _sentence(12) + f" ({start + i})", " ".join(_sentence(15) for _ in range(3))
                recent.append((q, a))
            fh.write(json.dumps({"instruction": q, "output": a}) + "\n")


def _manifest(folder: Path, inputs: str) -> Path:
    p = folder / "m.yaml"
    p.write_text(f"""
seed: 1
sources:
  - {{name: one, adapter: alpaca, inputs: {inputs}}}
steps:
  quality: {{min_chars: 5}}
  exact_dedup: {{}}
  near_dedup: {{threshold: 0.8}}
split: {{test_fraction: 0.1}}
""", encoding="utf-8")
    return p


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(out).parts}


def _three_ways(tmp: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, bytes]]:
    m = load_manifest(manifest)
    assert build_mod.plan_ingest(m.sources[0]) is not None  # the source really is cut into parts
    runs = [_outputs(build(m, tmp / "w1", workers=1).out), _outputs(build(m, tmp / "w2", workers=2).out)]
    with monkeypatch.context() as mp:
        mp.setattr(build_mod, "plan_ingest", lambda src: None)  # the whole source as one, as before parts
        runs.append(_outputs(build(m, tmp / "whole", workers=1).out))
    return runs


def test_multi_file_source_same_bytes_for_any_worker_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    _write_jsonl(data / "a.jsonl", 120, 0)
    _write_jsonl(data / "sub" / "a.jsonl", 80, 1000)  # same base name: labelled a.jsonl~2 in reading order
    (data / "empty.jsonl").write_text("")
    with open(data / "b.json", "w", encoding="utf-8") as fh:  # a JSON array: one part
        json.dump([{"instruction": _sentence(10), "output": _sentence(30)} for _ in range(50)], fh)
    runs = _three_ways(tmp_path, _manifest(tmp_path, "data"), monkeypatch)
    assert runs[0] == runs[1] == runs[2]
    report = json.loads(runs[0]["report.json"])
    assert report["totals"]["read"] == 120 + 80 + 50
    assert b'"one/a.jsonl~2:' in runs[0]["rejects/exact_dedup.jsonl"]  # ids of the second a.jsonl


def test_one_big_jsonl_in_line_ranges_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_jsonl(tmp_path / "big.jsonl", 400, 0)
    monkeypatch.setattr(readers, "PART_BYTES", 9_000)
    parts = plan_parts([str(tmp_path / "big.jsonl")])
    assert parts is not None and len(parts) >= 4
    runs = _three_ways(tmp_path, _manifest(tmp_path, "big.jsonl"), monkeypatch)
    assert runs[0] == runs[1] == runs[2]
    rejects = b"".join(v for k, v in runs[0].items() if k.startswith("rejects"))
    # line numbers of the whole file, after a blank line in an earlier part
    assert b'"line":202,"reason":"invalid_json"' in rejects


def test_line_ranges_give_the_records_and_line_numbers_of_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    _write_jsonl(path, 300, 0)
    whole = [(r.data, r.file, r.line) for r in iter_records([str(path)])]
    for size in (1, 333, 5_000, 10**9):
        parts = plan_parts([str(path)], part_bytes=size)
        assert parts is not None
        assert [(r.data, r.file, r.line) for p in parts for r in read_part(p)] == whole
        assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
