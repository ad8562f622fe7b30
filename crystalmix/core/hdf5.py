"""The HDF5 training-data format (Cerebras Model Zoo layout), shared by the SFT build and pretraining.

Each file holds one dataset ``data`` of shape ``(n, 3, L)``, int32, chunks ``(1, 3, L)``, gzip, with the
file attribute ``n_examples``. Row 0 is ``input_ids``, row 1 the loss mask (``input_mask``: 1 where the
label counts), row 2 ``labels`` (input shifted left by one). Optionally a 4th row (shape ``(n, 4, L)``),
the attention mask of current Cerebras Model Zoo SFT files: 1 on positions no token may attend to
(padding), 0 elsewhere. Optionally a ``segment_ids`` dataset ``(n, L)`` marks the packed document each
position belongs to (0 = padding), for trainers that block attention across packed samples (Cerebras'
readers ignore it). Files are named ``data-00000.h5`` ... and written atomically; bytes
are reproducible (no timestamps, fixed creation order, fixed write batches).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from crystalmix.core.atomic import atomic_path, write_json
from crystalmix.core.errors import DiskFullError, UserError, is_disk_full

DATASET = "data"
SEGMENTS = "segment_ids"
ROW_INPUT, ROW_MASK, ROW_LABELS, ROW_ATTENTION = 0, 1, 2, 3
ROW_COUNTS = (3, 4)  # input, loss mask, labels; plus the attention mask when asked for
WRITE_BATCH = 256  # fixed, so the on-disk layout never depends on how rows arrive
METADATA_NAME = "metadata.json"


def file_name(index: int) -> str:
    return f"data-{index:05d}.h5"


def write_file(path: str | Path, rows: np.ndarray, segment_ids: np.ndarray | None = None,
               attrs: dict[str, Any] | None = None) -> None:
    """Atomically write one complete HDF5 file from an in-memory block of rows ``(n, 3, L)`` or ``(n, 4, L)``."""
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    if rows.ndim != 3 or rows.shape[1] not in ROW_COUNTS:
        raise ValueError(f"rows must have shape (n, 3, L) or (n, 4, L), got {rows.shape}")
    with _open_new(path, rows.shape[2], segment_ids is not None, attrs, rows.shape[1]) as w:
        w.append(rows, segment_ids)


def attention_row(padding: np.ndarray) -> np.ndarray:
    """The 4th row from a boolean "is padding" array: 1 where no token may attend, as Cerebras writes it.

    Cerebras' finetuning generator stores ``attention_mask == 0``: 1 on padding, 0 on real tokens. It is a
    per-position key mask, so it hides padding only; it cannot keep packed samples from attending to
    each other (that needs `segment_ids` or variable-sequence-length features).
    """
    return np.asarray(padding, dtype=bool).astype(np.int32)


class _FileWriter:
    """Appends rows to a resizable ``data`` dataset in fixed-size batches."""

    def __init__(self, fh: h5py.File, seq_len: int, with_segments: bool, n_rows: int = 3) -> None:
        self.fh = fh
        self.seq_len = seq_len
        self.n = 0
        kw: dict[str, Any] = {"compression": "gzip", "track_times": False}
        self.data = fh.create_dataset(DATASET, shape=(0, n_rows, seq_len), maxshape=(None, n_rows, seq_len),
                                      dtype=np.int32, chunks=(1, n_rows, seq_len), **kw)
        self.segments = None
        if with_segments:
            self.segments = fh.create_dataset(SEGMENTS, shape=(0, seq_len), maxshape=(None, seq_len),
                                              dtype=np.int32, chunks=(1, seq_len), **kw)

    def append(self, rows: np.ndarray, segment_ids: np.ndarray | None = None) -> None:
        for start in range(0, len(rows), WRITE_BATCH):
            block = rows[start:start + WRITE_BATCH]
            end = self.n + len(block)
            self.data.resize(end, axis=0)
            self.data[self.n:end] = block
            if self.segments is not None:
                if segment_ids is None:
                    raise ValueError("this file stores segment_ids; pass them with every block")
                self.segments.resize(end, axis=0)
                self.segments[self.n:end] = segment_ids[start:start + WRITE_BATCH]
            self.n = end


class _open_new:
    """Context manager: a new HDF5 file at a temp path, renamed into place on success.

    Everything HDF5 still holds in memory is flushed before the close, so a full disk fails a flush (the
    file stays consistent) rather than the close. A file that fails, or is abandoned, is closed by
    `_discard` without touching its disk, and its temporary removed; a full disk is a `DiskFullError`.
    """

    def __init__(self, path: str | Path, seq_len: int, with_segments: bool,
                 attrs: dict[str, Any] | None, n_rows: int = 3) -> None:
        self.path, self.seq_len, self.n_rows = Path(path), seq_len, n_rows
        self.with_segments, self.attrs = with_segments, attrs or {}
        self._fh: h5py.File | None = None

    def __enter__(self) -> _FileWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            # track_order off and libver fixed: the file's bytes depend only on what is written.
            self._fh = h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False)
            self._w = _FileWriter(self._fh, self.seq_len, self.with_segments, self.n_rows)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        _OPEN.add(self)
        return self._w

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Finish the file (no exception) or throw it away; idempotent, so an abort after a failure is safe."""
        fh, self._fh = self._fh, None
        _OPEN.discard(self)
        failure: BaseException | None = exc
        if fh is not None and failure is None:
            try:
                fh.attrs["n_examples"] = np.int64(self._w.n)
                for k in sorted(self.attrs):
                    fh.attrs[k] = self.attrs[k]
                fh.flush()
            except BaseException as err:  # noqa: BLE001 - handed on below, after the file is discarded
                failure = err
            else:
                fh.close()
        if fh is not None and failure is not None:
            _discard(fh)
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is None:
            return False
        if failure is None:
            ctx.__exit__(None, None, None)  # fsync and rename; a full disk raises DiskFullError
            return False
        full = _disk_full(failure, self.path)
        if full is not None:
            full.__cause__, failure = failure, full
        ctx.__exit__(type(failure), failure, failure.__traceback__)  # removes the temp
        if failure is not exc:
            raise failure
        return False


