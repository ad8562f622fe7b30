"""Small helpers shared by the adapters: ids, field access with reasons, and turn normalisation.

Repairs (merging same-role turns, dropping a leading assistant turn) are returned as names rather than
counted here, so an adapter counts them only for conversations it actually keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import PurePath
from typing import Any

from crystalmix.core.records import InvalidRecordError, Message, make_messages

# ShareGPT-family role names; anything else is rejected as ``unknown_role`` unless mapped by an option.
DEFAULT_ROLE_MAP: dict[str, str] = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "assistant": "assistant", "model": "assistant",
    "system": "system",
}
MERGE_SEPARATOR = "\n\n"


@lru_cache(maxsize=4096)
def short_file(file: str) -> str:
    """The file's base name (hub inputs, ``name[split]``, keep their full label)."""
    return file if file.endswith("]") else PurePath(file).name or file


class FileLabels:
    """Short, unique names for an adapter's input files: the base name, then ``name~2``, ``name~3`` ... for
    other files with the same base name (``a/train.json``, ``b/train.json``), in the order they are read."""

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._taken: set[str] = set()

    def __call__(self, file: str) -> str:
        label = self._by_file.get(file)
        if label is None:
            base = label = short_file(file)
            k = 2
            while label in self._taken:
                label, k = f"{base}~{k}", k + 1
            self._taken.add(label)
            self._by_file[file] = label
        return label


def record_id(source: str, file_label: str, line: int) -> str:
    """A deterministic id from provenance, unique within one run whatever the records contain."""
    return f"{source}/{file_label}:{line}"


class RecordIds:
    """`record_id` for an adapter's records, with the ``source/label:`` prefix computed once per file."""

    def __init__(self, source: str, labels: FileLabels) -> None:
        self.source = source
        self.labels = labels
        self.known: dict[str, str] = {}  # the prefixes computed so far, by file (reading it labels nothing)

    def prefix(self, file: str) -> str:
        """The id of a record of `file` is this prefix followed by its line (as `record_id` makes it).

        The first call for a file gives it its label, so call it where `record_id` would be called.
        """
        prefix = self.known.get(file)
        if prefix is None:
            prefix = self.known[file] = f"{self.source}/{self.labels(file)}:"
        return prefix


def as_mapping(data: Any) -> Mapping[str, Any]:
    if type(data) is not dict and not isinstance(data, Mapping):  # the exact check first: it is hot
        raise InvalidRecordError("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    return data


def text_field(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    """A string field; missing -> ``missing_field``, wrong type -> ``bad_field`` (None counts as missing)."""
    value = data.get(key)
    if type(value) is str:
        return value
    if value is None:
        if required:
            raise InvalidRecordError("missing_field", f"no {key!r} field")
        return ""
    if not isinstance(value, str):
        raise InvalidRecordError("bad_field", f"{key!r} must be a string, got {type(value).__name__}")
    return value


@lru_cache(maxsize=256)
def _schema_order(n: int, start: int) -> tuple[str, ...]:
    """The role sequence of a valid conversation of n messages (with a system message if start is 1)."""
    body = n - start
    if body <= 0 or body % 2:
        return ()
    return ("system",) * start + ("user", "assistant") * (body // 2)


def normalize_turns(turns: list[tuple[str, str]], *, trim_trailing_user: bool = True,
                    ) -> tuple[tuple[Message, ...], list[str]]:
    """Repair a list of (role, content) into schema order; return the messages and the repairs made.

    Leading assistant turns (after an optional system turn) are dropped, consecutive same-role turns are
    joined with a blank line, and a final unanswered user turn is dropped when an answer remains before
    it. The result is validated later by `Conversation`; empty contents are left for it to reject.
    """
    start = 1 if turns and turns[0][0] == "system" else 0
    if tuple([r for r, _ in turns]) == _schema_order(len(turns), start):  # the common, already-valid case
        return make_messages(turns), []
    fixes: list[str] = []
    while start < len(turns) and turns[start][0] == "assistant":
        del turns[start]
        fixes.append("dropped_leading_assistant")
    merged: list[tuple[str, str]] = []
    for role, content in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + MERGE_SEPARATOR + content)
            fixes.append("merged_turns")
        else:
            merged.append((role, content))
    if trim_trailing_user and len(merged) >= 2 and merged[-1][0] == "user" and merged[-2][0] == "assistant":
        merged.pop()
        fixes.append("dropped_trailing_user")
    return make_messages(merged), fixes
