"""Readers: every local form, provenance (file + line/row), streaming buffers, and one-line user errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from crystalmix.core import readers
from crystalmix.core.errors import UserError
from crystalmix.core.readers import iter_records
from sft_builder.sources.base import UnparsedRecord

FIX = Path(__file__).parents[1] / "fixtures" / "sources" / "readers"
ROWS = [{"a": i, "text": f"row {i} caf\u00e9"} for i in range(7)]


def _data(path: Path | str, **kw: object) -> list:
    return [r.data for r in iter_records([str(path)], **kw)]


def _write_jsonl(path: Path, rows: list[dict]) -> bytes:
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(blob)
    return blob


def test_json_array_lines_are_where_each_element_starts() -> None:
    recs = list(iter_records([str(FIX / "bom.json")]))
    assert [r.data for r in recs] == [{"a": "caf\u00e9"}] and recs[0].line == 1
    recs = list(iter_records([str(FIX / "pretty_objects.json")]))
    assert [(r.data, r.line) for r in recs] == [({"a": 1}, 1), ({"a": 2, "b": [1, 2]}, 4)]


def test_jsonl_skips_blank_lines_and_keeps_a_bad_line_as_a_record() -> None:
    recs = list(iter_records([str(FIX / "records.jsonl")]))
    assert [(r.data, r.line) for r in recs[:2]] == [({"a": 1}, 1), ({"a": 2}, 3)]
    assert recs[2].line == 4 and isinstance(recs[2].data, UnparsedRecord)
    assert recs[2].data.text == '{"a": 3'


def test_empty_file_has_no_records() -> None:
    assert _data(FIX / "empty.json") == []


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst"])
def test_compressed_json_roundtrips(tmp_path: Path, suffix: str) -> None:
    if suffix.startswith(".json."):
        blob = json.dumps(ROWS, indent=2).encode()
    else:
        blob = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    packed = gzip.compress(blob) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(blob)
    path = tmp_path / f"data{suffix}"
    path.write_bytes(packed)
    assert _data(path) == ROWS


def test_multi_frame_zstd_is_read_whole(tmp_path: Path) -> None:
    c = zstandard.ZstdCompressor()
    first = "".join(json.dumps(r) + "\n" for r in ROWS[:3]).encode()
    second = "".join(json.dumps(r) + "\n" for r in ROWS[3:]).encode()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(c.compress(first) + c.compress(second))
    assert _data(path) == ROWS


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compression_is_a_user_error(tmp_path: Path, suffix: str) -> None:
    blob = "".join(json.dumps({"a": i, "pad": "x" * 50}) + "\n" for i in range(3000)).encode()
    packed = gzip.compress(blob) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(blob)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(UserError, match=r"cut\.jsonl\.(gz|zst): truncated or corrupt compressed file"):
        list(iter_records([str(path)]))


def test_parquet_rows_are_numbered(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=3)
    recs = list(iter_records([str(path)]))
    assert [r.data for r in recs] == ROWS and [r.line for r in recs] == list(range(1, 8))


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_file_and_stream(tmp_path: Path, kind: str) -> None:
    table = pa.Table.from_pylist(ROWS)
    path = tmp_path / "t.arrow"
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
        with opener(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    assert _data(path) == ROWS


def test_save_to_disk_folders_and_splits(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert _data(tmp_path / "ds") == ROWS
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                               "test": datasets.Dataset.from_list(ROWS[2:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert _data(tmp_path / "dd", split="test") == ROWS[2:]
    with pytest.raises(UserError, match="split 'validation' not found; splits: train, test"):
        iter_records([str(tmp_path / "dd")], split="validation")


def test_folders_globs_and_data_files_are_sorted_and_filtered(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "b.jsonl", ROWS[3:])
    _write_jsonl(tmp_path / "a.jsonl", ROWS[:3])
    (tmp_path / "README.md").write_text("ignored in folders")
    (tmp_path / "sub").mkdir()
    _write_jsonl(tmp_path / "sub" / "c.jsonl", [{"a": 99}])
    assert _data(tmp_path) == ROWS + [{"a": 99}]
    assert _data(str(tmp_path / "*.jsonl")) == ROWS
    assert _data(tmp_path, data_files="b.jsonl") == ROWS[3:]
    files = {r.file for r in iter_records([str(tmp_path)])}
    assert files == {str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "sub/c.jsonl")}


@pytest.mark.parametrize(("name", "message"), [
    ("not_json.json", r"not_json\.json:1: not JSON"),
    ("not_json.jsonl", r"not_json\.jsonl:1: not JSON Lines"),
    ("bad_element.json", r"bad_element\.json:6: invalid JSON: Expecting ',' delimiter"),
    ("truncated_array.json", r"truncated_array\.json:1: invalid JSON"),
    ("notes.txt", r"notes\.txt: unknown file type"),
])
def test_bad_files_name_the_file_and_line(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        list(iter_records([str(FIX / name)]))


def test_missing_inputs_fail_before_any_record(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    _write_jsonl(good, ROWS)
    with pytest.raises(UserError, match="nope/missing.json: no such file or folder"):
        iter_records([str(good), "nope/missing.json"])
    with pytest.raises(UserError, match="no files match"):
        iter_records([str(tmp_path / "*.parquet")])
    with pytest.raises(UserError, match="data_files applies to folders"):
        iter_records([str(good)], data_files="x")


def test_corrupt_parquet_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="bad.parquet: not a readable parquet file"):
        list(iter_records([str(path)]))


def test_hub_ids_stream_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load(name: str, **kw: object) -> list[dict]:
        calls.append((name, kw))
        if name == "owner/missing":
            raise datasets.exceptions.DatasetNotFoundError("Dataset 'owner/missing' doesn't exist on the Hub")
        return [{"x": 1}, {"x": 2}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    recs = list(iter_records(["owner/name"], split="test", data_files=["a.parquet"]))
    assert [(r.data, r.file, r.line) for r in recs] == [({"x": 1}, "owner/name[test]", 1),
                                                        ({"x": 2}, "owner/name[test]", 2)]
    assert calls[0] == ("owner/name", {"split": "test", "streaming": True, "data_files": ["a.parquet"]})
    assert _data("hf:squad") == [{"x": 1}, {"x": 2}]
    with pytest.raises(UserError, match=r"owner/missing\[train\]: cannot read hub dataset: Dataset"):
        list(iter_records(["owner/missing"]))


# -- the sliding buffer of the JSON array reader --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(json_values, max_size=12), indent=st.sampled_from([None, 0, 1, 3]),
       chunk=st.integers(1, 64))
def test_array_reader_matches_json_loads_at_any_buffer_size(
        tmp_path_factory: pytest.TempPathFactory, values: list, indent: int | None, chunk: int) -> None:
    """Values and start lines agree with the stdlib, however the buffer cuts the text."""
    path = tmp_path_factory.mktemp("arr") / "a.json"
    text = json.dumps(values, indent=indent, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    # the expected start line of each element, from the stdlib's own positions
    decoder, expected, pos = json.JSONDecoder(), [], text.index("[") + 1
    for _ in values:
        while text[pos] in " \n\t\r,":
            pos += 1
        expected.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
    old = readers.CHUNK
    readers.CHUNK = chunk
    try:
        recs = list(iter_records([str(path)]))
    finally:
        readers.CHUNK = old
    assert [r.data for r in recs] == values
    assert [r.line for r in recs] == expected


def test_large_element_across_many_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = {"text": "y" * 5000, "n": 12345678901234}
    path = tmp_path / "big.json"
    path.write_text(json.dumps([1, big, 23456, big]))
    monkeypatch.setattr(readers, "CHUNK", 7)
    assert _data(path) == [1, big, 23456, big]


def test_a_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="data/trian: no such file or folder"):
        iter_records(["data/trian"])


def test_jsonl_of_arrays_is_read_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "arrays.jsonl"
    path.write_text("[1, 2]\n[3]\n")
    assert _data(path) == [[1, 2], [3]]


# -- records that share a line, and the size cap ---------------------------------------------------------

def test_elements_sharing_a_line_get_their_position_in_the_array(tmp_path: Path) -> None:
    """Lines tell records apart where they can (ids unchanged); elsewhere the element's position does."""
    path = tmp_path / "mixed.json"
    path.write_text('[{"a": 1}, {"a": 2},\n {"a": 3},\n {"a": 4}, {"a": 5}]')
    recs = list(iter_records([str(path)]))
    assert [(r.data["a"], r.line, r.item, r.ref) for r in recs] == [
        (1, 1, 1, "1#1"), (2, 1, 2, "1#2"), (3, 2, 0, 2), (4, 3, 4, "3#4"), (5, 3, 5, "3#5")]
    path.write_text(json.dumps(ROWS))  # one line
    assert [r.ref for r in iter_records([str(path)])] == [f"1#{i}" for i in range(1, 8)]
    path.write_text(json.dumps(ROWS, indent=2))  # pretty-printed: lines only
    assert {r.item for r in iter_records([str(path)])} == {0}
    path.write_text('{"a": 1} {"a": 2}\n{"a": 3}')  # objects one after another, two on a line
    assert [r.ref for r in iter_records([str(path)])] == ["1#1", "1#2", 2]


