"""Stream raw records, each with its file and line/row, from local files, folders, globs or hub ids.

The one reader family of the project: SFT adapters, pretraining documents, decontamination benchmarks,
webgen seed tasks and interchange files all read through it.

Local forms: ``.json`` (one array, or one object per line), ``.jsonl``/``.ndjson``, ``.parquet``,
``.arrow`` and ``save_to_disk`` folders, and on request ``.txt`` (one record, a string, per non-blank
line); the JSON and text forms also as ``.gz`` and ``.zst``. The same files, folders and globs at an fsspec
URL (``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``) are read through fsspec
(`crystalmix.core.remote`); local paths never are. Anything else that is not an existing path and looks
like ``owner/name`` (or is written ``hf:name``) is read from the Hugging Face hub with ``datasets`` in
streaming mode. Nothing here holds a whole file: JSON arrays are cut into elements by the C JSON decoder
over a sliding buffer, so a 1 GB array costs a few MB plus its largest record, and one record (a line, or
an array element) larger than `MAX_RECORD` is refused rather than grown into.

Bad *files* (unknown extension, missing path, not JSON, truncated or corrupt compression) raise
`BadFileError`, a `UserError` naming the file and, for JSON, the line. A single malformed line inside an
otherwise good JSONL file is a bad *record*: it comes out as an `UnparsedRecord` so the caller rejects or
counts it. The first record of a JSONL file must parse, so a file that is not JSON at all still stops.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from glob import glob, has_magic
from itertools import chain
from pathlib import Path
from typing import IO, Any

import zstandard

from crystalmix.core.errors import UserError
from crystalmix.core.records import RawRecord, UnparsedRecord
from crystalmix.core.remote import UrlFile, is_url

JSON_EXTS = (".json", ".jsonl", ".ndjson")
TEXT_EXTS = (".txt",)
COMPRESSED = (".gz", ".zst", ".zstd")
TABLE_EXTS = (".parquet", ".arrow")
KNOWN = tuple(e + c for e in JSON_EXTS for c in ("",) + COMPRESSED) + TABLE_EXTS
KNOWN_TEXT = tuple(e + c for e in TEXT_EXTS for c in ("",) + COMPRESSED)
CHUNK = 1 << 20  # bytes per read; also the JSON buffer's compaction threshold
# One record (a JSONL or text line in bytes, a JSON array element in characters) larger than this is
# refused: a JSONL line becomes a ``too_large`` bad record, an array element stops the file.
MAX_RECORD = 256 << 20
TOO_LARGE_KEPT = 4096  # bytes of an oversized line kept in its bad record, to show what it was
TABLE_BATCH = 1024
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WS = re.compile(r"[ \t\n\r]*")
_SCANNER = json.JSONDecoder().scan_once
_SET_DATA = RawRecord.data.__set__  # type: ignore[attr-defined]  # slot descriptors
_SET_FILE = RawRecord.file.__set__  # type: ignore[attr-defined]
_SET_LINE = RawRecord.line.__set__  # type: ignore[attr-defined]
_SET_ITEM = RawRecord.item.__set__  # type: ignore[attr-defined]


class BadFileError(UserError):
    """A whole input file cannot be read (missing, not JSON, corrupt or truncated): names the file."""


def _scan_line(raw: bytes) -> Any:
    """One JSON value on a line, via the C scanner behind json.loads without its Python layers."""
    text = raw.decode()
    data, end = _SCANNER(text, 0)
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data")
    return data


try:  # orjson parses strict RFC 8259 JSON several times faster; json.loads remains the reference
    import orjson

    _fast_loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency, but the stdlib path must stand alone
    _fast_loads = _scan_line


def iter_records(inputs: Sequence[str] | str, *, split: str = "train",
                 data_files: str | Sequence[str] | None = None, text_files: bool = False) -> Iterator[RawRecord]:
    """Yield every record of `inputs` in order (inputs in the given order, files of a folder sorted).

    All inputs are resolved before the first record is yielded, so a missing path fails before any
    output is written. `split` picks the split of hub datasets and of ``save_to_disk`` dataset dicts;
    `data_files` is passed to the hub loader, or filters a local folder's files by glob. With
    `text_files`, ``.txt`` files are read too (each non-blank line is a record whose data is the string).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    if not inputs:
        raise UserError("no input given")
    readers = plan_inputs(inputs, split=split, data_files=data_files, text_files=text_files)
    return _chain(readers)


def _chain(readers: list[Callable[[], Iterator[RawRecord]]]) -> Iterator[RawRecord]:
    """The readers' records one file after another; each file is opened when the previous one is done.

    `itertools.chain` passes records on in C, where a ``yield from`` generator would add a Python frame
    resumption per record.
    """
    return chain.from_iterable(read() for read in readers)


def plan_inputs(inputs: Sequence[str], *, split: str = "train", data_files: str | Sequence[str] | None = None,
                text_files: bool = False) -> list[Callable[[], Iterator[RawRecord]]]:
    """Resolve inputs into one reader per file (raising `UserError` now); each call streams that file."""
    return [read for spec in inputs for read in _plan(str(spec), split, data_files, text_files)]


