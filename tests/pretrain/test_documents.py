"""Documents: bad documents become counted `Skipped` reasons; an unreadable file raises naming itself."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pretrain.documents import BadFileError, Document, Skipped, expand_paths, read_file


def _reasons(records: list) -> list[str]:
    return [r.reason if isinstance(r, Skipped) else "ok" for r in records]


def test_jsonl_zst_bad_documents_are_skipped_with_reasons(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": "fine", "meta": {"redpajama_set_name": "RedPajamaC4"}}).encode(),
        b'{"text": "\xff\xfe broken"}',
        b"not json",
        json.dumps({"text": "   "}).encode(),
        json.dumps({"other": 1}).encode(),
        json.dumps({"text": 5}).encode(),
        b'{"text": "lone \\ud800 surrogate"}',
        b"[1, 2]",
    ]
    path = tmp_path / "x.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    recs = list(read_file(str(path), "text", "meta.redpajama_set_name"))
    assert _reasons(recs) == ["ok", "not_utf8", "invalid_json", "empty", "missing_field", "not_text",
                              "not_utf8", "invalid_json"]
    assert recs[0] == Document("fine", "RedPajamaC4")


def test_truncated_zst_names_the_file(tmp_path: Path) -> None:
    blob = zstandard.ZstdCompressor().compress(b'{"text": "a"}\n' * 5000)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BadFileError, match="cut.jsonl.zst"):
        list(read_file(str(path)))


def test_parquet_content_column_and_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"content": ["def f(): pass", None, ""]}), path)
    assert _reasons(list(read_file(str(path), "content"))) == ["ok", "missing_field", "empty"]
    with pytest.raises(BadFileError, match="no column 'text'"):
        list(read_file(str(path), "text"))
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadFileError, match="broken.parquet"):
        list(read_file(str(bad), "content"))


def test_binary_parquet_column_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"content": pa.array([b"ok", b"\xff\xfe"], type=pa.binary())}), path)
    assert _reasons(list(read_file(str(path), "content"))) == ["ok", "not_utf8"]


def test_expand_paths_sorted_and_deduplicated(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text("{}\n")
    got = expand_paths((str(tmp_path / "*.jsonl"), str(tmp_path)))
    assert [Path(p).name for p in got] == ["a.jsonl", "b.jsonl", "c.txt"]


def test_txt_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "wiki.txt.gz"
    import gzip

    path.write_bytes(gzip.compress(b"first article\n\n   \nsecond \xff\n\xc2\xa0\nthird\n"))
    recs = list(read_file(str(path)))
    assert _reasons(recs) == ["ok", "not_utf8", "ok"]  # blank lines (even a lone NBSP) are not documents
    assert [r.text for r in recs if isinstance(r, Document)] == ["first article", "third"]


def test_json_array_and_hub_rows_are_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"text": "a", "meta": {"set": "X"}}, {"text": ""}, "just text"]))
    assert list(read_file(str(path), "text", "meta.set")) == [Document("a", "X"), Skipped("empty"),
                                                             Skipped("invalid_json")]
    import datasets

    class Fake(list):
        num_shards = 2

        def shard(self, num_shards: int, index: int) -> Fake:
            return Fake(self[index::num_shards])

    rows = [{"content": f"doc {i}", "lang": "py"} for i in range(5)]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: Fake(rows))
    from pretrain.documents import hub_shard_count, read_hub_shard

    assert hub_shard_count("o/n", "train") == 2
    assert list(read_hub_shard("o/n", "train", 1, 2, "content", "lang")) == [Document("doc 1", "py"),
                                                                           Document("doc 3", "py")]


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.txt.zst", "cut.json.gz"])
def test_truncated_inputs_are_bad_files_named_as_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        name: str) -> None:
    """The error's path is the listed path, so --skip-bad-files can leave exactly that file out."""
    import gzip

    blob = b'{"text": "a document of some length"}\n' * 4000
    packed = gzip.compress(blob) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(blob)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).write_bytes(packed[: len(packed) // 2])
    monkeypatch.chdir(tmp_path)
    (listed,) = expand_paths(("./data/cut*",))
    with pytest.raises(BadFileError, match=rf"{name}: truncated or corrupt compressed file") as info:
        list(read_file(listed))
    assert info.value.path == listed


def test_a_jsonl_whose_first_line_is_not_json_is_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text("this is prose, not JSON\n{\"text\": \"a\"}\n")
    with pytest.raises(BadFileError, match=r"notes\.jsonl:1: not JSON Lines"):
        list(read_file(str(path)))