def _disk_full(exc: BaseException, path: Path) -> DiskFullError | None:
    """HDF5's write errors on a full disk: an OSError with the errno, or a RuntimeError ("Unable to flush
    raw data") whose message alone carries it."""
    if isinstance(exc, DiskFullError) or not isinstance(exc, (OSError, RuntimeError)):
        return None
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.EDQUOT) or f"errno = {errno.EDQUOT}," in text:
        return DiskFullError(path, "Disk quota exceeded")
    if is_disk_full(exc) or f"errno = {errno.ENOSPC}," in text or "No space left on device" in text:
        return DiskFullError(path, "No space left on device")
    return None


_OPEN: weakref.WeakSet[_open_new] = weakref.WeakSet()


def _discard(fh: h5py.File) -> None:
    """Close a file whose content is thrown away, without writing to its disk.

    HDF5 flushes what it holds when a file is closed. On a full disk that flush fails, and HDF5 then
    crashes the process when it closes the file again at exit (SIGSEGV, seen with h5py 3.16 / HDF5 2.0).
    Pointing the file's descriptor at an anonymous in-memory file first lets the close succeed; the
    temporary on disk is removed by `atomic_path`.
    """
    with contextlib.suppress(Exception):
        fd = fh.id.get_vfd_handle()
        if isinstance(fd, int):
            if hasattr(os, "memfd_create"):
                void = os.memfd_create("crystalmix-discarded")
                os.dup2(void, fd)
                os.close(void)
            else:  # pragma: no cover - not Linux
                with tempfile.TemporaryFile() as spare:
                    os.dup2(spare.fileno(), fd)
    with contextlib.suppress(Exception):
        fh.flush()  # may report the earlier failure once more; the close below still succeeds
    with contextlib.suppress(Exception):
        fh.close()


