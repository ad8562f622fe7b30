"""Plain documents, trained on every token (CrystalChat's General Textbooks and Programming Books subsets).

Two forms: a text column of records (JSON/JSONL/parquet files, hub datasets such as open-phi/textbooks,
whose text is in ``markdown``: ``column: markdown``), and whole text files (``.md``, ``.txt`` ... given
one by one, by glob, or as a folder walked in sorted order; hidden files and folders are left out). A whole
file is one document, named by its path inside the folder it was found in; other files of a folder are
read as data files when the readers know them, else left out. With ``lines: true`` a ``.txt`` file holds
one document per non-blank line (LLaMA-Factory's ``wiki_demo.txt``).

The text is kept verbatim (the build's ``clean`` step normalises it, if enabled); a blank one is rejected as
``empty_content``, a file that is not UTF-8 as ``not_utf8``, one that cannot be read as ``unreadable_file``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from glob import glob, has_magic
from pathlib import Path
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, InvalidRecordError, is_blank, make_document
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import FileLabels, as_mapping, record_id, text_field, unique_id

TEXT_FILE_EXTS = (".md", ".markdown", ".txt", ".rst")


@dataclass(frozen=True, slots=True)
class TextOptions:
    column: str = "text"  # the field holding the text, in records (``markdown`` for open-phi's books)
    id_column: str = "id"  # the record's own id, kept as meta.orig_id when present
    meta_columns: tuple[str, ...] = ()  # other fields kept in meta (e.g. topic, field)
    extensions: tuple[str, ...] = TEXT_FILE_EXTS  # files read whole, as one document each
    lines: bool = False  # a .txt file holds one document per non-blank line


class TextFile(dict):  # type: ignore[type-arg]
    """The raw record of one whole text file (``name``: its path inside the folder, ``text``, or ``reason``
    and ``error`` when it could not be read). Its own type, so no JSON record is taken for one."""


@register
class TextAdapter(Adapter[TextOptions]):
    name = "text"
    forms = ("records with a text column (column=text|markdown|...), or whole .md/.txt/.rst files (a file, a "
             "folder, a glob): plain documents, every token trained")
    Options = TextOptions

    def __init__(self, options: TextOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        if not options.column:
            raise UserError("adapter 'text': column must name the field that holds the text")
        self.labels = FileLabels()
        self.exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in options.extensions)
        self._file_ids: set[str] = set()

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, inputs: Sequence[str] | str, *, split: str = "train",
             data_files: str | Sequence[str] | None = None) -> Iterator[RawRecord]:
        """Whole text files are read here; data files and hub ids go to the readers. Everything is resolved
        before the first record, so a bad path fails before any output."""
        from crystalmix.core.readers import plan_inputs
        from crystalmix.core.remote import is_url

        specs = [inputs] if isinstance(inputs, str) else list(inputs)
        if not specs:
            raise UserError("no input given")
        parts: list[Callable[[], Iterator[RawRecord]]] = []
        for spec in specs:
            if is_url(spec):  # data files at a URL (whole text files are read from local folders)
                parts += plan_inputs([spec], split=split, data_files=data_files, text_files=self.options.lines)
                continue
            path = Path(spec).expanduser()
            if path.is_dir() and not _saved_dataset(path):
                parts += self._plan_folder(path, split)
            elif path.is_file():
                parts += self._plan_file(path, path.name, split)
            elif has_magic(spec):
                matches = sorted(Path(m) for m in glob(str(path), recursive=True))
                if not matches:
                    raise UserError("no files match this pattern", path=spec)
                for m in matches:
                    parts += self._plan_folder(m, split) if m.is_dir() else self._plan_file(m, m.name, split)
            else:
                parts += plan_inputs([spec], split=split, data_files=data_files)
        return _chain(parts)

    def _plan_file(self, path: Path, name: str, split: str) -> list[Callable[[], Iterator[RawRecord]]]:
        from crystalmix.core.readers import plan_inputs

        low = path.name.lower()
        if low.endswith(self.exts) and not (self.options.lines and low.endswith(".txt")):
            return [lambda: _read_whole(path, name)]
        return plan_inputs([str(path)], split=split, text_files=self.options.lines)

    def _plan_folder(self, folder: Path, split: str) -> list[Callable[[], Iterator[RawRecord]]]:
        from crystalmix.core.readers import KNOWN, KNOWN_TEXT

        known = KNOWN + (KNOWN_TEXT if self.options.lines else ())
        parts: list[Callable[[], Iterator[RawRecord]]] = []
        try:
            files = sorted(p for p in folder.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        except OSError as exc:
            raise UserError(f"cannot list the folder: {exc.strerror or exc}", path=folder) from None
        for f in files:
            low = f.name.lower()
            if low.endswith(self.exts) or low.endswith(known):
                parts += self._plan_file(f, f.relative_to(folder).as_posix(), split)
        if not parts:
            raise UserError(f"no text files ({', '.join(self.exts)}) or data files in the folder", path=folder)
        return parts

    def can_split(self, inputs: Sequence[str] = (), data_files: Sequence[str] = ()) -> bool:
        """Data files (records with a text column: open-phi's parquet books) are cut into parts as the
        readers cut them; a source with whole text files, ``lines`` or `data_files` is read as one."""
        if self.options.lines or data_files or not inputs:
            return False
        for spec in inputs:
            if "://" in spec:
                return False  # a URL: read whole, as the readers read URL files
            path = Path(spec).expanduser()
            found = [path] if path.exists() else [Path(m) for m in glob(str(path), recursive=True)]
            for f in found:
                if f.is_dir() and not _saved_dataset(f):
                    if any(p.name.lower().endswith(self.exts) for p in f.rglob("*") if p.is_file()):
                        return False
                elif f.name.lower().endswith(self.exts):
                    return False
        return True

    # -- converting ------------------------------------------------------------------------------------
    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = record.data
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if record.item:  # one of several records starting on this line (a one-line JSON array)
            meta["item"] = record.item
        if type(data) is TextFile:
            if "reason" in data:
                raise InvalidRecordError(data["reason"], data["error"])
            text = data["text"]
            cid = unique_id(f"{self.source}/{data['name']}", self._file_ids)
        elif type(data) is str:  # a line of a .txt file read with `lines`
            text = data
            cid = record_id(self.source, self.labels(record.file), record.ref)
        else:
            data = as_mapping(data)
            opts = self.options
            text = text_field(data, opts.column)
            orig = data.get(opts.id_column) if opts.id_column else None
            if orig is not None and not isinstance(orig, (dict, list)):
                meta["orig_id"] = str(orig)
            for key in opts.meta_columns:
                if key in data and key not in meta:
                    meta[key] = data[key]
            cid = record_id(self.source, self.labels(record.file), record.ref)
        if is_blank(text):
            raise InvalidRecordError("empty_content", "empty text")
        doc = make_document(cid, self.source, text, meta)
        if type(data) is TextFile:
            self._file_ids.add(cid)
        return (doc,)



def _saved_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _chain(parts: list[Callable[[], Iterator[RawRecord]]]) -> Iterator[RawRecord]:
    for part in parts:
        yield from part()


def _read_whole(path: Path, name: str) -> Iterator[RawRecord]:
    from crystalmix.core.readers import MAX_RECORD

    data = TextFile(name=name)
    try:
        size = path.stat().st_size
        if size > MAX_RECORD:
            data.update(reason="too_large", error=f"{size} bytes, over the {MAX_RECORD}-byte limit of one record")
        else:
            raw = path.read_bytes()
            try:
                data["text"] = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                data.update(reason="not_utf8", error=f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        data.update(reason="unreadable_file", error=f"{path}: {exc.strerror or exc}")
    yield RawRecord(data, str(path), 1)
