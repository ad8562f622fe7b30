"""Stream raw records, each with its file and line/row, from local files, folders, globs or hub ids.

Local forms: ``.json`` (one array, or one object per line), ``.jsonl``/``.ndjson``, the ``.gz`` and ``.zst``
of those, ``.parquet``, ``.arrow`` and ``save_to_disk`` folders. Anything else that is not an existing path
and looks like ``owner/name`` (or is written ``hf:name``) is read from the Hugging Face hub with ``datasets``
in streaming mode. Nothing here holds a whole file: JSON arrays are cut into elements by the C JSON decoder
over a sliding buffer, so a 1 GB array costs a few MB plus its largest record.

Bad *files* (unknown extension, missing path, not JSON, truncated compression) raise `UserError` naming
the file and, for JSON, the line. A single malformed line inside an otherwise good JSONL file is a bad
*record*: it comes out as an `UnparsedRecord` so the adapter rejects it as ``invalid_json``. The first
record of a JSONL file must parse, so a file that is not JSON at all still stops the run.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from glob import glob, has_magic
from itertools import chain
from pathlib import Path
from typing import IO, Any

import zstandard

from crystalmix.core.errors import UserError
from crystalmix.core.records import RawRecord, UnparsedRecord

JSON_EXTS = (".json", ".jsonl", ".ndjson")
COMPRESSED = (".gz", ".zst", ".zstd")
TABLE_EXTS = (".parquet", ".arrow")
KNOWN = tuple(e + c for e in JSON_EXTS for c in ("",) + COMPRESSED) + TABLE_EXTS
CHUNK = 1 << 20  # bytes per read; also the JSON buffer's compaction threshold
MAX_RECORD_CHARS = 256 << 20  # one JSON value larger than this is treated as a broken file
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WS = re.compile(r"[ \t\n\r]*")
_SCANNER = json.JSONDecoder().scan_once
_SET_DATA = RawRecord.data.__set__  # type: ignore[attr-defined]  # slot descriptors
_SET_FILE = RawRecord.file.__set__  # type: ignore[attr-defined]
_SET_LINE = RawRecord.line.__set__  # type: ignore[attr-defined]


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
                 data_files: str | Sequence[str] | None = None) -> Iterator[RawRecord]:
    """Yield every record of `inputs` in order (inputs in the given order, files of a folder sorted).

    All inputs are resolved before the first record is yielded, so a missing path fails before any
    output is written. `split` picks the split of hub datasets and of ``save_to_disk`` dataset dicts;
    `data_files` is passed to the hub loader, or filters a local folder's files by glob.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    if not inputs:
        raise UserError("no input given")
    readers = plan_inputs(inputs, split=split, data_files=data_files)
    return _chain(readers)


def _chain(readers: list[Callable[[], Iterator[RawRecord]]]) -> Iterator[RawRecord]:
    """The readers' records one file after another; each file is opened when the previous one is done.

    `itertools.chain` passes records on in C, where a ``yield from`` generator would add a Python frame
    resumption per record.
    """
    return chain.from_iterable(read() for read in readers)


def plan_inputs(inputs: Sequence[str], *, split: str = "train",
                data_files: str | Sequence[str] | None = None) -> list[Callable[[], Iterator[RawRecord]]]:
    """Resolve inputs into one reader per file (raising `UserError` now); each call streams that file."""
    return [read for spec in inputs for read in _plan(str(spec), split, data_files)]


# -- resolving inputs ------------------------------------------------------------------------------------

Reader = Callable[[], Iterator[RawRecord]]


def _plan(spec: str, split: str, data_files: str | Sequence[str] | None) -> list[Reader]:
    """Turn one input string into a list of readers (one per file), or raise `UserError`."""
    patterns = [data_files] if isinstance(data_files, str) else list(data_files or [])
    if spec.startswith("hf:"):
        return [lambda: _read_hub(spec[3:], split, data_files)]
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # save_to_disk
            return [lambda f=f: _read_arrow(f) for f in _saved_files(path, split)]
        files = _folder_files(path, patterns)
        if not files:
            raise UserError(f"no readable files (known: {', '.join(KNOWN)})", path=path)
        return [_file_reader(f) for f in files]
    if path.is_file():
        if patterns:
            raise UserError("data_files applies to folders and hub ids, not to a single file", path=path)
        return [_file_reader(path)]
    if has_magic(spec):
        matches = sorted(Path(m) for m in glob(spec, recursive=True))
        if not matches:
            raise UserError("no files match this pattern", path=spec)
        out: list[Reader] = []
        for m in matches:
            out += _plan(str(m), split, None) if m.is_dir() else [_file_reader(m)]
        return out
    # owner/name is a hub id unless it looks like a local path (a data extension, or its first part exists)
    if HUB_ID.match(spec) and not spec.lower().endswith(KNOWN) and not Path(spec.split("/")[0]).exists():
        return [lambda: _read_hub(spec, split, data_files)]
    raise UserError("no such file or folder", path=spec)