@atexit.register
def _discard_abandoned() -> None:
    """Files still open at exit belong to a run that stopped: discard them before HDF5 shuts down."""
    for w in list(_OPEN):
        with contextlib.suppress(Exception):
            w.__exit__(RuntimeError, RuntimeError("abandoned at exit"), None)


@dataclass
class ShardedWriter:
    """Streams rows into ``data-00000.h5``, ``data-00001.h5``, ... of `samples_per_file` rows each.

    Memory is bounded by `WRITE_BATCH` rows; each file appears under its final name only when complete.
    With `attention_mask`, every row is ``(4, L)``: the 4th is the attention mask (see `attention_row`).
    """

    out_dir: Path
    seq_len: int
    samples_per_file: int = 50_000
    with_segments: bool = False
    first_index: int = 0
    attention_mask: bool = False
    files: list[Path] = field(default_factory=list)
    n_rows: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._buf: list[np.ndarray] = []
        self._seg: list[np.ndarray] = []
        self._cur: _open_new | None = None
        self._w: _FileWriter | None = None

    def write(self, row: np.ndarray, segment_ids: np.ndarray | None = None) -> None:
        """Add one row ``(3, L)`` or ``(4, L)`` (and its segment ids ``(L,)`` when the writer stores them)."""
        if len(row) != self.width:
            raise ValueError(f"this writer stores rows of {self.width} x L, got {len(row)} x L")
        self._buf.append(row)
        if self.with_segments:
            if segment_ids is None:
                raise ValueError("segment_ids required")
            self._seg.append(segment_ids)
        if len(self._buf) >= WRITE_BATCH:
            self._flush()

    @property
    def width(self) -> int:
        return 4 if self.attention_mask else 3

    def write_many(self, rows: Iterable[np.ndarray]) -> None:
        for r in rows:
            self.write(r)

    def _flush(self) -> None:
        try:
            self._fill()
        except BaseException as exc:
            self._abort(exc)  # the failing file is discarded here, whether or not the caller aborts
            raise

    def _fill(self) -> None:
        while self._buf:
            if self._w is None:
                path = self.out_dir / file_name(self.first_index + len(self.files))
                self._cur = _open_new(path, self.seq_len, self.with_segments, None, self.width)
                self._w = self._cur.__enter__()
                self.files.append(path)
            room = self.samples_per_file - self._w.n
            take, self._buf = self._buf[:room], self._buf[room:]
            seg = None
            if self.with_segments:
                seg_take, self._seg = self._seg[:room], self._seg[room:]
                seg = np.stack(seg_take).astype(np.int32)
            self._w.append(np.stack(take).astype(np.int32), seg)
            self.n_rows += len(take)
            if self._w.n >= self.samples_per_file:
                self._close_file()

    def _close_file(self) -> None:
        assert self._cur is not None
        cur, self._cur, self._w = self._cur, None, None
        cur.__exit__(None, None, None)

    def close(self) -> list[Path]:
        """Flush and finish the last file; returns the paths written."""
        self._flush()
        if self._w is not None:
            self._close_file()
        return self.files

    def abort(self) -> None:
        """Discard the file being written (the finished ones stay); safe to call more than once."""
        self._abort(RuntimeError("aborted"))

    def _abort(self, exc: BaseException) -> None:
        cur, self._cur, self._w = self._cur, None, None
        if cur is not None:
            cur.__exit__(type(exc), exc, exc.__traceback__)  # raises DiskFullError when the disk is full


def read_rows(path: str | Path) -> np.ndarray:
    """All rows of one file as ``(n, 3, L)`` (or ``(n, 4, L)``) int32, for tests, inspect and small files."""
    with h5py.File(path, "r") as fh:
        return np.asarray(fh[DATASET][...])


def iter_rows(path: str | Path, batch: int = WRITE_BATCH) -> Iterator[np.ndarray]:
    """Stream rows of one file without loading it whole."""
    with h5py.File(path, "r") as fh:
        ds = fh[DATASET]
        for start in range(0, ds.shape[0], batch):
            yield from np.asarray(ds[start:start + batch])


