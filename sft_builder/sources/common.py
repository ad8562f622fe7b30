"""Small helpers shared by the adapters: ids, field access with reasons, and the one turn repair.

Every adapter that builds multi-turn conversations (sharegpt, guanaco, oasst1, conversations) repairs its
turns with `repair_turns` before validation, so one empty answer costs one round, not the conversation.
Repairs are returned as names rather than counted here, so an adapter counts them only for conversations
it actually keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath
from typing import Any

from crystalmix.core.records import ROLES, InvalidRecordError, Message, empty_answer, make_messages

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


def record_id(source: str, file_label: str, ref: int | str) -> str:
    """A deterministic id from provenance, unique within one run whatever the records contain.

    `ref` is `RawRecord.ref`: the line, or ``line#item`` for one of several records starting on one line.
    """
    return f"{source}/{file_label}:{ref}"


class RecordIds:
    """`record_id` for an adapter's records, with the ``source/label:`` prefix computed once per file."""

    def __init__(self, source: str, labels: FileLabels) -> None:
        self.source = source
        self.labels = labels
        self.known: dict[str, str] = {}  # the prefixes computed so far, by file (reading it labels nothing)

    def prefix(self, file: str) -> str:
        """The id of a record of `file` is this prefix followed by its `RawRecord.ref` (as `record_id` makes it).

        The first call for a file gives it its label, so call it where `record_id` would be called.
        """
        prefix = self.known.get(file)
        if prefix is None:
            prefix = self.known[file] = f"{self.source}/{self.labels(file)}:"
        return prefix


def unique_id(cid: str, taken: set[str]) -> str:
    """`cid`, or ``cid~2``, ``cid~3`` ... when an earlier input (a second checkout of a folder) already gave it."""
    unique, k = cid, 2
    while unique in taken:
        unique, k = f"{cid}~{k}", k + 1
    return unique


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


@dataclass(frozen=True, slots=True)
class Repaired:
    """`repair_turns`' result: the messages, the repairs made (fix names), and `end`, the index in the input
    of the last turn the conversation keeps (OASST uses it to tell which tree path a conversation ends on)."""

    messages: tuple[Message, ...]
    fixes: list[str]
    end: int


def _blank(content: str) -> bool:
    return not content or content.isspace()


def repair_turns(turns: Sequence[tuple[str, Any]], *, trim_trailing_user: bool = True,
                 allow_empty_final_answer: bool = False) -> Repaired:
    """Repair (role, content) turns into schema order: the one place every multi-turn adapter repairs.

    In order (each repair is named in `Repaired.fixes`, counted by the adapter only if it keeps the record):

    - a blank leading system turn is dropped (``dropped_empty_system``);
    - leading assistant turns (after the system turn) are dropped (``dropped_leading_assistant``);
    - consecutive same-role turns are joined with a blank line (``merged_turns``); a blank turn inside such
      a run adds nothing and is dropped (``dropped_empty_turn``);
    - a round (a user turn and its answer) with a blank side is dropped whole, keeping the rounds around it:
      a question with a blank answer (``dropped_unanswered_pair``), a blank question with an answer
      (``dropped_unprompted_pair``: an answer to nothing teaches answering nothing, and joining it to the
      round before would invent a turn nobody wrote), or both blank (``dropped_empty_pair``);
    - a final unanswered user turn is dropped when a complete round remains (``dropped_trailing_user``).

    The final round with a blank answer is a trailing prompt (a Guanaco export ending in an empty
    ``### Assistant:``): it is dropped only with `trim_trailing_user`, like a trailing user turn.
    When every round had a blank side, `InvalidRecordError` ``empty_content``; other problems (an unknown
    role, content that is not a string, a system turn later on) are left to `Conversation`'s checks.
    With `allow_empty_final_answer` (LLM360's faithful mode), a final round whose answer is blank is kept,
    its answer empty (`empty_answer`), and named ``kept_empty_final_answer``.
    """
    n = len(turns)
    start = 1 if n and turns[0][0] == "system" else 0
    if tuple([r for r, _ in turns]) == _schema_order(n, start):  # the common, already-valid case
        try:
            return Repaired(make_messages(turns), [], n - 1)
        except InvalidRecordError as exc:
            if exc.reason != "empty_content":
                raise
    return _repair(turns, trim_trailing_user, allow_empty_final_answer)