def _folder_files(folder: Path, patterns: list[str]) -> list[Path]:
    if patterns:
        found = {p for pat in patterns for p in folder.glob(pat) if p.is_file()}
    else:
        found = {p for p in folder.rglob("*") if p.is_file()}
    return sorted(p for p in found
                  if p.name.lower().endswith(KNOWN) and not any(part.startswith(".") for part in p.parts))


def _file_reader(path: Path) -> Reader:
    name = path.name.lower()
    if not name.endswith(KNOWN):
        raise UserError(f"unknown file type (known: {', '.join(KNOWN)})", path=path)
    if name.endswith(".parquet"):
        return lambda: _read_parquet(path)
    if name.endswith(".arrow"):
        return lambda: _read_arrow(path)
    return lambda: _read_json_file(path)


# -- JSON, JSONL and their compressed forms --------------------------------------------------------------

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


def _zstd_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    # zstandard's stream_reader stops silently at a truncated frame; decompressobj lets us check `eof`.
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    pending = b""
    while True:
        data = pending or raw.read(CHUNK)
        pending = b""
        if not data:
            break
        out = obj.decompress(data)
        if out:
            yield out
        if obj.eof:  # a file may hold several frames back to back
            pending = obj.unused_data
            obj = dctx.decompressobj()
            if not pending:
                nxt = raw.read(CHUNK)
                if not nxt:
                    return
                pending = nxt
    if not obj.eof:
        raise EOFError("zstd stream ended before the end of its frame")


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
        return io.BufferedReader(_ChunkStream(_zstd_chunks(raw), raw), CHUNK)
    # One read call per MB rather than per 8 KB: iterating the lines of a JSONL file costs a third as much.
    return open(path, "rb", buffering=max(CHUNK, io.DEFAULT_BUFFER_SIZE))


_STREAM_ERRORS = (EOFError, OSError, zlib.error, zstandard.ZstdError)


def _stream_error(path: Path, exc: Exception, line: int) -> UserError:
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)):
        return UserError(f"truncated or corrupt compressed file ({exc}) after line {line}", path=path)
    return UserError(f"cannot read file: {exc}", path=path)


def _read_json_file(path: Path) -> Iterator[RawRecord]:
    """JSON Lines by extension; a ``.json`` by its first byte: ``[`` an array, ``{`` objects per line."""
    name = path.name.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".ndjson")):
        return _read_json_lines(path)  # directly, not through the generator below (a hot path)
    return _read_json_document(path)


def _read_json_document(path: Path) -> Iterator[RawRecord]:
    """A ``.json`` file: an array, objects one per line, or pretty-printed objects one after another."""
    first = _first_byte(path)
    if first is None:
        return  # an empty file holds no records
    if first == b"[":
        yield from _read_json_values(path, array=True)
    elif first != b"{":
        raise UserError("not JSON: expected '[' or '{' at the start of the file", path=path, line=1)
    elif _first_line_parses(path):
        yield from _read_json_lines(path)
    else:  # a .json holding pretty-printed objects one after another (or just one)
        yield from _read_json_values(path, array=False)


def _first_byte(path: Path) -> bytes | None:
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


def _first_line_parses(path: Path) -> bool:
    try:
        with _open_binary(path) as fh:
            for raw in fh:
                if raw.strip():
                    try:
                        json.loads(raw)
                        return True
                    except (ValueError, RecursionError):
                        return False
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, 0) from None
    return False


def _read_json_lines(path: Path) -> Iterator[RawRecord]:
    """One JSON value per line; blank lines are skipped; a bad line after a good one is a bad record."""
    file = str(path)
    line = 0
    seen_good = False
    fast = _fast_loads
    # RawRecord(data, file, line) with its slots filled directly: the frozen __init__'s three
    # object.__setattr__ calls cost a third of parsing a short line (RawRecord has nothing to validate).
    new, set_data, set_file, set_line = object.__new__, _SET_DATA, _SET_FILE, _SET_LINE
    try:
        with _open_binary(path) as fh:
            for raw in fh:
                line += 1
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
                            msg = f"not JSON Lines: {_json_msg(exc)}"
                            raise UserError(msg, path=path, line=line) from None
                        data = UnparsedRecord(raw.decode("utf-8", "replace").rstrip("\r\n"), _json_msg(exc))
                seen_good = seen_good or type(data) is not UnparsedRecord
                rec = new(RawRecord)
                set_data(rec, data)
                set_file(rec, file)
                set_line(rec, line)
                yield rec
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, line) from None