def test_a_huge_array_element_is_refused_naming_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CHUNK", 64)
    monkeypatch.setattr(readers, "MAX_RECORD", 1000)
    path = tmp_path / "big.json"
    path.write_text('[\n{"a": 1},\n{"text": "' + "x" * 999 + '"},\n{"a": 3}\n]')
    recs = iter_records([str(path)])
    assert next(recs).data == {"a": 1}
    with pytest.raises(readers.BadFileError, match=r"big\.json:3: no complete JSON value within the reader's "
                                                   r"limit of 1,000 characters"):
        next(recs)
    path.write_text('[\n{"a": 1},\n{"text": "' + "x" * 900 + '"},\n{"a": 3}\n]')  # under the limit: fine
    assert [r.line for r in iter_records([str(path)])] == [2, 3, 4]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_huge_jsonl_line_is_a_too_large_record_and_reading_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    monkeypatch.setattr(readers, "MAX_RECORD", 500)
    monkeypatch.setattr(readers, "TOO_LARGE_KEPT", 100)
    blob = ('{"a": 1}\n{"text": "' + "y" * 5000 + '"}\n{"a": 3}\n').encode()
    path = tmp_path / f"big{suffix}"
    path.write_bytes(gzip.compress(blob) if suffix.endswith(".gz") else blob)
    recs = list(iter_records([str(path)]))
    assert [r.line for r in recs] == [1, 2, 3] and recs[2].data == {"a": 3}
    bad = recs[1].data
    assert isinstance(bad, UnparsedRecord) and bad.reason == "too_large"
    assert "5,013 bytes is over the reader's limit of 500 bytes (its first 100 bytes" in bad.error
    assert bad.text == '{"text": "' + "y" * 90


