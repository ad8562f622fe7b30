"""The one step interface of the SFT build: an iterator of conversations in, conversations and rejects out.

A filter only decides; `FilterStep.run` turns each decision into either the (possibly rewritten)
conversation or a `Rejected` that carries the step name, a reason, the record's provenance and, for
duplicates, the id it duplicates. Rejects coming from earlier steps pass through untouched, so a chain
of steps is just nested generators and every record stays accounted for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from typing import Any, ClassVar, Protocol, TypeVar, Union

from crystalmix.core.records import Conversation, InvalidRecordError, Rejected

Item = Union[Conversation, Rejected]  # noqa: UP007 - a runtime alias, kept valid on Python 3.10
T = TypeVar("T")
R = TypeVar("R")


class OrderedMap(Protocol):
    """``imap(fn, items)``: `fn` applied to each item, results in the order of `items` (builtin `map` is one).

    Steps with heavy pure work per batch (signatures, benchmark matching) hand it to one, so an executor can
    run the batches in other processes while every decision stays in the caller, in stream order: the
    output does not depend on which map ran them. `fn` is a module-level function (picklable) and reads
    only its argument, so the map may run it anywhere; it pulls `items` lazily, a bounded window ahead.
    """

    def __call__(self, fn: Callable[[T], R], items: Iterable[T], /) -> Iterator[R]: ...


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class Drop:
    """A filter's verdict to remove a conversation: a stable snake_case reason, detail for humans.

    Only a return value of `FilterStep.apply` (the step's light "no, because"); `FilterStep.run` turns it
    into the one reject type, `Rejected`, which is what reaches the rejects files and the report.
    """

    reason: str
    detail: str = ""
    duplicate_of: str | None = None


class Step(Protocol):
    """Anything with a name and `run(items) -> items` is a build step."""

    name: str

    def run(self, items: Iterable[Item]) -> Iterator[Item]: ...


def reject(conv: Conversation, step: str, drop: Drop) -> Rejected:
    """The quarantine record for a conversation dropped by `step`."""
    return Rejected.of(conv, step, drop.reason, drop.detail, drop.duplicate_of)


class FilterStep:
    """Base class for record-by-record steps: subclasses implement `apply` and set `name`.

    `apply` returns the conversation to keep (maybe rewritten) or a `Drop`. An `InvalidRecordError` raised
    while rebuilding a conversation (e.g. cleaning left a turn empty) becomes a drop with its reason.
    `changes` counts rewrites that kept the record, for the report.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.changes: Counter[str] = Counter()

    def apply(self, conv: Conversation) -> Conversation | Drop:
        raise NotImplementedError

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        for item in items:
            if isinstance(item, Rejected):
                yield item
                continue
            try:
                out = self.apply(item)
            except InvalidRecordError as exc:
                out = Drop(exc.reason, exc.detail)
            if isinstance(out, Drop):
                yield reject(item, self.name, out)
            else:
                yield out


class PerSource:
    """Dispatch each conversation to the step instance configured for its source (per-source overrides).

    Sources without an entry pass through unchanged, which is how a step is switched off for one source.
    Each run of consecutive records of one step (rejects passing within it) goes through that step's
    `run` at once, so a step that works in batches sees whole runs, not one record at a time.
    """

    def __init__(self, name: str, steps: Mapping[str, FilterStep]) -> None:
        self.name = name
        self.steps = dict(steps)

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        current: list[FilterStep | None] = [None]

        def step_of(item: Item) -> FilterStep | None:
            if not isinstance(item, Rejected):  # a reject passes through whichever step it falls in
                current[0] = self.steps.get(item.source)
            return current[0]

        for step, run in groupby(items, key=step_of):
            if step is None:
                yield from run
            else:
                yield from step.run(run)

    @property
    def changes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.steps.values():
            total.update(s.changes)
        return total


def chain(items: Iterable[Item], steps: Iterable[Any]) -> Iterator[Item]:
    """Compose steps left to right (each wraps the previous generator)."""
    out: Iterable[Item] = items
    for step in steps:
        out = step.run(out)
    return iter(out)
