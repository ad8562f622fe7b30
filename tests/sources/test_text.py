"""The `text` adapter: plain documents from a text column or from whole text/markdown files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, Rejected
from sft_builder.sources.base import make_adapter

DEMO_DOCS = Path(__file__).resolve().parents[2] / "manifests" / "demo_data" / "documents" / "wiki"


def run(inputs: list[Path | str], **options: object) -> tuple[list[Conversation], list[Rejected]]:
    adapter = make_adapter("text", options, source="books")
    outs = list(adapter.stream([str(i) for i in inputs]))
    docs = [o for o in outs if isinstance(o, Conversation)]
    rejects = [o for o in outs if isinstance(o, Rejected)]
    assert len(outs) == adapter.stats.candidates == adapter.stats.records
    return docs, rejects


def test_folder_of_markdown_files_is_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "ch1").mkdir()
    (tmp_path / "ch1" / "intro.md").write_text("\n\n# Intro\n\nWelcome.\n", encoding="utf-8")
    (tmp_path / "ch2.markdown").write_text("## Two\r\nsecond\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("line one\nline two\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not text: left out
    (tmp_path / ".hidden.md").write_text("secret")
    docs, rejects = run([tmp_path])
    assert not rejects
    assert [d.id for d in docs] == ["books/ch1/intro.md", "books/ch2.markdown", "books/notes.txt"]
    assert all(d.kind == "document" for d in docs)
    assert docs[0].text == "\n\n# Intro\n\nWelcome.\n", "verbatim: leading blank lines and all"
    assert docs[1].text == "## Two\r\nsecond\n"
    assert docs[0].meta == {"file": str(tmp_path / "ch1" / "intro.md"), "line": 1}


def test_text_file_per_line_and_whole(tmp_path: Path) -> None:
    f = tmp_path / "wiki.txt"
    f.write_text("First article.\n\nSecond article.\n", encoding="utf-8")
    whole, _ = run([f])
    assert [d.text for d in whole] == ["First article.\n\nSecond article.\n"]
    lines, _ = run([f], lines=True)
    assert [(d.id, d.text, d.meta["line"]) for d in lines] == [
        ("books/wiki.txt:1", "First article.", 1), ("books/wiki.txt:3", "Second article.", 3)]


def test_text_column_of_records(tmp_path: Path) -> None:
    rows = [{"topic": "graphs", "markdown": "# Graphs\n\nNodes and edges.", "model": "gpt-3.5"},
            {"topic": "empty", "markdown": "   "},
            {"topic": "none"}]
    f = tmp_path / "books.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, rejects = run([f], column="markdown", meta_columns=["topic"])
    assert [(d.id, d.text, d.meta["topic"]) for d in docs] == [("books/books.jsonl:1", "# Graphs\n\nNodes and edges.",
                                                                "graphs")]
    assert [(r.line, r.reason) for r in rejects] == [(2, "empty_content"), (3, "missing_field")]
    p = tmp_path / "books.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:1]), p)
    docs, _ = run([p], column="markdown")
    assert docs[0].text == rows[0]["markdown"]


def test_bad_files_are_rejects_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("fine")
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "blank.md").write_text(" \n")
    docs, rejects = run([tmp_path])
    assert [d.id for d in docs] == ["books/ok.md"]
    assert sorted((Path(r.file).name, r.reason) for r in rejects) == [("blank.md", "empty_content"),
                                                                       ("latin1.md", "not_utf8")]


def test_same_name_in_two_inputs_gets_distinct_ids(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "README.md").write_text(f"readme {d}")
    docs, _ = run([tmp_path / "a", tmp_path / "b"])
    assert [d.id for d in docs] == ["books/README.md", "books/README.md~2"]


def test_globs_and_user_errors(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("x")
    (tmp_path / "y.md").write_text("y")
    docs, _ = run([str(tmp_path / "*.md")])
    assert [d.text for d in docs] == ["x", "y"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no text files"):
        run([tmp_path / "empty"])
    with pytest.raises(UserError, match="column"):
        run([tmp_path / "x.md"], column="")


def test_the_demo_documents(tmp_path: Path) -> None:
    docs, rejects = run([DEMO_DOCS])
    assert not rejects and len(docs) == 3
    assert all(d.text and d.text.endswith("\n") for d in docs)