def read_file(path: str | Path, *, text_files: bool = False, columns: Sequence[str] | None = None,
              optional_columns: Sequence[str] = ()) -> Iterator[RawRecord]:
    """The records of one local file, by its extension (raises `BadFileError` naming it).

    For parquet and Arrow files only `columns` (each must exist) and those of `optional_columns` that
    exist are read; JSON records always come whole.
    """
    where = UrlFile(path) if is_url(path) else Path(path)
    return _file_reader(where, text_files, tuple(columns) if columns is not None else None,
                        tuple(optional_columns))()


def list_files(specs: Sequence[str], *, text_files: bool = False) -> list[str]:
    """Sorted, de-duplicated files named by `specs` (files, folders of known types, globs; local or URLs).

    A spec that matches nothing contributes nothing (the caller decides whether an empty list is an
    error); the names are as `read_file` reports them, so errors can be matched back to this list.
    """
    known = _known(text_files)
    out: set[str] = set()
    for spec in specs:
        if is_url(spec):
            from crystalmix.core.remote import expand

            out.update(expand(spec, known)[1])
            continue
        path = Path(spec).expanduser()
        if path.is_dir():
            out.update(str(f) for f in _folder_files(path, [], known))
        elif path.is_file():
            out.add(str(path))
        elif has_magic(spec):
            for m in glob(str(path), recursive=True):
                mp = Path(m)
                if mp.is_file():
                    out.add(str(mp))
                elif mp.is_dir():
                    out.update(str(f) for f in _folder_files(mp, [], known))
    return sorted(out)


# -- resolving inputs ------------------------------------------------------------------------------------

Reader = Callable[[], Iterator[RawRecord]]


def _known(text_files: bool) -> tuple[str, ...]:
    return KNOWN + KNOWN_TEXT if text_files else KNOWN


def _plan(spec: str, split: str, data_files: str | Sequence[str] | None, text_files: bool) -> list[Reader]:
    """Turn one input string into a list of readers (one per file), or raise `UserError`."""
    patterns = [data_files] if isinstance(data_files, str) else list(data_files or [])
    if is_url(spec):
        return _plan_url(spec, patterns, text_files)
    if spec.startswith("hf:"):
        return [lambda: read_hub(spec[3:], split, data_files)]
    known = _known(text_files)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # save_to_disk
            return [lambda f=f: _read_arrow(f) for f in _saved_files(path, split)]
        files = _folder_files(path, patterns, known)
        if not files:
            raise UserError(f"no readable files (known: {', '.join(known)})", path=path)
        return [_file_reader(f, text_files) for f in files]
    if path.is_file():
        if patterns:
            raise UserError("data_files applies to folders and hub ids, not to a single file", path=path)
        return [_file_reader(path, text_files)]
    if has_magic(spec):
        matches = sorted(Path(m) for m in glob(str(path), recursive=True))
        if not matches:
            raise UserError("no files match this pattern", path=spec)
        out: list[Reader] = []
        for m in matches:
            out += _plan(str(m), split, None, text_files) if m.is_dir() else [_file_reader(m, text_files)]
        return out
    # owner/name is a hub id unless it looks like a local path (a data extension, or its first part exists)
    if HUB_ID.match(spec) and not spec.lower().endswith(known) and not Path(spec.split("/")[0]).exists():
        return [lambda: read_hub(spec, split, data_files)]
    raise UserError("no such file or folder", path=spec)


def _plan_url(spec: str, patterns: list[str], text_files: bool) -> list[Reader]:
    """One reader per file a URL names (a file, a folder of known types, a glob), or `UserError` naming it."""
    from crystalmix.core.remote import expand

    known = _known(text_files)
    kind, urls = expand(spec, known, patterns)
    if kind == "missing":
        raise UserError("no such file or folder", path=spec)
    if kind == "file" and patterns:
        raise UserError("data_files applies to folders and hub ids, not to a single file", path=spec)
    if not urls:
        raise UserError("no files match this pattern" if kind == "glob"
                        else f"no readable files (known: {', '.join(known)})", path=spec)
    return [_file_reader(UrlFile(u), text_files) for u in urls]


