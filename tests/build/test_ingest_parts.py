"""One source is ingested in parts (files; line ranges of a big JSONL file, element ranges of a JSON array,
row-group runs of a parquet file) by several workers; the output bytes do not depend on the number of workers,
nor on whether the source was read in parts at all, nor on a kill in the middle (finished parts are reused)."""

from __future__ import annotations

import dataclasses
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


# -- JSON arrays, parquet row groups, compressed files ------------------------------------------------------

def _element(i: int, r: random.Random) -> object:
    k = r.random()
    if k < 0.15:
        return i
    if k < 0.3:
        return f'str ] [ }} {{ , " \\ caf\u00e9 \u6f22 \\u {i}'
    return {"instruction": "q[{" + "x" * r.randrange(40), "output": ["a", {"b": "]"}], "n": i, "u": "\u00fc" * i}


def _array_text(data: list[object], style: int, r: random.Random) -> str:
    if style == 0:
        return json.dumps(data, indent=2, ensure_ascii=False)
    if style == 1:  # one line: elements share it, and are told apart by their position
        return json.dumps(data, ensure_ascii=False)
    if style == 2:  # a BOM, and elements two to a line here and there
        body = ",".join(("\n" if r.random() < 0.5 else " ") + json.dumps(d) for d in data)
        return "\ufeff  [" + body + "\n]\n\n"
    return json.dumps(data, separators=(",\n", ":"))


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_json_array_element_ranges_give_the_records_of_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(readers, "CHUNK", chunk)  # strings and separators cut by the read buffer
    r = random.Random(chunk)
    for trial in range(12):
        data = [_element(i, r) for i in range(r.randrange(1, 120))]
        path = tmp_path / f"a{trial}.json"
        path.write_text(_array_text(data, trial % 4, r), encoding="utf-8")
        whole = [(x.data, x.file, x.line, x.item) for x in iter_records([str(path)])]
        assert [x[0] for x in whole] == data
        if trial % 4 == 1:
            assert [x[3] for x in whole] == list(range(1, len(data) + 1))  # one line: each has its position
        for size in (1, 50, 700, 10**9):
            parts = plan_parts([str(path)], part_bytes=size)
            assert parts is not None
            if size == 1 and len(data) > 1:
                assert len(parts) == len(data) and {p.kind for p in parts} == {"array"}
            assert [(x.data, x.file, x.line, x.item) for p in parts for x in read_part(p)] == whole
            assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
            assert sum(p.nbytes for p in parts) == path.stat().st_size


