"""Issue 13: the real CodeAlpaca file re-dumped as a one-line JSON array keeps one id per record.

Every element of a one-line array starts on line 1, so the line alone cannot tell records apart; the
reader gives each its position in the array and the ids read ``file:1#<position>``. The same file as
the original pretty-printed array keeps its ``file:<line>`` ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crystalmix.cli.convert import convert_source
from sft_builder.build import build
from sft_builder.manifest import load_manifest
from sft_builder.sources.base import make_adapter

MANIFEST = """\
seed: 3
sources:
  - {{name: codealpaca, adapter: alpaca, inputs: {path}}}
steps:
  quality: {{min_chars: 10}}
  exact_dedup: {{}}
split: {{test_fraction: 0.05}}
"""


@pytest.fixture(scope="module")
def one_line(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = json.loads((realdata / "codealpaca/code_alpaca_2k.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("oneline") / "code_alpaca_2k.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    return path


def _convert(path: Path, out: Path) -> list[dict]:
    report = convert_source(make_adapter("alpaca", {}, source="codealpaca"), [str(path)], out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert report["kept"] == len(rows)
    return rows


def test_convert_gives_every_record_its_own_stable_id(one_line: Path, realdata: Path, tmp_path: Path) -> None:
    rows = _convert(one_line, tmp_path / "one.jsonl")
    ids = [r["id"] for r in rows]
    assert len(rows) > 2000 and len(set(ids)) == len(ids)
    assert ids[:3] == ["codealpaca/code_alpaca_2k.json:1#1", "codealpaca/code_alpaca_2k.json:1#2",
                       "codealpaca/code_alpaca_2k.json:1#3"]
    assert all(r["meta"]["line"] == 1 and r["meta"]["item"] >= 1 for r in rows)
    assert _convert(one_line, tmp_path / "again.jsonl") == rows  # stable across runs
    # the original, pretty-printed file: same conversations, ids by line as before (no item)
    multi = _convert(realdata / "codealpaca/code_alpaca_2k.json", tmp_path / "multi.jsonl")
    assert [r["messages"] for r in multi] == [r["messages"] for r in rows]
    assert multi[0]["id"] == "codealpaca/code_alpaca_2k.json:2" and "item" not in multi[0]["meta"]
    assert len({r["id"] for r in multi}) == len(multi)


def test_build_splits_a_one_line_array_by_record(one_line: Path, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST.format(path=one_line), encoding="utf-8")
    out = tmp_path / "out"
    rep = build(load_manifest(tmp_path / "m.yaml"), out).report
    src = rep["sources"]["codealpaca"]
    assert src["read"] > 2000 and src["kept"] > 1900
    assert src["test"] > 0 and src["train"] > 0  # one shared id put every record in one group before
    shards = sorted((out / "conversations").glob("*.parquet"))
    ids = [i for f in shards for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert len(ids) == len(set(ids)) == src["train"] + src["test"]