def _folder_files(folder: Path, patterns: list[str], known: tuple[str, ...]) -> list[Path]:
    """Files of known types under `folder`, sorted; hidden files and folders inside it are left out."""
    if patterns:
        found = {p for pat in patterns for p in folder.glob(pat) if p.is_file()}
    else:
        found = {p for p in folder.rglob("*") if p.is_file()}
    return sorted(p for p in found if p.name.lower().endswith(known)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class FileReader:
    """The reader of one local file, as `plan_inputs` returns it for files: `path` names the file."""

    __slots__ = ("path", "read")

    def __init__(self, path: Path, read: Reader) -> None:
        self.path, self.read = path, read

    def __call__(self) -> Iterator[RawRecord]:
        return self.read()


def _file_reader(path: Path | UrlFile, text_files: bool = False, columns: tuple[str, ...] | None = None,
                 optional: tuple[str, ...] = ()) -> Reader:
    """The reader of one file by its extension: a `FileReader` for a local file, a plain reader for a URL
    (which `plan_parts` keeps whole)."""
    name = path.name.lower()
    known = _known(text_files)
    if not name.endswith(known):
        raise BadFileError(f"unknown file type (known: {', '.join(known)})", path=path)
    read: Reader
    if name.endswith(".parquet"):
        read = lambda: _read_parquet(path, columns, optional)  # noqa: E731
    elif name.endswith(".arrow"):
        read = lambda: _read_arrow(path, columns, optional)  # noqa: E731
    elif name.endswith(KNOWN_TEXT):
        read = lambda: _read_text_lines(path)  # noqa: E731
    else:
        read = lambda: _read_json_file(path)  # noqa: E731
    return FileReader(path, read) if isinstance(path, Path) else read


# -- parts of inputs, for reading one source in parallel ------------------------------------------------

def line_blocks(path: str | Path, size: int = CHUNK) -> Iterator[bytes]:
    """A JSON Lines file in blocks of about `size` bytes, each made of whole lines (the last one's newline
    included): the unit of work when a file this program wrote is parsed by several workers."""
    rest = b""
    with open(path, "rb") as fh:
        while block := fh.read(size):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
    if rest:
        yield rest


PART_BYTES = 8 << 20  # files larger than this are read in parts of about this size: a file of a few tens
# of MB keeps two cores busy, while the per-part costs (steps made, a copy at the merge) stay small


def part_size(remaining: int, part_bytes: int) -> int:
    """The size of the next part when `remaining` bytes of a file are left: `part_bytes`, then half of what
    is left, down to a quarter of `part_bytes`. A file's last parts are smaller, so the workers of a stage
    finish close together instead of one of them working on alone through a whole last part; the plan
    still depends on the file alone, never on the number of workers."""
    return max(min(part_bytes, remaining // 2), part_bytes // 4, 1)


@dataclass(frozen=True, slots=True)
class FilePart:
    """One part of a source's local inputs, by `kind`:

    - ``file``: the whole file;
    - ``lines``: the lines of a JSON Lines file (or a ``.json`` of one object per line) from byte `start`
      to byte `end`, both at line starts, the first of which is line ``first_line + 1``;
    - ``array``: the elements of a top-level JSON array from byte `start` (where an element starts) to byte
      `end` (where the next part's first element starts, or the end of the file); `first_item` elements
      come before the part, the one just before it starting on line `prev_line`, and its first element
      starts on line ``first_line + 1``;
    - ``rows``: the row groups `start` to ``end - 1`` of a parquet file, whose first row is row
      ``first_line + 1``.

    `nbytes` is the part's share of the file's bytes (progress counts it).
    """

    path: str
    start: int = 0
    end: int = -1
    first_line: int = 0
    kind: str = "file"
    first_item: int = 0
    prev_line: int = 0
    nbytes: int = -1


def plan_parts(inputs: Sequence[str], *, split: str = "train", data_files: str | Sequence[str] | None = None,
               text_files: bool = False, part_bytes: int | None = None) -> list[FilePart] | None:
    """The inputs as parts that can be read independently and give, one after another, the records
    `iter_records` gives; None when an input is not a local file (hub ids, ``save_to_disk`` folders).

    Files over `part_bytes` are cut into parts of about that size: JSON Lines (and ``.json`` files of one
    object per line) at line starts, after one pass counting newlines; a ``.json`` holding one array at
    element starts, after one pass over its strings and brackets (C regex, a Python step per bracket and
    string, not per character); parquet files at row-group boundaries, from the footer alone. Everything
    else is one part per file: a compressed stream has no random access (reaching the middle means
    decompressing all before it), Arrow files and whole text files are not cut. A file whose structure the
    pass does not understand is one part too, so its reader reports the error as it always did.
    """
    readers = plan_inputs(inputs, split=split, data_files=data_files, text_files=text_files)
    if not all(isinstance(r, FileReader) for r in readers):
        return None
    part_bytes = part_bytes or PART_BYTES
    parts: list[FilePart] = []
    for r in readers:
        path: Path = r.path  # type: ignore[attr-defined]
        size = path.stat().st_size if path.is_file() else 0
        name = path.name.lower()
        cut: list[FilePart] | None = None
        if size > part_bytes:
            if name.endswith((".jsonl", ".ndjson")):
                cut = _line_parts(path, size, part_bytes)
            elif name.endswith(".json"):
                first = _first_byte(path)
                if first == b"[":
                    cut = _array_parts(path, size, part_bytes)
                elif first == b"{" and _first_line_parses(path):
                    cut = _line_parts(path, size, part_bytes)
            elif name.endswith(".parquet"):
                cut = _row_parts(path, part_bytes)
        parts += cut if cut and len(cut) > 1 else [FilePart(str(path), nbytes=size)]
    return parts


def _line_parts(path: Path, size: int, part_bytes: int) -> list[FilePart]:
    cuts = [(0, 0)]  # (byte offset of a line start, lines before it)
    pos = lines = 0
    target = part_size(size, part_bytes)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                at = 0
                while pos + len(block) > target:
                    i = block.find(b"\n", max(target - pos, at))
                    if i < 0:
                        break
                    cut = pos + i + 1
                    if cut >= size:
                        break
                    cuts.append((cut, lines + block.count(b"\n", 0, i + 1)))
                    at, target = i + 1, cut + part_size(size - cut, part_bytes)
                lines += block.count(b"\n")
                pos += len(block)
    except OSError as exc:
        raise _stream_error(path, exc, 0) from None
    ends = [c for c, _ in cuts[1:]] + [size]
    return [FilePart(str(path), start, end, before, "lines", nbytes=end - start)
            for (start, before), end in zip(cuts, ends, strict=True)]


# A JSON string (escapes included), a bracket or a comma; a lone quote is a string the buffer cuts.
_ARRAY_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},]|"', re.DOTALL)
_WS_BYTES = re.compile(rb"[ \t\n\r]*")


def _array_parts(path: Path, size: int, part_bytes: int) -> list[FilePart] | None:
    """Element ranges of a file holding one JSON array, cut at the first element starting `part_size` or
    more after the previous cut; None when the pass finds no well-formed array (the file is read whole).

    UTF-8 never puts a quote, backslash, bracket or comma byte inside a multi-byte character, so the pass
    runs on bytes, and element starts are byte offsets. Strings are matched whole by the regex (so brackets
    inside them are skipped in C); only brackets, commas and strings reach Python.
    """
    file = str(path)
    cuts: list[FilePart] = []
    depth, elements, line, last_line, last_cut = 0, 0, 1, 0, 0
    base, carry, closed = 0, b"", False
    finditer, ws, quote = _ARRAY_TOKENS.finditer, _WS_BYTES.match, ord('"')
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(CHUNK)
                eof = not chunk
                buf = carry + chunk
                counted, carry = 0, b""  # newlines of buf[:counted] are in `line`
                for m in finditer(buf):
                    at, tok = m.start(), buf[m.start()]
                    if tok == quote:
                        if m.end() - at == 1:  # a string the buffer cuts: scan it again with more
                            if eof:
                                return None
                            carry = buf[at:]
                            break
                        continue
                    if closed:
                        return None  # something after the array's end
                    if tok == ord("{"):
                        depth += 1
                        continue
                    if tok == ord("["):
                        depth += 1
                        if depth > 1:
                            continue
                    elif tok == ord("}"):
                        if depth <= 1:
                            return None  # closes nothing, or closes the array
                        depth -= 1
                        continue
                    elif tok == ord("]"):
                        depth -= 1
                        closed = depth == 0
                        continue
                    elif depth != 1:  # a comma inside an element
                        continue
                    # '[' opening the array, or a comma between its elements: an element starts next
                    nxt = ws(buf, m.end()).end()
                    if nxt >= len(buf):
                        if eof:
                            return None
                        if tok == ord("["):
                            depth = 0  # scanned again
                        carry = buf[at:]  # see where the element starts with more bytes
                        break
                    if buf[nxt] == ord("]"):
                        if tok == ord(","):
                            return None  # a trailing comma
                        continue  # an empty array
                    line += buf.count(b"\n", counted, nxt)
                    counted = nxt
                    elements += 1
                    start = base + nxt
                    if elements > 1 and start - last_cut >= part_size(size - last_cut, part_bytes):
                        cuts.append(FilePart(file, start, -1, line - 1, "array", elements - 1, last_line))
                        last_cut = start
                    last_line = line
                line += buf.count(b"\n", counted, len(buf) - len(carry))
                base += len(buf) - len(carry)
                if eof:
                    break
    except OSError as exc:
        raise _stream_error(path, exc, 0) from None
    if not closed:
        return None
    starts = [0, *(c.start for c in cuts)]
    ends = [*(c.start for c in cuts), size]
    first = FilePart(file, 0, -1, 0, "array")
    return [dataclasses.replace(c, end=e, nbytes=e - s) for c, s, e in zip([first, *cuts], starts, ends,
                                                                          strict=True)]


def _row_parts(path: Path, part_bytes: int) -> list[FilePart] | None:
    """Runs of whole row groups of a parquet file, each about `part_size` of compressed data; None when
    the footer cannot be read (the reader then names the problem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return None
    parts: list[FilePart] = []
    sizes = [sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
             for rg in map(md.row_group, range(md.num_row_groups))]
    left = sum(sizes)
    first = rows = acc = before = 0
    for i in range(md.num_row_groups):
        acc += sizes[i]
        rows += md.row_group(i).num_rows
        if acc >= part_size(left, part_bytes) or i + 1 == md.num_row_groups:
            left -= acc
            parts.append(FilePart(str(path), first, i + 1, before, "rows", nbytes=acc))
            first, before, acc = i + 1, rows, 0
    return parts


def read_part(part: FilePart, *, text_files: bool = False) -> Iterator[RawRecord]:
    """The records of one part (see `plan_parts`), with the file name and line numbers of the whole file."""
    path = Path(part.path)
    if part.kind == "lines":
        return _read_json_lines(path, part.start, part.end, part.first_line)
    if part.kind == "array":
        return _read_json_values(path, array=True, part=part)
    if part.kind == "rows":
        return _read_parquet(path, row_groups=(part.start, part.end), first_row=part.first_line)
    return _file_reader(path, text_files)()


# -- compressed streams -----------------------------------------------------------------------------------

class _ChunkStream(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks (to give zstd a strict EOF check)."""

    def __init__(self, chunks: Iterator[bytes], underlying: IO[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self._underlying = underlying

    def close(self) -> None:
        self._underlying.close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def zstd_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompressed chunks of a zstd stream of one or more frames; a cut last frame raises `EOFError`.

    zstandard's own stream reader stops silently at a truncated frame; `decompressobj` lets us check
    `eof` at the end. An empty file holds no frame and no data.
    """
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    fed = False
    pending = b""
    while True:
        data = pending or raw.read(CHUNK)
        pending = b""
        if not data:
            break
        fed = True
        out = obj.decompress(data)
        if out:
            yield out
        if obj.eof:  # a file may hold several frames back to back
            pending = obj.unused_data
            obj, fed = dctx.decompressobj(), False
    if fed and not obj.eof:
        raise EOFError("zstd stream ended before the end of its frame")


class _OwnedGzip(gzip.GzipFile):
    """A gzip stream over a file object it closes too (GzipFile leaves a `fileobj` open)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def _open_binary(path: Path | UrlFile) -> IO[bytes]:
    name = path.name.lower()
    if isinstance(path, UrlFile):
        from crystalmix.core.remote import open_input, open_raw

        if name.endswith(".gz"):
            return io.BufferedReader(_OwnedGzip(open_raw(path.url)), CHUNK)  # type: ignore[arg-type]
        if name.endswith((".zst", ".zstd")):
            raw = open_raw(path.url)
            return io.BufferedReader(_ChunkStream(zstd_chunks(raw), raw), CHUNK)
        return open_input(path.url, CHUNK)
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
        return io.BufferedReader(_ChunkStream(zstd_chunks(raw), raw), CHUNK)
    # One read call per MB rather than per 8 KB: iterating the lines of a JSONL file costs a third as much.
    return open(path, "rb", buffering=max(CHUNK, io.DEFAULT_BUFFER_SIZE))


# Every way a read can fail below the JSON level: missing or unreadable file (OSError), gzip and zstd
# corruption, and EOFError from a cut gzip stream (left alone, click would take it for Ctrl-D: "Aborted").
_STREAM_ERRORS = (EOFError, OSError, zlib.error, zstandard.ZstdError)


class _Range(io.RawIOBase):
    """At most `left` bytes of an open file, from where it stands."""

    def __init__(self, raw: IO[bytes], left: int) -> None:
        self.raw, self.left = raw, left

    def close(self) -> None:
        self.raw.close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        got = self.raw.readinto(memoryview(buffer)[:n])
        self.left -= got or 0
        return got or 0


def _open_range(path: Path, start: int, end: int) -> IO[bytes]:
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the wrapper
    raw.seek(start)
    return io.BufferedReader(_Range(raw, end - start), CHUNK)


def _stream_error(path: Path | UrlFile, exc: Exception, line: int) -> BadFileError:
    after = f" after line {line}" if line else ""
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)):
        return BadFileError(f"truncated or corrupt compressed file ({exc}){after}", path=path)
    if isinstance(exc, FileNotFoundError):
        return BadFileError("file not found", path=path)
    return BadFileError(f"cannot read file: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
                        f"{after}", path=path)


def _lines(fh: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream, each at most `MAX_RECORD` bytes (a longer line comes in pieces)."""
    return iter(partial(fh.readline, MAX_RECORD), b"")


def _too_large(fh: IO[bytes], head: bytes) -> UnparsedRecord:
    """The bad record for a line cut at `MAX_RECORD` bytes: the rest of the line is read and dropped."""
    size = len(head)
    while True:
        piece = fh.readline(CHUNK)
        size += len(piece)
        if not piece or piece.endswith(b"\n"):
            break
    kept = head[:TOO_LARGE_KEPT]
    return UnparsedRecord(kept.decode("utf-8", "replace"),
                          f"a line of {size:,} bytes is over the reader's limit of {MAX_RECORD:,} bytes "
                          f"(its first {len(kept):,} bytes are kept here)", "too_large")


# -- JSON, JSONL and their compressed forms --------------------------------------------------------------

def _read_json_file(path: Path | UrlFile) -> Iterator[RawRecord]:
    """JSON Lines by extension; a ``.json`` by its first byte: ``[`` an array, ``{`` objects per line."""
    name = path.name.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".ndjson")):
        return _read_json_lines(path)  # directly, not through the generator below (a hot path)
    return _read_json_document(path)


def _read_json_document(path: Path | UrlFile) -> Iterator[RawRecord]:
    """A ``.json`` file: an array, objects one per line, or pretty-printed objects one after another."""
    first = _first_byte(path)
    if first is None:
        return  # an empty file holds no records
    if first == b"[":
        yield from _read_json_values(path, array=True)
    elif first != b"{":
        raise BadFileError("not JSON: expected '[' or '{' at the start of the file", path=path, line=1)
    elif _first_line_parses(path):
        yield from _read_json_lines(path)
    else:  # a .json holding pretty-printed objects one after another (or just one)
        yield from _read_json_values(path, array=False)


def _first_byte(path: Path | UrlFile) -> bytes | None:
    try:
        with _open_binary(path) as fh:
            while True:
                block = fh.read(4096)
                if not block:
                    return None
                block = block.lstrip(b" \t\r\n")
                if block.startswith(codecs.BOM_UTF8):
                    block = block[len(codecs.BOM_UTF8):].lstrip(b" \t\r\n")
                if block:
                    return block[:1]
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, 0) from None


def _first_line_parses(path: Path | UrlFile) -> bool:
    """Whether the first non-blank line is one JSON value (read at most `MAX_RECORD` bytes of it)."""
    try:
        with _open_binary(path) as fh:
            for raw in _lines(fh):
                if raw.strip():
                    try:
                        json.loads(raw)
                        return True
                    except (ValueError, RecursionError):
                        return False
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, 0) from None
    return False


def _read_json_lines(path: Path | UrlFile, start: int = 0, end: int = -1, first_line: int = 0) -> Iterator[RawRecord]:
    """One JSON value per line; blank lines are skipped; a bad line after a good one is a bad record.

    With `end` >= 0, only the lines from byte `start` to `end`, numbered from ``first_line + 1``; a part
    after the first takes its first line as following a good one (the first part checks the file's start).
    """
    file = str(path)
    line = first_line
    seen_good = start > 0
    fast = _fast_loads
    limit = MAX_RECORD
    # RawRecord(data, file, line) with its slots filled directly: the frozen __init__'s
    # object.__setattr__ calls cost a third of parsing a short line (RawRecord has nothing to validate).
    new, set_data, set_file, set_line, set_item = object.__new__, _SET_DATA, _SET_FILE, _SET_LINE, _SET_ITEM
    try:
        with _open_binary(path) if end < 0 else _open_range(path, start, end) as fh:
            for raw in _lines(fh):
                line += 1
                if len(raw) == limit and not raw.endswith(b"\n"):  # cut by the limit: the line is too long
                    data: Any = _too_large(fh, raw)
                else:
                    # The fast parser accepts a subset of what json.loads does and gives the same values;
                    # any line it refuses goes through json.loads, so results and errors are the stdlib's.
                    try:
                        data = fast(raw)
                    except (ValueError, StopIteration, RecursionError):
                        try:
                            data = json.loads(raw)
                        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; too deep
                            if not raw.strip():
                                continue
                            if not seen_good:
                                msg = (f"not UTF-8 text ({exc.reason})" if isinstance(exc, UnicodeDecodeError)
                                       else f"not JSON Lines: {_json_msg(exc)}")
                                raise BadFileError(msg, path=path, line=line) from None
                            data = UnparsedRecord(raw.decode("utf-8", "replace").rstrip("\r\n"), _json_msg(exc),
                                                  "not_utf8" if isinstance(exc, UnicodeDecodeError)
                                                  else "invalid_json")
                    seen_good = seen_good or type(data) is not UnparsedRecord
                rec = new(RawRecord)
                set_data(rec, data)
                set_file(rec, file)
                set_line(rec, line)
                set_item(rec, 0)
                yield rec
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, line) from None


def _json_msg(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    return str(exc)


def _read_text_lines(path: Path | UrlFile) -> Iterator[RawRecord]:
    """A text file: each non-blank line (without its line break) is a record; a non-UTF-8 line is a bad one."""
    file, line = str(path), 0
    limit = MAX_RECORD
    try:
        with _open_binary(path) as fh:
            for raw in _lines(fh):
                line += 1
                if len(raw) == limit and not raw.endswith(b"\n"):
                    yield RawRecord(_too_large(fh, raw), file, line)
                    continue
                if not raw.strip():
                    continue
                raw = raw.rstrip(b"\r\n")
                try:
                    data: Any = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    data = UnparsedRecord(raw.decode("utf-8", "replace"), str(exc), "not_utf8")
                yield RawRecord(data, file, line)
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, line) from None


def _text_chunks(path: Path | UrlFile) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with _open_binary(path) as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield decoder.decode(block)


def _range_chunks(path: Path, start: int, end: int) -> Iterator[str]:
    """Text of bytes `start` to `end` of a file (both at character boundaries), a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8-sig" if start == 0 else "utf-8")()
    with _open_range(path, start, end) as fh:
        while block := fh.read(CHUNK):
            yield decoder.decode(block)
    if tail := decoder.decode(b"", final=True):
        yield tail


def _read_json_values(path: Path | UrlFile, *, array: bool, part: FilePart | None = None) -> Iterator[RawRecord]:
    """Elements of a top-level array (or whitespace-separated values), parsed one at a time; with `part`
    (an ``array`` part of `plan_parts`), only its elements, numbered and placed as in the whole file.

    ``raw_decode`` runs over a buffer that is refilled as needed and trimmed behind the cursor, so
    memory is one read chunk plus the current element. ``line`` is the line where the element starts;
    elements that start on the same line as a neighbour also get their 1-based position as ``item``.
    An element cut by the buffer's end is retried after the buffer has at least doubled, and the new text
    is joined once per retry, so a huge element costs linear time; past `MAX_RECORD` characters it stops.
    """
    file = str(path)
    inner = part is not None and part.start > 0  # the part starts at an element, after the '['
    open_end = part is not None and part.end < path.stat().st_size  # the array goes on after the part
    chunks = _text_chunks(path) if part is None else _range_chunks(path, part.start, part.end)
    decode = json.JSONDecoder().raw_decode
    ws = _WS.match
    buf, pos, line, eof = "", 0, 1 + (part.first_line if part else 0), False

    def fill(need: int) -> bool:
        """Read until `need` characters lie at or after the cursor (or the input ends); True if it grew.

        What is behind the cursor is dropped and the pieces are joined once, whatever their number.
        """
        nonlocal buf, pos, eof
        have = len(buf) - pos
        pieces = [buf[pos:]] if pos else [buf]
        grew = False
        while have < need and not eof:
            try:
                piece = next(chunks)
            except StopIteration:
                eof = True
                break
            pieces.append(piece)
            have += len(piece)
            grew = grew or bool(piece)
        if grew or pos:
            buf, pos = "".join(pieces), 0
        return grew

    def more() -> bool:
        """One more chunk after the cursor (the buffer is compacted when the cursor is far in)."""
        nonlocal buf, eof
        if pos > CHUNK:
            return fill(len(buf) - pos + 1)
        if eof:
            return False
        for piece in chunks:
            if piece:
                buf += piece
                return True
        eof = True
        return False

    def skip_ws() -> bool:
        """Advance past whitespace; False at the end of input."""
        nonlocal pos, line
        while True:
            end = ws(buf, pos).end()
            line += buf.count("\n", pos, end)
            pos = end
            if pos < len(buf):
                return True
            if not more():
                return False

    def fail(msg: str, at_line: int) -> BadFileError:
        return BadFileError(f"invalid JSON: {msg}", path=path, line=at_line)

    def parse() -> tuple[Any, int]:
        """The value at the cursor and its end, reading more while it is cut by the buffer's end."""
        while True:
            try:
                value, end = decode(buf, pos)
            except RecursionError:
                raise fail("nested too deeply", line) from None
            except json.JSONDecodeError as exc:
                maybe_cut = exc.pos >= len(buf) - 16 or exc.msg.startswith("Unterminated string")
                if maybe_cut and not eof:
                    have = len(buf) - pos
                    if have > MAX_RECORD:
                        raise too_large() from None
                    fill(min(max(2 * have, have + CHUNK), MAX_RECORD + 1))
                    continue
                raise fail(exc.msg, line + buf.count("\n", pos, exc.pos)) from None
            if end >= len(buf) and not eof and more():
                continue  # a bare number may go on in the next chunk
            if end - pos > MAX_RECORD:
                raise too_large()
            return value, end

    def too_large() -> BadFileError:
        return BadFileError(f"no complete JSON value within the reader's limit of {MAX_RECORD:,} characters "
                            "(a record that large, or an unterminated string) starts here", path=path, line=line)

    try:
        if not fill(CHUNK):
            return
        skip_ws()
        if array and not inner:
            pos += 1  # the '[' checked by the caller
            if not skip_ws():
                raise fail("unexpected end of file inside the top-level array", line)
            if buf[pos] == "]":
                pos += 1
                if skip_ws():
                    raise fail("extra data after the top-level array", line)
                return
        elif not skip_ws():
            return
        n, prev_line = (part.first_item, part.prev_line) if part else (0, 0)
        while True:  # the cursor is at the start of an element
            start = line
            value, end = parse()
            n += 1
            line += buf.count("\n", pos, end)
            pos = end
            # Find where the next element starts (if any) before handing this one on, to know whether
            # the two share a line.
            done = cut = False
            if array:
                if not skip_ws():
                    raise fail("unexpected end of file inside the top-level array (truncated?)", line)
                sep = buf[pos]
                pos += 1
                if sep == "]":
                    if skip_ws():
                        raise fail("extra data after the top-level array", line)
                    done = True
                elif sep != ",":
                    raise fail(f"expected ',' or ']' after element {n}, found {sep!r}", line)
                elif not skip_ws():
                    if not open_end:
                        raise fail("unexpected end of file inside the top-level array (truncated?)", line)
                    done = cut = True  # the next part starts at the next element, on line `line`
            else:
                done = not skip_ws()
            shared = start == prev_line or ((not done or cut) and start == line)
            yield RawRecord(value, file, start, n if shared else 0)
            if done:
                return
            prev_line = start
    except UnicodeDecodeError as exc:
        raise BadFileError(f"not UTF-8 text: {exc.reason}", path=path, line=line) from None
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, line) from None


# -- columnar files ---------------------------------------------------------------------------------------

def _columns(path: Path | UrlFile, names: list[str], columns: tuple[str, ...] | None,
             optional: tuple[str, ...]) -> list[str] | None:
    """The columns to read: `columns` (each must exist) plus the `optional` ones present; None for all."""
    if columns is None:
        return None
    missing = [c for c in columns if c not in names]
    if missing:
        raise BadFileError(f"no column {missing[0]!r} (columns: {', '.join(sorted(names))})", path=path)
    return list(columns) + [c for c in optional if c in names and c not in columns]


def _table_input(path: Path | UrlFile) -> Any:
    """What pyarrow opens: a local path as is, a URL as a seekable fsspec file (closed when dropped)."""
    if isinstance(path, UrlFile):
        from crystalmix.core.remote import open_raw

        return open_raw(path.url)
    return path


def _read_parquet(path: Path | UrlFile, columns: tuple[str, ...] | None = None, optional: tuple[str, ...] = (),
                  row_groups: tuple[int, int] | None = None, first_row: int = 0) -> Iterator[RawRecord]:
    """A parquet file's rows (or those of row groups ``row_groups[0]`` to ``row_groups[1] - 1``, the first of
    which is row ``first_row + 1``), batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(_table_input(path))
    except FileNotFoundError:
        raise BadFileError("file not found", path=path) from None
    except (pa.ArrowException, OSError) as exc:
        raise BadFileError(f"not a readable parquet file: {exc}", path=path) from None
    cols = _columns(path, pf.schema_arrow.names, columns, optional)
    file, row = str(path), first_row
    groups = None if row_groups is None else list(range(*row_groups))
    new, set_data, set_file, set_line, set_item = object.__new__, _SET_DATA, _SET_FILE, _SET_LINE, _SET_ITEM
    try:
        for batch in pf.iter_batches(batch_size=TABLE_BATCH, columns=cols, row_groups=groups):
            for data in batch.to_pylist():
                row += 1
                rec = new(RawRecord)  # RawRecord(data, file, row), without the frozen __init__ (a hot path)
                set_data(rec, data)
                set_file(rec, file)
                set_line(rec, row)
                set_item(rec, 0)
                yield rec
    except (pa.ArrowException, OSError) as exc:
        raise BadFileError(f"corrupt parquet data after row {row}: {exc}", path=path) from None


def _read_arrow(path: Path | UrlFile, columns: tuple[str, ...] | None = None,
                optional: tuple[str, ...] = ()) -> Iterator[RawRecord]:
    """An Arrow IPC file or stream (``datasets`` cache files are streams); memory-mapped, batch by batch."""
    import pyarrow as pa

    file, row = str(path), 0
    try:
        source = pa.memory_map(str(path), "r") if isinstance(path, Path) else pa.PythonFile(_table_input(path), "r")
        try:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            batches: Any = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = pa.ipc.open_stream(source)
            schema = batches.schema
        cols = _columns(path, schema.names, columns, optional)
        for batch in batches:
            for data in (batch.select(cols) if cols is not None else batch).to_pylist():
                row += 1
                yield RawRecord(data, file, row)
    except FileNotFoundError:
        raise BadFileError("file not found", path=path) from None
    except (pa.ArrowException, OSError) as exc:
        raise BadFileError(f"not a readable Arrow file: {exc}", path=path) from None


def _saved_files(folder: Path, split: str) -> list[Path]:
    """The Arrow files of a ``Dataset.save_to_disk`` folder (or of one split of a saved ``DatasetDict``)."""
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError) as exc:
            raise UserError(f"bad dataset_dict.json: {exc}", path=folder) from None
        if split not in splits:
            raise UserError(f"split {split!r} not found; splits: {', '.join(splits)}", path=folder)
        folder = folder / split
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"bad save_to_disk folder (state.json: {exc})", path=folder) from None
    files = [folder / name for name in names]
    for f in files:
        if not f.is_file():
            raise UserError("listed in state.json but missing", path=f)
    return files


# -- hub datasets -----------------------------------------------------------------------------------------

def _hub_error(label: str, exc: BaseException, row: int = 0) -> UserError:
    where = f" after row {row}" if row else ""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"cannot read hub dataset{where}: {msg}", path=label)


def _hub_errors() -> tuple[type[BaseException], ...]:
    import datasets

    return (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError)


def load_hub(name: str, split: str = "train", data_files: str | Sequence[str] | None = None) -> Any:
    """A hub dataset opened in streaming mode (an ``IterableDataset``); failures are a `UserError`."""
    import datasets

    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if data_files:
        kwargs["data_files"] = data_files
    try:
        return datasets.load_dataset(name, **kwargs)
    except _hub_errors() as exc:
        raise _hub_error(f"{name}[{split}]", exc) from None


def hub_shard_count(name: str, split: str = "train") -> int:
    """How many streaming shards a hub dataset has (pretraining reads one shard per task)."""
    return int(load_hub(name, split).num_shards)


def read_hub(name: str, split: str = "train", data_files: str | Sequence[str] | None = None,
             shard: tuple[int, int] | None = None) -> Iterator[RawRecord]:
    """A hub dataset's rows (or those of shard ``(index, count)``); provenance ``name[split]``, 1-based row."""
    file = f"{name}[{split}]"
    ds = load_hub(name, split, data_files)
    row = 0
    try:
        if shard is not None:
            ds = ds.shard(num_shards=shard[1], index=shard[0])
        for data in ds:
            row += 1
            yield RawRecord(dict(data), file, row)
    except UserError:
        raise
    except _hub_errors() as exc:
        raise _hub_error(file, exc, row) from None