def test_a_not_utf8_line_is_its_own_reason(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    bad = list(iter_records([str(path)]))[1].data
    assert isinstance(bad, UnparsedRecord) and bad.reason == "not_utf8"


# -- truncated and corrupt compression, in every reading path ---------------------------------------------

@pytest.mark.parametrize("name", ["cut.json.gz", "cut.json.zst", "cut.txt.gz", "cut.jsonl.zst", "one.json.gz"])
def test_every_truncated_stream_is_a_bad_file_naming_it(tmp_path: Path, name: str) -> None:
    rows = [{"a": i, "pad": "x" * 50} for i in range(3000)]
    blob = (json.dumps(rows) if name.startswith("one") else json.dumps(rows, indent=1)).encode()
    packed = gzip.compress(blob) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(blob)
    path = tmp_path / name
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(readers.BadFileError, match=rf"{name}: truncated or corrupt compressed file"):
        list(iter_records([str(path)], text_files=True))


def test_corrupt_gzip_and_an_empty_zstd_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(readers.BadFileError, match=r"bad\.jsonl\.gz: truncated or corrupt compressed file"):
        list(iter_records([str(path)]))
    empty = tmp_path / "empty.jsonl.zst"
    empty.write_bytes(b"")
    assert _data(empty) == []


# -- text files, single files with columns, file lists ---------------------------------------------------

def test_text_files_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"first doc\r\n\n   \nsecond \xff doc\nthird"))
    with pytest.raises(UserError, match="unknown file type"):
        iter_records([str(path)])
    recs = list(iter_records([str(path)], text_files=True))
    assert [r.line for r in recs] == [1, 4, 5]
    assert recs[0].data == "first doc" and recs[2].data == "third"
    assert isinstance(recs[1].data, UnparsedRecord) and recs[1].data.reason == "not_utf8"
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n')
    assert _data(tmp_path) == [{"a": 1}]  # a folder lists .txt files only with text_files
    assert len(_data(tmp_path, text_files=True)) == 4


