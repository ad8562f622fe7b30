"""The adapter contract and the registry that maps a source name to its adapter.

An adapter turns a stream of raw records (each with its file and line) into a stream of `Conversation`s
and `Rejected` records. Most adapters are record-by-record and only implement `convert_record`; those
that need context across records (OASST1 flat rows, the Rosetta Code folder layout) override `run`.
Options are a frozen dataclass per adapter, built by the one config builder (`crystalmix.core.config`) from
``key=value`` strings (`parse_options`) or a manifest mapping, which rejects unknown keys with the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from crystalmix.core.config import OptionText, build
from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, InvalidRecordError, RawRecord, Rejected, UnparsedRecord
from sft_builder.sources.common import FileLabels

if TYPE_CHECKING:
    from crystalmix.core.readers import FilePart

Output = Conversation | Rejected


@dataclass(frozen=True, slots=True)
class NoOptions:
    """For adapters that take no options."""


O = TypeVar("O")  # noqa: E741 - the options type


class DuplicateIdError(InvalidRecordError):
    """A record whose conversation id was already produced in this run: rejected as ``duplicate_id``."""

    def __init__(self, cid: str) -> None:
        super().__init__("duplicate_id", f"conversation id {cid!r} was already produced in this run")
        self.duplicate_of = cid


@dataclass
class AdapterStats:
    """Repairs an adapter made without dropping anything (e.g. merged same-role turns), for the report."""

    fixes: Counter[str] = field(default_factory=Counter)
    # Raw records pulled from the reader by `stream`, and candidate conversations the adapter weighed:
    # every candidate ends as exactly one kept conversation or one `Rejected`, so the report's
    # ``read`` (= candidates) always equals kept + rejected. For record-by-record adapters a candidate
    # is a record; OASST1 counts one per tree (``paths=best``) or per root-to-leaf path (``paths=all``).
    records: int = 0
    candidates: int = 0


class Adapter(Generic[O]):
    """Base class: subclasses set `name`, `forms`, `Options` and implement `convert_record` or `run`."""

    name: ClassVar[str]
    forms: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    splittable: ClassVar[bool] = True  # False: state across records (seen ids), one part per source

    def __init__(self, options: O, source: str | None = None) -> None:
        self.options = options
        self.source = source or self.name
        self.stats = AdapterStats()

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        """Turn one raw record into zero or more conversations; raise `InvalidRecordError` if it is bad."""
        raise NotImplementedError

    def read(self, inputs: Sequence[str] | str, *, split: str = "train",
             data_files: str | Sequence[str] | None = None) -> Iterator[RawRecord]:
        """Raw records of this adapter's inputs; adapters with their own layout (Rosetta folders) override."""
        from crystalmix.core.readers import iter_records  # lazy: readers imports this module

        return iter_records(inputs, split=split, data_files=data_files)

    def stream(self, inputs: Sequence[str] | str, *, split: str = "train",
               data_files: str | Sequence[str] | None = None) -> Iterator[Output]:
        """Read and convert in one go: `run(read(...))`, counting raw records in `stats.records`."""
        records = self.read(inputs, split=split, data_files=data_files)
        if type(self).run is Adapter.run:  # record by record: count in the same loop (one generator less)
            return self._run(records, count_records=True)
        return self.run(self._counted(records))

    def can_split(self, inputs: Sequence[str] = (), data_files: Sequence[str] = ()) -> bool:
        """Whether parts of `inputs` can be converted apart (`stream_part`) and give, one after another,
        what `stream` gives: the adapter converts record by record and keeps nothing across records."""
        return self.splittable and type(self).run is Adapter.run and type(self).read is Adapter.read

    def stream_part(self, parts: Sequence[FilePart], index: int) -> Iterator[Output]:
        """Convert part `index` of `parts` (`crystalmix.core.readers.plan_parts`) as `stream` would within
        the whole run: the files before it are given their short labels first, in reading order."""
        from crystalmix.core.readers import read_part

        labels = getattr(self, "labels", None)
        if isinstance(labels, FileLabels):
            for p in parts[:index]:
                if Path(p.path).stat().st_size:  # an empty file yields no record, so no label
                    labels(p.path)
        return self._run(read_part(parts[index]), count_records=True)

    def _counted(self, records: Iterable[RawRecord]) -> Iterator[RawRecord]:
        stats = self.stats
        order = _ReadOnce()
        for rec in records:
            stats.records += 1
            order.check(rec)
            yield rec

    def run(self, records: Iterable[RawRecord]) -> Iterator[Output]:
        """Stream conversations and rejects; every input record yields at least one output or a reject."""
        return self._run(records, count_records=False)

    def _run(self, records: Iterable[RawRecord], *, count_records: bool) -> Iterator[Output]:
        """`run` for record-by-record adapters; with `count_records`, also counts `stats.records`."""
        stats = self.stats
        convert = self.convert_record
        last_file, last_line, last_item, done = "", 0, 0, set()  # `_ReadOnce`, inlined: the hot loop
        for rec in records:
            if count_records:
                stats.records += 1
            file = rec.file
            if file is not last_file and file != last_file:
                if file in done:
                    raise _read_twice(file)
                done.add(last_file)
                last_file = file
            elif rec.line <= last_line and (rec.line < last_line or rec.item <= last_item):
                raise _read_twice(file)
            last_line, last_item = rec.line, rec.item
            if type(rec.data) is UnparsedRecord:
                stats.candidates += 1
                yield self.reject_unparsed(rec)
                continue
            try:
                convs = convert(rec)
                if type(convs) is tuple and len(convs) == 1:  # the common case, without the list copy
                    stats.candidates += 1
                    yield convs[0]
                    continue
                convs = list(convs)
            except InvalidRecordError as exc:
                stats.candidates += 1
                yield self.reject(rec, exc)
                continue
            if not convs:
                stats.candidates += 1
                yield Rejected(self.source, "adapter", "no_conversation", rec.file, rec.line, rec.data, item=rec.item)
            stats.candidates += len(convs)
            yield from convs

    def reject(self, rec: RawRecord, exc: InvalidRecordError) -> Rejected:
        return Rejected(self.source, "adapter", exc.reason, rec.file, rec.line, rec.data, exc.detail,
                        getattr(exc, "duplicate_of", None), rec.item)

    def reject_unparsed(self, rec: RawRecord) -> Rejected:
        """The reject for a line that could not be parsed (not JSON, not UTF-8, over the reader's size
        limit): the original text (its beginning, if too large) is kept as the record."""
        bad: UnparsedRecord = rec.data
        return Rejected(self.source, "adapter", bad.reason, rec.file, rec.line, bad.text, bad.error, item=rec.item)