@pytest.mark.parametrize("text", [
    '[{"a": 1}, {"a": 2}',  # truncated
    '[{"a": 1}, {"a": 2},]',  # a trailing comma
    '[{"a": 1}, {"a": "cut',  # an unterminated string
    '[{"a": 1}] [{"a": 2}]',  # extra data
    '[{"a": 1}}, {"a": 2}]',  # a brace that closes nothing
])
def test_an_array_that_does_not_scan_is_one_part_and_fails_as_before(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    parts = plan_parts([str(path)], part_bytes=1)
    assert parts is not None and [p.kind for p in parts] == ["file"]
    with pytest.raises(readers.BadFileError) as whole:
        list(iter_records([str(path)]))
    with pytest.raises(readers.BadFileError) as part:
        list(read_part(parts[0]))
    assert str(part.value) == str(whole.value)


def test_a_bad_element_in_a_later_part_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[\n" + ",\n".join(['{"a": 1}'] * 20 + ['{"a": tru}'] + ['{"a": 2}'] * 5) + "\n]\n")
    with pytest.raises(readers.BadFileError) as whole:
        list(iter_records([str(path)]))
    parts = plan_parts([str(path)], part_bytes=30)
    assert parts is not None and len(parts) > 3
    with pytest.raises(readers.BadFileError) as cut:
        for p in parts:
            list(read_part(p))
    assert str(cut.value) == str(whole.value) and ":22:" in str(cut.value)


def test_parquet_row_groups_give_the_rows_of_the_whole_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    rows = [{"id": i, "markdown": _sentence(20 + i % 30)} for i in range(1000)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)
    whole = [(x.data, x.line) for x in iter_records([str(path)])]
    assert [d for d, _ in whole] == rows and [n for _, n in whole] == list(range(1, 1001))
    counts = []
    for size in (1, 20_000, 10**9):
        parts = plan_parts([str(path)], part_bytes=size)
        assert parts is not None
        assert [(x.data, x.line) for p in parts for x in read_part(p)] == whole
        counts.append(len(parts))
    assert counts[0] == 16 and 1 < counts[1] < 16 and counts[2] == 1  # row groups, runs of them, the file


def test_compressed_json_lines_stay_one_part(tmp_path: Path) -> None:
    """A gzip or zstd stream has no random access: reaching its middle means decompressing all before it."""
    import gzip

    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(2000):
            fh.write(json.dumps({"instruction": _sentence(10), "output": _sentence(10), "i": i}) + "\n")
    assert path.stat().st_size > 1000
    parts = plan_parts([str(path)], part_bytes=1000)
    assert parts is not None and [p.kind for p in parts] == ["file"]


def _mixed_inputs(tmp_path: Path) -> Path:
    """An alpaca JSON array (pretty, a one-line piece too), parquet with many row groups: all cut in parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    recs = [{"instruction": _sentence(10) + f" {i}", "output": _sentence(25)} for i in range(300)]
    for i in range(0, 300, 13):
        recs[i] = dict(recs[max(i - 7, 0)])  # exact copies
    recs[40] = {"instruction": "no answer"}  # an adapter reject
    (data / "a.json").write_text(json.dumps(recs, indent=1), encoding="utf-8")
    one = [{"instruction": _sentence(8) + f" one {i}", "output": _sentence(20)} for i in range(60)]
    one[5] = {"output": "no question"}
    (data / "b.json").write_text(json.dumps(one), encoding="utf-8")  # one line
    rows = [{"instruction": _sentence(9) + f" row {i}", "output": _sentence(20)} for i in range(400)]
    pq.write_table(pa.Table.from_pylist(rows), data / "c.parquet", row_group_size=40)
    return data


def test_arrays_and_parquet_in_parts_same_bytes_for_any_worker_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "PART_BYTES", 4_000)
    data = _mixed_inputs(tmp_path)
    parts = plan_parts([str(data)])
    assert parts is not None and {p.kind for p in parts} == {"array", "rows"}
    runs = _three_ways(tmp_path, _manifest(tmp_path, "data"), monkeypatch)
    assert runs[0] == runs[1] == runs[2]
    adapter = [json.loads(line) for line in runs[0]["rejects/adapter.jsonl"].splitlines()]
    by_file = {(r["file"].split("/")[-1], r["line"], r.get("item")) for r in adapter}
    # the element of the one-line array is named by its position; the pretty array's by its line
    assert ("b.json", 1, 6) in by_file and any(f == "a.json" and i is None for f, _, i in by_file)


def _text_manifest(folder: Path) -> Path:
    p = folder / "t.yaml"
    p.write_text("""
seed: 1
sources:
  - {name: books, adapter: text, inputs: books.parquet, options: {column: markdown}}
steps:
  exact_dedup: {}
  near_dedup: {threshold: 0.8}
split: {test_fraction: 0.1}
""", encoding="utf-8")
    return p


def test_text_documents_from_parquet_are_read_in_row_group_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(readers, "PART_BYTES", 3_000)
    docs = [{"id": i, "markdown": "\n\n".join(_sentence(30) for _ in range(4))} for i in range(300)]
    docs[10] = {"id": 10, "markdown": "  "}  # rejected as empty
    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "books.parquet", row_group_size=25)
    runs = _three_ways(tmp_path, _text_manifest(tmp_path), monkeypatch)
    assert runs[0] == runs[1] == runs[2]
    # a text source with whole .md files is not cut (a file is one document, named by its place)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.md").write_text("# x")
    m = load_manifest(_text_manifest(tmp_path))
    assert build_mod.plan_ingest(m.sources[0]) is not None
    with_md = dataclasses.replace(m.sources[0], inputs=(*m.sources[0].inputs, str(tmp_path / "notes")))
    assert build_mod.plan_ingest(with_md) is None


# -- resuming a killed ingest ----------------------------------------------------------------------------

class _Kill(Exception):
    pass


def _failing(real: object, kill: set[int], calls: list[int]) -> object:
    def run(m, src, folder, progress=None, part=None):  # noqa: ANN001, ANN202 - run_ingest's signature
        if part is not None:
            calls.append(part[1])
            if part[1] in kill:
                raise _Kill(f"part {part[1]} killed")
        return real(m, src, folder, progress, part=part)  # type: ignore[operator]
    return run


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_ingest_reruns_only_the_parts_that_did_not_finish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    _write_jsonl(tmp_path / "big.jsonl", 400, 0)
    monkeypatch.setattr(readers, "PART_BYTES", 9_000)
    m = load_manifest(_manifest(tmp_path, "big.jsonl"))
    parts = build_mod.plan_ingest(m.sources[0])
    assert parts is not None and len(parts) >= 4
    reference = _outputs(build(m, tmp_path / "ref", workers=1).out)
    real, calls = build_mod.run_ingest, []
    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        mp.setattr(build_mod, "run_ingest", _failing(real, {2}, calls))
        with pytest.raises(_Kill):
            build(m, out, workers=workers)
    sealed = sorted(p.parent.name for p in (out / ".work").glob("parts-one/*/done.json"))
    assert len(sealed) >= (2 if workers == 1 else 1) and len(sealed) < len(parts)
    calls.clear()
    with monkeypatch.context() as mp:
        mp.setattr(build_mod, "run_ingest", _failing(real, set(), calls))
        result = build(m, out, workers=1)
    assert len(calls) == len(parts) - len(sealed) and 2 in calls  # the finished parts were reused
    assert sum(s.startswith("parts-one/") for s in result.skipped_stages) == len(sealed)
    assert _outputs(out) == reference
    assert not list((out / ".work").glob("parts-*"))  # merged: the parts are gone


def test_parts_of_an_older_plan_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_jsonl(tmp_path / "big.jsonl", 300, 0)
    monkeypatch.setattr(readers, "PART_BYTES", 9_000)
    m = load_manifest(_manifest(tmp_path, "big.jsonl"))
    out = tmp_path / "out"
    real, calls = build_mod.run_ingest, []
    with monkeypatch.context() as mp:
        mp.setattr(build_mod, "run_ingest", _failing(real, {1}, calls))
        with pytest.raises(_Kill):
            build(m, out, workers=1)
    stale = (out / ".work" / "parts-one" / "0123456789abcdef")
    stale.mkdir()
    monkeypatch.setattr(readers, "PART_BYTES", 7_000)  # another plan: other parts, other keys
    build(m, out, workers=1)
    assert not (out / ".work" / "parts-one").exists()