def test_read_file_reads_only_the_columns_asked(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert [r.data for r in readers.read_file(path, columns=["text"], optional_columns=["a", "zz"])] == ROWS
    assert [r.data for r in readers.read_file(path, columns=["text"])][0] == {"text": ROWS[0]["text"]}
    with pytest.raises(readers.BadFileError, match=r"t\.parquet: no column 'content' \(columns: a, text\)"):
        list(readers.read_file(path, columns=["content"]))
    arrow = tmp_path / "t.arrow"
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, pa.Table.from_pylist(ROWS).schema) as w:
        w.write_table(pa.Table.from_pylist(ROWS))
    assert [r.data for r in readers.read_file(arrow, columns=["a"])] == [{"a": r["a"]} for r in ROWS]
    with pytest.raises(readers.BadFileError, match=r"missing\.parquet: file not found"):
        list(readers.read_file(tmp_path / "missing.parquet"))


def test_list_files_unions_globs_files_and_folders(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.txt", ".hidden.jsonl", "notes.md"):
        (tmp_path / name).write_text("{}\n")
    got = readers.list_files([str(tmp_path / "*.jsonl"), str(tmp_path), str(tmp_path / "nothing*")],
                             text_files=True)
    assert [Path(p).name for p in got] == ["a.jsonl", "b.jsonl", "c.txt"]
    assert [Path(p).name for p in readers.list_files([str(tmp_path)])] == ["a.jsonl", "b.jsonl"]


def test_a_folder_inside_a_hidden_folder_is_still_read(tmp_path: Path) -> None:
    """Only hidden names *inside* the folder are left out, not hidden parents of it (e.g. ~/.cache)."""
    folder = tmp_path / ".cache" / "data"
    folder.mkdir(parents=True)
    _write_jsonl(folder / "a.jsonl", ROWS)
    assert _data(folder) == ROWS


def test_hub_shards_stream_through_the_one_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    class Fake:
        num_shards = 3

        def __init__(self, rows: list[dict]) -> None:
            self.rows = rows

        def shard(self, num_shards: int, index: int) -> Fake:
            return Fake(self.rows[index::num_shards])

        def __iter__(self):  # noqa: ANN204
            return iter(self.rows)

    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: Fake([{"x": i} for i in range(7)]))
    assert readers.hub_shard_count("o/n", "train") == 3
    recs = list(readers.read_hub("o/n", "train", shard=(1, 3)))
    assert [(r.data, r.file, r.line) for r in recs] == [({"x": 1}, "o/n[train]", 1), ({"x": 4}, "o/n[train]", 2)]


@pytest.mark.parametrize("name", ["data.jsonl.gz", "data.json.gz", "data.json.zst"])
def test_a_truncated_adapter_input_stops_build_with_exit_2_naming_it(
        tmp_path: Path, run_cli, name: str) -> None:  # noqa: ANN001 - the CLI runner fixture
    rows = [{"instruction": f"question number {i}", "output": "an answer " * 20} for i in range(3000)]
    blob = (json.dumps(rows) if ".json." in name else "".join(json.dumps(r) + "\n" for r in rows)).encode()
    packed = gzip.compress(blob) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(blob)
    (tmp_path / name).write_bytes(packed[: len(packed) // 2])
    (tmp_path / "m.yaml").write_text(f"sources:\n  - {{name: a, adapter: alpaca, inputs: {name}}}\n")
    code, err = run_cli("build", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert f"{name}: truncated or corrupt compressed file" in err and "Traceback" not in err


def test_encode_reads_interchange_files_through_the_core_readers(
        tmp_path: Path, run_cli, demo_tokenizer_dir: Path) -> None:  # noqa: ANN001 - the CLI runner fixture
    conv = {"id": "c1", "source": "s", "messages": [{"role": "user", "content": "Hi there"},
                                                    {"role": "assistant", "content": "Hello!"}], "meta": {}}
    blob = "".join(json.dumps({**conv, "id": f"c{i}"}) + "\n" for i in range(2000)).encode()
    src = tmp_path / "in.jsonl.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(blob))
    out = tmp_path / "enc.jsonl"
    code, err = run_cli("encode", "--tokenizer", str(demo_tokenizer_dir), str(src), "--out", str(out))
    assert code == 0, err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()][:2] == ["c0", "c1"]
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(blob)[:3000])
    code, err = run_cli("encode", "--tokenizer", str(demo_tokenizer_dir), str(cut), "--out", str(out))
    assert code == 2 and "cut.jsonl.gz: truncated or corrupt compressed file" in err, err