class _ReadOnce:
    """Stops a run that reads one file twice (listed twice in the inputs, or matched by two of them).

    Ids are built from file and place (`RawRecord.ref`: line, and array position on a shared line), so a
    second pass would give every record an id already used. A reader yields a file's records in one go, in
    order, so a file is read again when it comes back after another one, or when its places go back.
    """

    __slots__ = ("done", "file", "item", "line")

    def __init__(self) -> None:
        self.file, self.line, self.item, self.done = "", 0, 0, set[str]()

    def check(self, rec: RawRecord) -> None:
        line, item = rec.line, rec.item
        if rec.file != self.file:
            if rec.file in self.done:
                raise _read_twice(rec.file)
            self.done.add(self.file)
            self.file = rec.file
        elif line <= self.line and (line < self.line or item <= self.item):
            raise _read_twice(rec.file)
        self.line, self.item = line, item


def _read_twice(file: str) -> UserError:
    return UserError("read twice in one run: the file is listed twice in the inputs, or matched by two of them",
                     path=file)


_REGISTRY: dict[str, type[Adapter[Any]]] = {}


def register(cls: type[Adapter[Any]]) -> type[Adapter[Any]]:
    """Class decorator: make an adapter available by its `name`."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"adapter {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def adapter_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_adapter_class(name: str) -> type[Adapter[Any]]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown adapter {name!r}; valid adapters: {', '.join(sorted(_REGISTRY))}") from None


def make_adapter(name: str, options: Any = None, source: str | None = None) -> Adapter[Any]:
    """An adapter by name; `options` is its options object, or a mapping (``key=value`` text is parsed)."""
    cls = get_adapter_class(name)
    if not isinstance(options, cls.Options):
        options = parse_options(cls.Options, options or {}, context=f"adapter {name!r}")
    return cls(options, source=source)


def _load_builtin() -> None:
    # Importing the package registers every built-in adapter (one module per adapter).
    import sft_builder.sources  # noqa: F401


def option_fields(options_cls: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(options_cls))


def parse_options(options_cls: type[O], raw: Mapping[str, Any], context: str = "options") -> O:
    """An adapter's options from a mapping of ``key=value`` text or values (the one config builder).

    Unknown keys and values that do not fit raise `UserError` naming the valid keys.
    """
    return build(options_cls, raw, OptionText(context), text=True)
