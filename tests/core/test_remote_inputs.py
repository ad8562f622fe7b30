"""Inputs at fsspec URLs: the readers give the same records from memory:// and file:// as from local disk (plain,
compressed, columnar; files, folders, globs), name the URL in provenance and errors, and digest URL content."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from crystalmix.core.digest import Digests, file_digest
from crystalmix.core.errors import UserError
from crystalmix.core.readers import iter_records, list_files, plan_parts, read_file
from crystalmix.core.remote import expand, is_url, output_target

ROWS = [{"a": i, "text": f"row {i} caf\u00e9"} for i in range(7)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _arrow(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_file(buf, table.schema) as writer:
        writer.write_table(table)
    return buf.getvalue()


FORMS = {
    "a.jsonl": _jsonl(ROWS),
    "b.jsonl.gz": gzip.compress(_jsonl(ROWS), mtime=0),
    "c.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl(ROWS)),
    "d.json": json.dumps(ROWS, indent=1).encode(),
    "e.json.gz": gzip.compress(json.dumps(ROWS).encode(), mtime=0),
    "sub/f.parquet": _parquet(ROWS),
    "sub/g.arrow": _arrow(ROWS),
}


@pytest.fixture
def mem(memory_root: str) -> str:
    return f"{memory_root}"


def _put(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(path, data)


def _place(mem: str, local: Path) -> None:
    for rel, data in FORMS.items():
        _put(f"{mem}/{rel}", data)
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)


def _rows(spec: str) -> list[tuple[str, int, object]]:
    return [(r.file, r.line, r.data) for r in iter_records(spec)]


@pytest.mark.parametrize("rel", sorted(FORMS))
def test_each_form_reads_the_same_records_from_a_url_as_from_disk(mem: str, tmp_path: Path, rel: str) -> None:
    _place(mem, tmp_path)
    url, local = f"{mem}/{rel}", str(tmp_path / rel)
    got, want = _rows(url), _rows(local)
    assert [(line, data) for _, line, data in got] == [(line, data) for _, line, data in want]
    assert {f for f, _, _ in got} == {url}  # provenance names the URL as written
    assert [r.data for r in read_file(url)] == [r.data for r in read_file(local)]


def test_file_urls_read_like_their_paths(tmp_path: Path) -> None:
    _place_local = tmp_path / "a.jsonl"
    _place_local.write_bytes(FORMS["a.jsonl"])
    url = _place_local.as_uri()
    assert is_url(url) and [r.data for r in iter_records(url)] == ROWS
    assert [r.file for r in iter_records(url)] == [url] * len(ROWS)


def test_folders_and_globs_at_a_url_list_like_local_ones(mem: str, tmp_path: Path) -> None:
    _place(mem, tmp_path)
    _put(f"{mem}/.hidden/x.jsonl", FORMS["a.jsonl"])  # hidden, as locally: left out
    _put(f"{mem}/notes.md", b"# not data")
    folder = _rows(mem)
    local = _rows(str(tmp_path))
    assert [(line, data) for _, line, data in folder] == [(line, data) for _, line, data in local]
    assert sorted({f for f, _, _ in folder}) == sorted(f"{mem}/{rel}" for rel in FORMS)
    assert {f for f, _, _ in _rows(f"{mem}/*.jsonl*")} == {f"{mem}/a.jsonl", f"{mem}/b.jsonl.gz", f"{mem}/c.jsonl.zst"}
    assert [f for f, _, _ in _rows(f"{mem}/**/*.parquet")][:1] == [f"{mem}/sub/f.parquet"]
    assert list_files([f"{mem}/sub", f"{mem}/*.json"]) == [f"{mem}/{n}" for n in ("d.json", "sub/f.parquet",
                                                                                  "sub/g.arrow")]
    assert [r.data for r in iter_records(mem, data_files="*.jsonl")] == ROWS


def test_a_url_source_is_one_part(mem: str) -> None:
    _put(f"{mem}/big.jsonl", _jsonl(ROWS * 50))
    assert plan_parts([f"{mem}/big.jsonl"], part_bytes=64) is None  # byte ranges stay local-only


@pytest.mark.parametrize(("spec", "words"), [
    ("{mem}/missing.jsonl", "no such file or folder"),
    ("{mem}/none-*.jsonl", "no files match this pattern"),
    ("{mem}/empty", "no readable files"),
    ("nosuchprotocol://x/a.jsonl", "cannot open this URL"),
])
def test_a_url_that_names_nothing_is_one_line_naming_it(mem: str, spec: str, words: str) -> None:
    _put(f"{mem}/empty/readme.md", b"x")
    spec = spec.format(mem=mem)
    with pytest.raises(UserError) as err:
        iter_records(spec)
    assert str(err.value).startswith(f"{spec}: ") and words in str(err.value) and "\n" not in str(err.value)


def test_a_damaged_compressed_url_is_a_bad_file_naming_it(mem: str) -> None:
    _put(f"{mem}/cut.jsonl.zst", FORMS["c.jsonl.zst"][:-6])
    _put(f"{mem}/cut.jsonl.gz", FORMS["b.jsonl.gz"][:-6])
    for name in ("cut.jsonl.zst", "cut.jsonl.gz"):
        with pytest.raises(UserError, match=f"{mem}/{name}: truncated or corrupt compressed file"):
            list(iter_records(f"{mem}/{name}"))


def test_url_digests_are_of_the_content_streamed(mem: str, tmp_path: Path) -> None:
    _place(mem, tmp_path)
    url = f"{mem}/a.jsonl"
    assert file_digest(url) == file_digest(tmp_path / "a.jsonl")
    digests = Digests()
    before = digests.record(url)
    assert before == digests.record(tmp_path / "a.jsonl")
    changed = FORMS["a.jsonl"].replace(b"row 1", b"row 9")  # same size, other bytes
    _put(url, changed)
    after = digests.record(url)
    assert after["size"] == before["size"] and after["xxh3"] != before["xxh3"]
    assert [row[0] for row in digests.tree(f"{mem}/sub")] == ["f.parquet", "g.arrow"]


def test_expand_names_what_a_url_is(mem: str) -> None:
    _put(f"{mem}/x/a.jsonl", b"{}\n")
    assert expand(f"{mem}/x/a.jsonl", (".jsonl",)) == ("file", [f"{mem}/x/a.jsonl"])
    assert expand(f"{mem}/x", (".jsonl",)) == ("folder", [f"{mem}/x/a.jsonl"])
    assert expand(f"{mem}/nothing", (".jsonl",)) == ("missing", [])


def test_output_targets(tmp_path: Path) -> None:
    assert output_target(str(tmp_path / "o"), "build") == (tmp_path / "o", None)
    assert output_target((tmp_path / "o").as_uri(), "build") == (tmp_path / "o", None)  # file:// stays local
    work, url = output_target("memory://bucket/o", "build", tmp_path / "w")
    assert (work, url) == (tmp_path / "w", "memory://bucket/o")
    default, _ = output_target("memory://bucket/o", "build")
    assert default != output_target("memory://bucket/p", "build")[0]  # one working folder per URL
    with pytest.raises(UserError, match="--work is for an --out URL"):
        output_target(str(tmp_path / "o"), "build", tmp_path / "w")