def normalize_turns(turns: list[tuple[str, str]], *, trim_trailing_user: bool = True,
                    allow_empty_final_answer: bool = False) -> tuple[tuple[Message, ...], list[str]]:
    """`repair_turns` for adapters that need only the messages and the fixes."""
    rep = repair_turns(turns, trim_trailing_user=trim_trailing_user, allow_empty_final_answer=allow_empty_final_answer)
    return rep.messages, rep.fixes


def _repair(turns: Sequence[tuple[str, Any]], trim_trailing_user: bool,
            allow_empty_final_answer: bool = False) -> Repaired:
    for role, content in turns:  # a wrong type or role is not repairable: the usual error, first
        if role not in ROLES or not isinstance(content, str):
            Message(role, content)  # raises
    fixes: list[str] = []
    empty_final = False
    n_system = 0
    while n_system < len(turns) and turns[n_system][0] == "system":
        n_system += 1
    first = n_system
    while first < len(turns) and turns[first][0] == "assistant":
        first += 1
    fixes.extend(["dropped_leading_assistant"] * (first - n_system))
    # runs of consecutive same-role turns: (role, the non-blank contents, index of the run's last one)
    runs: list[tuple[str, list[str], int]] = []
    for i in [*range(n_system), *range(first, len(turns))]:
        role, content = turns[i]
        if not runs or runs[-1][0] != role:
            runs.append((role, [] if _blank(content) else [content], i))
        elif _blank(content):
            fixes.append("dropped_empty_turn")
        else:
            fixes.append("merged_turns" if runs[-1][1] else "dropped_empty_turn")  # else: it replaces a blank
            runs[-1][1].append(content)
            runs[-1] = (role, runs[-1][1], i)
    head = runs[:1] if runs and runs[0][0] == "system" else []
    runs = runs[len(head):]
    if head and not head[0][1]:
        fixes.append("dropped_empty_system")
        head = []
    if any(r[0] == "system" for r in runs):  # a system turn later on: no repair, Conversation says why
        body = runs
    else:
        body = []
        trailing = runs[-1] if len(runs) % 2 else None
        rounds = [(runs[k], runs[k + 1]) for k in range(0, len(runs) - 1, 2)]
        dropped = 0
        for k, (user, answer) in enumerate(rounds):
            if user[1] and answer[1]:
                body += [user, answer]
                continue
            if user[1] and k == len(rounds) - 1 and trailing is None and allow_empty_final_answer:
                body += [user, answer]
                empty_final = True
                fixes.append("kept_empty_final_answer")
                continue
            if user[1] and k == len(rounds) - 1 and trailing is None and not trim_trailing_user:
                body += [user, answer]  # a trailing prompt the options keep: Conversation rejects it
                continue
            dropped += 1
            fixes.append("dropped_unanswered_pair" if user[1] else
                         "dropped_unprompted_pair" if answer[1] else "dropped_empty_pair")
        if trailing is not None:
            if trim_trailing_user and body:
                fixes.append("dropped_trailing_user")
            else:
                body.append(trailing)
        if dropped and not any(role == "assistant" for role, _, _ in body):
            raise InvalidRecordError("empty_content", f"no complete round: {dropped} round(s) with an empty "
                                                      "question or answer, and nothing else")
    kept = head + body
    if empty_final:
        messages = (*make_messages((role, MERGE_SEPARATOR.join(parts)) for role, parts, _ in kept[:-1]),
                    empty_answer())
    else:
        messages = make_messages((role, MERGE_SEPARATOR.join(parts)) for role, parts, _ in kept)
    return Repaired(messages, fixes, kept[-1][2] if kept else -1)
