"""Reading pretraining corpora as a stream of documents: jsonl(.gz/.zst), parquet, txt, and hub ids.

A bad document is yielded as `Skipped(reason)` so the caller counts it and goes on; a file that cannot be
read at all raises `BadFileError` (a `UserError` naming the file).
"""

from __future__ import annotations

import glob
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from crystalmix.core.errors import UserError

JSONL_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.zst", ".json.gz")
SUFFIXES = JSONL_SUFFIXES + (".parquet", ".txt", ".txt.zst", ".txt.gz")
PARQUET_BATCH = 512


class BadFileError(UserError):
    """A whole input file is unreadable (corrupt compression, not parquet, ...)."""


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    subset: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


Record = Document | Skipped


def expand_paths(patterns: tuple[str, ...]) -> list[str]:
    """Sorted, de-duplicated files matching `patterns` (globs, files or folders of known suffixes)."""
    out: set[str] = set()
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            out.update(str(f) for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
        else:
            out.update(f for f in glob.glob(pat, recursive=True) if Path(f).is_file())
    return sorted(out)


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


def _lines(path: str) -> Iterator[bytes]:
    """The raw lines of a plain, .gz or .zst file, streamed."""
    if path.endswith(".zst"):
        with open(path, "rb") as raw:
            yield from _split_lines(_zst_chunks(raw, path))
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def _zst_chunks(raw: IO[bytes], path: str) -> Iterator[bytes]:
    """Decompress frame after frame; a truncated last frame is an error (zstandard's reader just stops)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, fed = dctx.decompressobj(), False
    while data := raw.read(1 << 20):
        while data:
            fed = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:
                data = dobj.unused_data
                dobj, fed = dctx.decompressobj(), False
            else:
                data = b""
    if fed and not dobj.eof:
        raise BadFileError("truncated zstd stream (the last frame is incomplete)", path=path)


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _iter_jsonl(path: str, text_field: str, subset_field: str | None) -> Iterator[Record]:
    for line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            yield Skipped("not_utf8")
            continue
        except json.JSONDecodeError:
            yield Skipped("invalid_json")
            continue
        if not isinstance(obj, dict):
            yield Skipped("invalid_json")
            continue
        rec = check_text(_field(obj, text_field))
        if isinstance(rec, Document) and subset_field:
            rec = Document(rec.text, _str_or_none(_field(obj, subset_field)))
        yield rec


def _iter_txt(path: str) -> Iterator[Record]:
    """One document per line (e.g. LLaMA-Factory's wiki_demo.txt)."""
    for line in _lines(path):
        rec = check_text(line.rstrip(b"\r\n"))
        if isinstance(rec, Skipped) and rec.reason == "empty":
            continue
        yield rec


def _iter_parquet(path: str, text_field: str, subset_field: str | None) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    if text_field not in names:
        raise BadFileError(f"no column {text_field!r} (columns: {sorted(names)})", path=path)
    top_subset = subset_field.split(".")[0] if subset_field else None
    cols = [text_field] + ([top_subset] if top_subset and top_subset in names else [])
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=cols):
        data = batch.to_pydict()
        texts = data[text_field]
        subsets = data.get(top_subset) if top_subset else None
        for i, value in enumerate(texts):
            rec = check_text(value)
            if isinstance(rec, Document) and subsets is not None and subset_field:
                key = subsets[i]
                rest = subset_field.split(".", 1)[1] if "." in subset_field else None
                key = _field(key, rest) if rest else key
                rec = Document(rec.text, _str_or_none(key))
            yield rec


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def read_file(path: str, text_field: str = "text", subset_field: str | None = None) -> Iterator[Record]:
    """Stream the records of one file; raise `BadFileError` naming it if it cannot be read."""
    name = Path(path).name
    try:
        if name.endswith(".parquet"):
            yield from _iter_parquet(path, text_field, subset_field)
        elif name.endswith((".txt", ".txt.zst", ".txt.gz")):
            yield from _iter_txt(path)
        elif name.endswith(JSONL_SUFFIXES):
            yield from _iter_jsonl(path, text_field, subset_field)
        else:
            raise BadFileError(f"unknown file type (expected one of {', '.join(SUFFIXES)})", path=path)
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError("file not found", path=path) from None
    except Exception as exc:  # noqa: BLE001 - every decoder has its own error type; all mean "corrupt file"
        if not _is_read_error(exc):
            raise
        raise BadFileError(f"cannot be read ({exc.__class__.__name__}: {exc})", path=path) from None


def _is_read_error(exc: BaseException) -> bool:
    import zstandard

    try:
        import pyarrow

        arrow_errors: tuple[type[BaseException], ...] = (pyarrow.ArrowException,)
    except ImportError:  # pragma: no cover
        arrow_errors = ()
    return isinstance(exc, (OSError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) + arrow_errors)


def hub_shard_count(hub_id: str, split: str) -> int:
    """How many streaming shards a hub dataset has (one pretraining shard each)."""
    ds = _load_hub(hub_id, split)
    return int(ds.num_shards)


def _load_hub(hub_id: str, split: str) -> Any:
    try:
        from datasets import load_dataset

        return load_dataset(hub_id, split=split, streaming=True)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-dataset errors all mean the same here
        raise UserError(f"cannot stream hub dataset {hub_id!r} split {split!r}: {exc}") from None


def read_hub_shard(hub_id: str, split: str, index: int, num_shards: int, text_field: str,
                   subset_field: str | None) -> Iterator[Record]:
    """Records of one shard of a streamed hub dataset, in the dataset's own order."""
    ds = _load_hub(hub_id, split).shard(num_shards=num_shards, index=index)
    for obj in ds:
        rec = check_text(_field(obj, text_field))
        if isinstance(rec, Document) and subset_field:
            rec = Document(rec.text, _str_or_none(_field(obj, subset_field)))
        yield rec