def _json_msg(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    return str(exc)


def _text_chunks(path: Path) -> Iterator[str]:
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


def _read_json_values(path: Path, *, array: bool) -> Iterator[RawRecord]:
    """Elements of a top-level array (or whitespace-separated values), parsed one at a time.

    ``raw_decode`` runs over a buffer that is refilled as needed and trimmed behind the cursor, so
    memory is one read chunk plus the current element. ``line`` is the line where the element starts.
    """
    file = str(path)
    chunks = _text_chunks(path)
    decode = json.JSONDecoder().raw_decode
    ws = _WS.match
    buf, pos, line, eof = "", 0, 1, False
    want = CHUNK

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        if pos > CHUNK:  # drop what is behind the cursor before growing the buffer
            buf, pos = buf[pos:], 0
        try:
            while True:
                piece = next(chunks)
                buf += piece
                if piece:
                    return True
        except StopIteration:
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

    def fail(msg: str, at_line: int) -> UserError:
        return UserError(f"invalid JSON: {msg}", path=path, line=at_line)

    try:
        if not more():
            return
        skip_ws()
        if array:
            pos += 1  # the '[' checked by the caller
            if not skip_ws():
                raise fail("unexpected end of file inside the top-level array", line)
            if buf[pos] == "]":
                pos += 1
                if skip_ws():
                    raise fail("extra data after the top-level array", line)
                return
        n = 0
        while True:
            if not array and not skip_ws():
                return
            while True:  # parse one value, reading more if it is cut by the buffer's end
                try:
                    value, end = decode(buf, pos)
                except RecursionError:
                    raise fail("nested too deeply", line) from None
                except json.JSONDecodeError as exc:
                    maybe_cut = exc.pos >= len(buf) - 16 or exc.msg.startswith("Unterminated string")
                    if maybe_cut and not eof and len(buf) - pos < MAX_RECORD_CHARS:
                        for _ in range(max(1, want // CHUNK)):
                            more()
                        want *= 2
                        continue
                    raise fail(exc.msg, line + buf.count("\n", pos, exc.pos)) from None
                if end >= len(buf) and not eof and more():
                    continue  # a bare number may go on in the next chunk
                break
            want = CHUNK
            n += 1
            yield RawRecord(value, file, line)
            line += buf.count("\n", pos, end)
            pos = end
            if not array:
                continue
            if not skip_ws():
                raise fail("unexpected end of file inside the top-level array (truncated?)", line)
            sep = buf[pos]
            pos += 1
            if sep == "]":
                if skip_ws():
                    raise fail("extra data after the top-level array", line)
                return
            if sep != ",":
                raise fail(f"expected ',' or ']' after element {n}, found {sep!r}", line)
            if not skip_ws():
                raise fail("unexpected end of file inside the top-level array (truncated?)", line)
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text: {exc.reason}", path=path, line=line) from None
    except _STREAM_ERRORS as exc:
        raise _stream_error(path, exc, line) from None


# -- columnar files ---------------------------------------------------------------------------------------

def _read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"not a readable parquet file: {exc}", path=path) from None
    file, row = str(path), 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for data in batch.to_pylist():
                row += 1
                yield RawRecord(data, file, row)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"corrupt parquet data after row {row}: {exc}", path=path) from None


def _read_arrow(path: Path) -> Iterator[RawRecord]:
    """An Arrow IPC file or stream (``datasets`` cache files are streams); memory-mapped, batch by batch."""
    import pyarrow as pa

    file, row = str(path), 0
    try:
        source = pa.memory_map(str(path), "r")
        try:
            reader = pa.ipc.open_file(source)
            batches: Any = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = pa.ipc.open_stream(source)
        for batch in batches:
            for data in batch.to_pylist():
                row += 1
                yield RawRecord(data, file, row)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"not a readable Arrow file: {exc}", path=path) from None


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

def _read_hub(name: str, split: str, data_files: str | Sequence[str] | None) -> Iterator[RawRecord]:
    """A hub dataset in streaming mode; provenance is ``name[split]`` and the 1-based row."""
    import datasets

    file = f"{name}[{split}]"
    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if data_files:
        kwargs["data_files"] = data_files
    row = 0
    try:
        ds = datasets.load_dataset(name, **kwargs)
        for data in ds:
            row += 1
            yield RawRecord(dict(data), file, row)
    except UserError:
        raise
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as exc:
        where = f" after row {row}" if row else ""
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read hub dataset{where}: {msg}", path=file) from None
