"""Pretraining documents: the text (and subset) of every record the core readers stream, or why it has none.

Files and hub shards are read by `crystalmix.core.readers` (jsonl/json and their .gz/.zst, parquet, arrow,
txt with one document per line, hub datasets in streaming mode); this module only decides what a document
is. A record that cannot be one is yielded as `Skipped(reason)` so the caller counts it and goes on; a file
that cannot be read at all raises `BadFileError` (a `UserError` naming the file), which ``--skip-bad-files``
turns into a skipped file. As for every reader of the project, a JSON Lines file whose first line is not
JSON is a bad file, not a first bad document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalmix.core.readers import KNOWN_TEXT, BadFileError, hub_shard_count, list_files, read_hub
from crystalmix.core.readers import read_file as read_records
from crystalmix.core.records import UnparsedRecord

__all__ = ["BadFileError", "Document", "Record", "Skipped", "check_text", "expand_paths", "hub_shard_count",
           "read_file", "read_hub_shard"]


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    subset: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


Record = Document | Skipped


def expand_paths(patterns: tuple[str, ...]) -> list[str]:
    """Sorted, de-duplicated files matching `patterns` (globs, files, or folders of known types, txt too)."""
    return list_files(patterns, text_files=True)


def _field(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def check_text(value: Any) -> Record:
    """A document, or the reason it cannot be one (missing, not text, not UTF-8, empty)."""
    if value is None:
        return Skipped("missing_field")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return Skipped("not_utf8")
    if not isinstance(value, str):
        return Skipped("not_text")
    if not value.strip():
        return Skipped("empty")
    if not value.isascii():
        try:  # lone surrogates ("\ud800" escapes in JSON) are text no tokenizer accepts
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Skipped("not_utf8")
    return Document(value)


def _document(data: Any, text_field: str, subset_field: str | None) -> Record:
    """The document of one record (a JSON object, a table row, a hub row)."""
    if type(data) is not dict:
        return Skipped(data.reason if type(data) is UnparsedRecord else "invalid_json")
    rec = check_text(_field(data, text_field))
    if subset_field and type(rec) is Document:
        subset = _field(data, subset_field)
        rec = Document(rec.text, None if subset is None else str(subset))
    return rec


def read_file(path: str, text_field: str = "text", subset_field: str | None = None) -> Iterator[Record]:
    """Stream the documents of one file; raise `BadFileError` naming it if it cannot be read.

    Parquet and Arrow files read only the columns holding the text and the subset.
    """
    columns = (text_field.split(".")[0],)
    optional = (subset_field.split(".")[0],) if subset_field else ()
    records = read_records(path, text_files=True, columns=columns, optional_columns=optional)
    if not Path(path).name.lower().endswith(KNOWN_TEXT):
        for rec in records:
            yield _document(rec.data, text_field, subset_field)
        return
    for rec in records:  # one document per line; blank lines are not documents
        data = rec.data
        doc = Skipped(data.reason) if type(data) is UnparsedRecord else check_text(data)
        if type(doc) is Skipped and doc.reason == "empty":
            continue
        yield doc


def read_hub_shard(hub_id: str, split: str, index: int, num_shards: int, text_field: str,
                   subset_field: str | None) -> Iterator[Record]:
    """Documents of one shard of a streamed hub dataset, in the dataset's own order."""
    for rec in read_hub(hub_id, split, shard=(index, num_shards)):
        yield _document(rec.data, text_field, subset_field)