def row_stats(rows: np.ndarray, pad_id: int) -> dict[str, int]:
    """Token statistics of a block of rows, as stored in metadata.json.

    ``non_pad_tokens`` counts input positions whose id is not `pad_id` (so pick a pad id that real text
    never produces as an input, e.g. ``<|fim_pad|>``).
    """
    inputs, mask = rows[:, ROW_INPUT, :], rows[:, ROW_MASK, :]
    return {
        "num_sequences": int(rows.shape[0]),
        "num_tokens": int(inputs.size),
        "non_pad_tokens": int((inputs != pad_id).sum()),
        "loss_valid_tokens": int(mask.sum()),
    }


def write_metadata(out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Atomically write ``metadata.json`` beside the data files."""
    path = Path(out_dir) / METADATA_NAME
    write_json(path, metadata)
    return path


def read_metadata(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / METADATA_NAME).read_text(encoding="utf-8"))


def load_metadata(out_dir: str | Path) -> dict[str, Any]:
    """``metadata.json`` of a folder someone hands us: a `UserError` naming what is wrong with it."""
    path = Path(out_dir) / METADATA_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {METADATA_NAME}", path=Path(out_dir)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", path=path) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path=path) from None
    if not isinstance(meta, dict):
        raise UserError(f"not a JSON object (a {type(meta).__name__})", path=path)
    return meta


def _why(exc: BaseException) -> str:
    """An exception as one line (HDF5's messages span several)."""
    return " ".join(str(exc).split())


def _int(value: Any) -> int | None:
    """An integer from JSON or an HDF5 attribute (not a bool, a float or text); None otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def data_layout(fh: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset | None]:
    """The ``data`` dataset (and ``segment_ids``) of an open file, checked for a layout we can read.

    Raises ValueError with the reason: ``data`` missing or a group, not ``(n, 3 or 4, L)``, not integers,
    or ``segment_ids`` not a ``(n, L)`` integer dataset. Values (ids, masks) are for `validate_file`.
    """
    node = fh.get(DATASET)
    if node is None:
        raise ValueError(f"no '{DATASET}' dataset")
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"'{DATASET}' is a {'group' if isinstance(node, h5py.Group) else 'link'}, not a dataset")
    if node.ndim != 3 or node.shape[1] not in ROW_COUNTS:
        raise ValueError(f"'{DATASET}' has shape {node.shape}, expected (n, 3, L) or (n, 4, L)")
    if node.dtype.kind not in "iu":
        raise ValueError(f"'{DATASET}' has dtype {node.dtype}, expected int32")
    segs = fh.get(SEGMENTS)
    if segs is not None:
        want = (node.shape[0], node.shape[2])
        if not isinstance(segs, h5py.Dataset):
            raise ValueError(f"'{SEGMENTS}' is a group, not a dataset")
        if segs.shape != want or segs.dtype.kind not in "iu":
            raise ValueError(f"'{SEGMENTS}' has shape {segs.shape} and dtype {segs.dtype}, expected {want} integers")
    return node, segs


def read_row(path: str | Path, row: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One row ``(3 or 4, L)`` (and its segment ids) of a training file, as int64; `UserError` saying why not."""
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"cannot be read as HDF5 ({_why(exc)})", path=path) from None
    with fh:
        try:
            ds, segs = data_layout(fh)
        except ValueError as exc:
            raise UserError(str(exc), path=path) from None
        if ds.dtype != np.int32:
            raise UserError(f"'{DATASET}' has dtype {ds.dtype}, expected int32", path=path)
        n = ds.shape[0]
        if not 0 <= row < n:
            raise UserError(f"row {row} out of range; the file has {n} rows", path=path)
        try:
            data = np.asarray(ds[row], dtype=np.int64)
            seg = None if segs is None else np.asarray(segs[row], dtype=np.int64)
        except (OSError, RuntimeError, ValueError) as exc:
            raise UserError(f"row {row} cannot be read ({_why(exc)}); truncated or corrupt?", path=path) from None
    return data, seg


def validate_file(path: str | Path, *, vocab_size: int | None = None, pad_id: int | None = None,
                  check_shift: bool = True) -> tuple[int, list[str]]:
    """Check one file; returns (rows, problems). Problems are one-line strings naming the file.

    Checks: opens as HDF5, ``data`` exists with shape (n, 3, L) or (n, 4, L), int32, chunks (1, rows, L), the
    ``n_examples`` attribute matches, ids lie in ``[0, vocab_size)``, the masks are 0/1, the loss mask 0 on
    padding,
    and labels equal the input shifted by one inside each packed document (when segment ids are stored,
    across segment boundaries only within one segment; otherwise wherever the next input is not padding).
    """
    n, problems, _ = _validate(path, vocab_size=vocab_size, pad_id=pad_id, check_shift=check_shift)
    return n, problems


def _validate(path: str | Path, *, vocab_size: int | None, pad_id: int | None, check_shift: bool,
              eos_id: int | None = None) -> tuple[int, list[str], dict[str, int]]:
    stats: dict[str, int] = {}
    problems: list[str] = []
    name = str(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        return 0, [f"{name}: cannot be read as HDF5 ({exc.__class__.__name__}: {_why(exc)})"], stats
    with fh:
        try:
            ds, segs = data_layout(fh)
        except ValueError as exc:
            return 0, [f"{name}: {exc}"], stats
        except (OSError, RuntimeError) as exc:
            return 0, [f"{name}: cannot be read ({exc.__class__.__name__}: {_why(exc)}); truncated or corrupt?"], stats
        n, width, seq_len = ds.shape
        if ds.dtype != np.int32:
            problems.append(f"{name}: dtype {ds.dtype}, expected int32")
        if ds.chunks != (1, width, seq_len):
            problems.append(f"{name}: chunks {ds.chunks}, expected (1, {width}, {seq_len})")
        n_attr = fh.attrs.get("n_examples")
        if _int(n_attr) != n:
            problems.append(f"{name}: attribute n_examples={n_attr!r}, but the file holds {n} rows")
        try:
            for start in range(0, n, WRITE_BATCH):
                block = np.asarray(ds[start:start + WRITE_BATCH], dtype=np.int64)
                seg = None if segs is None else np.asarray(segs[start:start + WRITE_BATCH])
                problems.extend(_check_block(name, start, block, seg, vocab_size, pad_id, check_shift,
                                             eos_id))
                if pad_id is not None:
                    stats = add_stats(stats, row_stats(block, pad_id))
                if len(problems) > 20:
                    problems.append(f"{name}: too many problems, stopped checking")
                    break
        except (OSError, RuntimeError, ValueError) as exc:
            problems.append(f"{name}: data cannot be read ({exc.__class__.__name__}: {_why(exc)}); "
                            "truncated or corrupt?")
    return n, problems, stats


def _check_block(name: str, start: int, block: np.ndarray, seg: np.ndarray | None, vocab_size: int | None,
                 pad_id: int | None, check_shift: bool, eos_id: int | None = None) -> list[str]:
    out: list[str] = []
    inputs, mask, labels = block[:, 0, :], block[:, 1, :], block[:, 2, :]
    if vocab_size is not None:
        for label, arr in (("input_ids", inputs), ("labels", labels)):
            bad = np.argwhere((arr < 0) | (arr >= vocab_size))
            if len(bad):
                r, c = bad[0]
                out.append(f"{name}: row {start + r} {label}[{c}]={arr[r, c]} "
                           f"outside vocabulary 0..{vocab_size - 1}")
    if not np.isin(mask, (0, 1)).all():
        out.append(f"{name}: loss mask has values other than 0 and 1")
    if block.shape[1] > ROW_ATTENTION and not np.isin(block[:, ROW_ATTENTION, :], (0, 1)).all():
        out.append(f"{name}: attention mask (row 3) has values other than 0 and 1")
    if pad_id is not None and (seg is not None or (eos_id is not None and pad_id != eos_id)):
        # Without segment ids, padding is recognisable only when the pad id differs from EOS.
        padded = seg == 0 if seg is not None else inputs == pad_id
        bad = np.argwhere(padded & (mask != 0))
        if len(bad):
            r, c = bad[0]
            out.append(f"{name}: row {start + r} loss mask is 1 on padding at position {c}")
    if check_shift:
        same = labels[:, :-1] == inputs[:, 1:]
        if seg is not None:
            inside = (seg[:, :-1] == seg[:, 1:]) & (seg[:, :-1] != 0)
        elif pad_id is not None:
            inside = inputs[:, 1:] != pad_id
        else:
            inside = np.ones_like(same)
        bad = np.argwhere(inside & ~same)
        if len(bad):
            r, c = bad[0]
            out.append(f"{name}: row {start + r} labels[{c}] != input_ids[{c + 1}] inside a packed document")
    return out


# -- metadata.json: one schema for SFT and pretraining --------------------------------------------------
METADATA_FORMAT = "crystalmix-hdf5/1"
STAT_KEYS = ("num_sequences", "num_tokens", "non_pad_tokens", "loss_valid_tokens")


def build_metadata(*, seq_len: int, vocab_size: int, special_tokens: dict[str, int],
                   files: Iterable[tuple[str | Path, int]], stats: dict[str, int], fingerprint: str,
                   tokenizer: str, **extra: Any) -> dict[str, Any]:
    """The ``metadata.json`` every folder of ``data-*.h5`` files carries (SFT and pretraining alike).

    Args:
        seq_len: L, the row length.
        vocab_size: number of ids the tokenizer can produce (``len(tokenizer)``); ids must lie below it.
        special_tokens: at least ``eos`` and ``pad`` (e.g. from `crystalmix.core.tokenizer.special_token_ids`).
        files: ``(path or name, n_examples)`` per data file, in order; only the file name is stored.
        stats: the totals of `row_stats` over all rows (``num_sequences``, ``num_tokens``,
            ``non_pad_tokens``, ``loss_valid_tokens``).
        fingerprint: the config fingerprint that produced the folder (stale outputs are detected by it).
        tokenizer: the tokenizer spec as the user gave it (folder, hub id or ``demo``).
        extra: anything else worth recording (template, packing, per-source stats, stage, epoch, ...).

    `validate_folder` checks a folder against exactly these keys. ``eos_id``/``pad_id`` are repeated at
    the top level because Cerebras' own metadata names them so.
    """
    missing = [k for k in ("eos", "pad") if k not in special_tokens]
    if missing:
        raise ValueError(f"special_tokens needs {missing}")
    meta: dict[str, Any] = dict(extra)
    meta.update({
        "format": METADATA_FORMAT,
        "seq_len": int(seq_len),
        "vocab_size": int(vocab_size),
        "special_tokens": {k: int(v) for k, v in special_tokens.items()},
        "eos_id": int(special_tokens["eos"]),
        "pad_id": int(special_tokens["pad"]),
        "files": [{"name": Path(p).name, "n_examples": int(n)} for p, n in files],
        "fingerprint": fingerprint,
        "tokenizer": str(tokenizer),
    })
    for k in STAT_KEYS:
        meta[k] = int(stats.get(k, 0))
    return meta


def add_stats(total: dict[str, int], part: dict[str, int]) -> dict[str, int]:
    """Sum two `row_stats` dicts (returns a new dict)."""
    return {k: int(total.get(k, 0)) + int(part.get(k, 0)) for k in STAT_KEYS}


def data_folders(root: str | Path) -> list[Path]:
    """Every folder under `root` (itself included) holding ``data-*.h5`` files, sorted."""
    root = Path(root)
    found = {p.parent for p in root.rglob("data-*.h5")}
    if any(root.glob("data-*.h5")):
        found.add(root)
    return sorted(found)


def current_vocab_size(spec: Any) -> int | None:
    """The size of the tokenizer a metadata file names, as it is now: for ``demo`` and local paths only (a hub
    id would need the network); None when it cannot be loaded."""
    from crystalmix.core.tokenizer import DEMO, load_tokenizer

    if not isinstance(spec, str) or (spec != DEMO and not Path(spec).exists()):
        return None
    try:
        return len(load_tokenizer(spec))
    except (UserError, OSError, ValueError):
        return None


def validate_folder(folder: str | Path, *, check_shift: bool = True,
                    check_tokenizer: bool = False) -> tuple[int, list[str]]:
    """Validate every ``data-*.h5`` of one folder against its ``metadata.json``; returns (rows, problems).

    Beyond `validate_file` per file (vocabulary from ``vocab_size``, padding from ``pad_id``), checks that
    the files listed in the metadata are exactly those present with the listed ``n_examples``, and that the
    recomputed token statistics equal the recorded ones. With `check_tokenizer`, the tokenizer the metadata
    names (when local) must still have ``vocab_size`` ids, and ids are checked against it as it is now: a
    tokenizer rebuilt in place since the build is found, with the ids it no longer holds.
    """
    folder = Path(folder)
    problems: list[str] = []
    meta_path = folder / METADATA_NAME
    try:
        meta = load_metadata(folder)
    except UserError as exc:
        return 0, [str(exc)]
    vocab, pad_id, eos_id = _int(meta.get("vocab_size")), None, None
    if "vocab_size" in meta and (vocab is None or vocab <= 0):
        problems.append(f"{meta_path}: vocab_size must be a positive integer, got {meta['vocab_size']!r}")
        vocab = None
    specials = meta.get("special_tokens")
    specials = specials if isinstance(specials, dict) else {}
    for key, short in (("pad_id", "pad"), ("eos_id", "eos")):
        value = meta.get(key, specials.get(short))
        if value is not None and _int(value) is None:
            problems.append(f"{meta_path}: {key} must be an integer, got {value!r}")
        if key == "pad_id":
            pad_id = _int(value)
        else:
            eos_id = _int(value)
    if "vocab_size" not in meta or pad_id is None:
        problems.append(f"{meta_path}: missing vocab_size or pad id")
    now = current_vocab_size(meta.get("tokenizer")) if check_tokenizer and vocab is not None else None
    if now is not None and vocab is not None and now != vocab:
        problems.append(f"{meta_path}: vocab_size={vocab}, but tokenizer {meta['tokenizer']} now has "
                        f"{now} ids (changed since this folder was built?)")
        vocab = min(vocab, now)
    files = meta.get("files", [])
    entries = files if isinstance(files, list) else []
    listed = {f["name"]: _int(f.get("n_examples")) for f in entries
              if isinstance(f, dict) and isinstance(f.get("name"), str)}
    if not isinstance(files, list):
        problems.append(f"{meta_path}: 'files' must be a list, got {type(files).__name__}")
    elif len(listed) != len(files) or None in listed.values():
        problems.append(f"{meta_path}: 'files' must be a list of {{name, n_examples}} (one per data file)")
    present = sorted(p.name for p in folder.glob("data-*.h5"))
    for name in sorted(set(listed) - set(present)):
        problems.append(f"{folder / name}: listed in {METADATA_NAME} but missing")
    for name in sorted(set(present) - set(listed)):
        problems.append(f"{folder / name}: present but not listed in {METADATA_NAME}")
    total_rows, totals = 0, dict.fromkeys(STAT_KEYS, 0)
    for name in present:
        n, file_problems, stats = _validate(folder / name, vocab_size=vocab, pad_id=pad_id, eos_id=eos_id,
                                            check_shift=check_shift)
        problems.extend(file_problems)
        total_rows += n
        totals = add_stats(totals, stats)
        if name in listed and listed[name] is not None and listed[name] != n and not file_problems:
            problems.append(f"{folder / name}: holds {n} rows, {METADATA_NAME} says {listed[name]}")
    if not problems:
        for k in STAT_KEYS:
            if k in meta and _int(meta[k]) != totals[k]:
                problems.append(f"{meta_path}: {k}={meta[k]!r} but the files give {totals[k]}")
    return total_rows, problems
