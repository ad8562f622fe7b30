"""The one record schema every adapter produces and every later step consumes.

`Message` and `Conversation` are frozen, slotted dataclasses that validate themselves when built, so a
`Conversation` that exists is always well formed (and can always be written as UTF-8 JSON). Transforms return
new objects (`dataclasses.replace`).

A record is of one of two kinds, told apart by its messages, so every step keeps working on one type:
a *conversation* (user/assistant turns, trained on the answers) or a *document* (one message of role
``text``: plain text trained on every token, as CrystalChat's textbook subsets). Their interchange lines
differ only in holding ``messages`` or ``text``.

`Rejected` is the one record of a drop: every writer of rejects (convert, build, encode) writes it with
`RejectWriter`, and every interchange line comes from `Conversation.to_json_bytes`, so the same record gives
the same bytes whoever writes it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, get_args

import orjson

from crystalmix.core.atomic import atomic_open

ChatRole = Literal["system", "user", "assistant"]
Role = Literal["system", "user", "assistant", "text"]
ROLES: tuple[str, ...] = get_args(ChatRole)  # the roles of a conversation's messages
TEXT = "text"  # the role of a document's one message
MESSAGE_ROLES: tuple[str, ...] = get_args(Role)
Kind = Literal["conversation", "document"]


class InvalidRecordError(ValueError):
    """A record that cannot become a valid `Conversation`.

    `reason` is a short, stable snake_case key that is counted in reports (e.g. ``empty_content``);
    the message gives the human detail. This is the only exception type for bad records: it is caught in
    one place (the stream runner), anything else is a bug.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str

    def __post_init__(self) -> None:
        # Hot path (every message of every record): exact type checks and no string copies.
        if self.role not in MESSAGE_ROLES:
            raise InvalidRecordError("unknown_role", f"role {self.role!r} is not one of {', '.join(ROLES)}")
        content = self.content
        if type(content) is not str and not isinstance(content, str):
            raise InvalidRecordError("bad_content", f"content must be a string, got {type(content).__name__}")
        if not content or content.isspace():
            raise InvalidRecordError("empty_content", f"empty {self.role} message")
        if not content.isascii():  # isascii is O(1); only non-ASCII text can hold a lone surrogate
            _check_unicode(content, self.role)

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Conversation:
    """One training record: a conversation, or a document (`kind`).

    A conversation is an optional leading system message, then user/assistant alternating, starting with
    user and ending with assistant. A document is exactly one message of role ``text`` (`make_document`).
    `meta` carries provenance: ``file``, ``line`` (1-based line or row), ``orig_id``, and ``group`` (ties
    together the pieces of one original conversation: ShareGPT ``_N`` chunks, OASST branches of one tree).
    Adapters may add more keys; values must be JSON-serialisable.
    """

    id: str
    source: str
    messages: tuple[Message, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        msgs = _check_conversation(self.id, self.source, self.messages)
        if msgs is not self.messages:
            object.__setattr__(self, "messages", msgs)
        if type(self.meta) is not dict:
            if not isinstance(self.meta, Mapping):
                raise InvalidRecordError("bad_meta", f"meta must be an object, got {type(self.meta).__name__}")
            object.__setattr__(self, "meta", dict(self.meta))
        _check_meta(self.meta)

    # -- views ---------------------------------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return "document" if self.messages[0].role == TEXT else "conversation"

    @property
    def text(self) -> str | None:
        """A document's text (None for a conversation)."""
        first = self.messages[0]
        return first.content if first.role == TEXT else None

    @property
    def system(self) -> str | None:
        return self.messages[0].content if self.messages[0].role == "system" else None

    @property
    def turns(self) -> tuple[Message, ...]:
        """The user/assistant messages, without the system prompt."""
        return self.messages[1:] if self.messages[0].role == "system" else self.messages

    @property
    def group(self) -> str:
        """Id shared by all pieces of one original conversation (defaults to the conversation id)."""
        return str(self.meta.get("group") or self.id)

    def with_messages(self, messages: Sequence[Message]) -> Conversation:
        return replace(self, messages=tuple(messages))

    def with_meta(self, **updates: Any) -> Conversation:
        return replace(self, meta={**self.meta, **updates})

    # -- interchange JSONL -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        first = self.messages[0]
        if first.role == TEXT:
            return {"id": self.id, "source": self.source, "text": first.content, "meta": dict(self.meta)}
        return {
            "id": self.id,
            "source": self.source,
            "messages": [m.to_dict() for m in self.messages],
            "meta": dict(self.meta),
        }

    def to_json_bytes(self) -> bytes:
        """THE interchange line (with its newline): what `convert` writes, the build's stages hold and `encode`
        reads. Compact UTF-8 JSON, keys sorted at every level (inside ``meta`` too), so the bytes depend only
        on the conversation.

        Raises `InvalidRecordError` (``invalid_unicode``) when ``meta`` holds text UTF-8 cannot encode (a lone
        surrogate): message contents are checked when built, ``meta`` values only here.
        """
        first = self.messages[0]
        if first.role == TEXT:
            obj: dict[str, Any] = {"id": self.id, "meta": self.meta, "source": self.source, "text": first.content}
        else:
            obj = {"id": self.id, "messages": [{"content": m.content, "role": m.role} for m in self.messages],
                   "meta": self.meta, "source": self.source}
        try:
            return orjson.dumps(obj, option=_JSON_LINE)  # the hot path of convert and of the build's stages
        except TypeError:  # orjson.JSONEncodeError: a huge int, an odd type, a surrogate; the general path decides
            pass
        try:
            return json_line(obj)
        except UnicodeEncodeError as exc:
            raise InvalidRecordError("invalid_unicode", f"meta holds text that is not valid Unicode ({exc.reason} "
                                     f"at {exc.start})") from None

    def to_json(self) -> str:
        """`to_json_bytes` as text, without the newline."""
        return self.to_json_bytes()[:-1].decode("utf-8")

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], *, allow_empty_final_answer: bool = False) -> Conversation:
        """Build from the interchange form (``messages``, or ``text`` for a document); raises
        `InvalidRecordError` on any structural problem.

        `allow_empty_final_answer` accepts a conversation whose last assistant message is empty (see
        `empty_answer`); the build passes it when reading back records it has already accepted.
        """
        if not isinstance(record, Mapping):
            raise InvalidRecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
        raw_msgs = record.get("messages")
        text = record.get("text")
        if text is not None:
            if raw_msgs:
                raise InvalidRecordError("text_and_messages", "a record holds 'text' (a document) or 'messages' "
                                                              "(a conversation), not both")
            raw_msgs = [{"role": TEXT, "content": text}]
        if not isinstance(raw_msgs, list) or not raw_msgs:
            raise InvalidRecordError("no_messages", "missing or empty 'messages' list")
        msgs = []
        last = len(raw_msgs) - 1
        for i, m in enumerate(raw_msgs):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise InvalidRecordError("bad_message", "each message needs 'role' and 'content'")
            if allow_empty_final_answer and i == last and m["role"] == "assistant" and is_blank(m["content"]):
                msgs.append(empty_answer(m["content"]))
            else:
                msgs.append(Message(m["role"], m["content"]))
        meta = record.get("meta")
        if meta is None:
            meta = {}
        elif not isinstance(meta, Mapping):
            raise InvalidRecordError("bad_meta", f"'meta' must be an object, got {type(meta).__name__}")
        return cls(id=str(record.get("id") or ""), source=str(record.get("source") or ""),
                   messages=tuple(msgs), meta=dict(meta))


# -- validation, and the fast constructors used on the adapters' hot path ---------------------------------
#
# `make_messages` and `make_conversation` run exactly the checks of `Message.__post_init__` and
# `Conversation.__post_init__` (they call the same code, or the constructor itself for anything unusual),
# then fill the slots directly instead of going through the generated frozen ``__init__``, whose
# per-field ``object.__setattr__`` calls and extra Python frames cost about as much as the checks.

_new = object.__new__
_set_role = Message.role.__set__  # type: ignore[attr-defined]  # slot descriptors: set once, at build time
_set_content = Message.content.__set__  # type: ignore[attr-defined]
_set_id = Conversation.id.__set__  # type: ignore[attr-defined]
_set_source = Conversation.source.__set__  # type: ignore[attr-defined]
_set_messages = Conversation.messages.__set__  # type: ignore[attr-defined]
_set_meta = Conversation.meta.__set__  # type: ignore[attr-defined]


def _filled(cid: str, source: str, messages: tuple[Message, ...], meta: dict[str, Any]) -> Conversation:
    """A `Conversation` from values already checked, slot by slot (one call per record; the messages'
    slots are filled inline by the callers, where a call per message would cost)."""
    conv = _new(Conversation)
    _set_id(conv, cid)
    _set_source(conv, source)
    _set_messages(conv, messages)
    _set_meta(conv, meta)
    return conv


def _valid_orders(max_body: int) -> frozenset[tuple[str, ...]]:
    """Every valid role sequence with up to `max_body` user/assistant messages (with and without system)."""
    bodies = [("user", "assistant") * (k // 2) for k in range(2, max_body + 1, 2)]
    return frozenset([b for b in bodies] + [("system", *b) for b in bodies])


# Valid role sequences of up to 64 user/assistant messages, and a document's; longer ones take the
# step-by-step check.
SCHEMA_ORDERS = _valid_orders(64) | {(TEXT,)}


def _check_unicode(text: str, where: str) -> None:
    """Refuse text UTF-8 cannot encode (a lone surrogate, from a JSON ``"\\ud800"`` escape): it could be
    neither written out nor tokenized, so it is a bad record here rather than a crash in a later writer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRecordError("invalid_unicode", f"{where} message holds a lone surrogate "
                                 f"({text[exc.start]!r} at {exc.start})") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_meta(meta: dict[str, Any]) -> None:
    """The provenance keys later steps compute with: ``file`` a string, ``line`` a non-negative integer,
    ``group`` a string. Other keys are the adapter's and only need to be JSON (checked when written)."""
    line = meta.get("line", 0)
    if type(line) is not int and (not isinstance(line, int) or isinstance(line, bool)) or line < 0:
        raise InvalidRecordError("bad_meta", f"meta.line must be a non-negative integer, got {line!r}")
    file = meta.get("file", "")
    if type(file) is not str:
        raise InvalidRecordError("bad_meta", f"meta.file must be a string, got {type(file).__name__}")
    group = meta.get("group")
    if group is not None and type(group) is not str:
        raise InvalidRecordError("bad_meta", f"meta.group must be a string, got {type(group).__name__}")


def _check_conversation(cid: Any, source: Any, msgs: Iterable[Any]) -> tuple[Message, ...]:
    """The invariants of a `Conversation`; returns the messages as a tuple, or raises `InvalidRecordError`
    with the first problem found."""
    if not isinstance(cid, str) or not cid:
        raise InvalidRecordError("missing_id", "conversation id must be a non-empty string")
    if not isinstance(source, str) or not source:
        raise InvalidRecordError("missing_source", "conversation source must be a non-empty string")
    if type(msgs) is not tuple:
        msgs = tuple(msgs)
    roles = [m.role for m in msgs if type(m) is Message]
    if len(roles) != len(msgs):
        for m in msgs:
            if type(m) is not Message:
                raise InvalidRecordError("bad_message", f"expected Message, got {type(m).__name__}")
    if tuple(roles) in SCHEMA_ORDERS:  # the usual case, in one hash lookup
        return msgs  # type: ignore[return-value]
    if TEXT in roles:
        raise InvalidRecordError("misplaced_text", "a text message is a document on its own, not a turn of a "
                                                   "conversation")
    start = 1 if roles and roles[0] == "system" else 0
    if len(roles) == start:
        raise InvalidRecordError("no_turns", "conversation has no user/assistant turns")
    if roles[start::2].count("user") != (len(roles) - start + 1) // 2 or \
            roles[start + 1::2].count("assistant") != (len(roles) - start) // 2:
        for i, role in enumerate(roles[start:]):
            expected = "user" if i % 2 == 0 else "assistant"
            if role != expected:
                if role == "system":
                    raise InvalidRecordError("misplaced_system", f"system message at turn {i}")
                raise InvalidRecordError("bad_alternation", f"turn {i} is {role}, expected {expected}")
    if roles[-1] != "assistant":
        raise InvalidRecordError("no_final_assistant", "conversation must end with an assistant turn")
    return msgs  # type: ignore[return-value]


def make_messages(pairs: Iterable[tuple[str, str]]) -> tuple[Message, ...]:
    """``tuple(Message(role, content) for role, content in pairs)``, with the same checks, faster.

    A pair that passes `Message`'s checks (known role; non-empty, non-blank exact ``str`` content that UTF-8
    can encode) is built directly; any other pair is handed to `Message` itself, which raises the usual error.
    """
    out = []
    append = out.append
    for role, content in pairs:
        if type(content) is str and role in ROLES and content and not content.isspace() \
                and (content.isascii() or _encodable(content)):
            m = _new(Message)
            _set_role(m, role)
            _set_content(m, content)
            append(m)
        else:
            append(Message(role, content))  # type: ignore[arg-type]
    return tuple(out)


def make_conversation(cid: str, source: str, messages: tuple[Message, ...], meta: dict[str, Any]) -> Conversation:
    """``Conversation(cid, source, messages, meta)`` with the same checks, faster (a hot path).

    `messages` must be a tuple and `meta` a dict (as the constructor would store them); other types go
    through the constructor.
    """
    if type(messages) is not tuple or type(meta) is not dict:
        return Conversation(cid, source, messages, meta)
    _check_conversation(cid, source, messages)
    _check_meta(meta)
    return _filled(cid, source, messages, meta)


def make_document(cid: str, source: str, text: str, meta: dict[str, Any]) -> Conversation:
    """A document: `text` trained on every token (its one message has role ``text``)."""
    return make_conversation(cid, source, (Message(TEXT, text),), meta)  # type: ignore[arg-type]


def is_blank(content: Any) -> bool:
    return isinstance(content, str) and (not content or content.isspace())


def empty_answer(content: str = "") -> Message:
    """The one message allowed to be empty: a conversation's final assistant answer, in LLM360's faithful mode.

    LLM360's CrystalChat data holds a conversation whose last answer is empty (``<|im_end|></s>``: only the
    stop token is trained). `Message` refuses empty content, so such an answer exists only when a caller
    asks for it (an adapter's ``allow_empty_final_answer``); `Conversation` checks roles, not contents, so
    it accepts the message in last place. `content` is the blank text as given.
    """
    if not is_blank(content):
        raise ValueError("empty_answer takes empty or blank text")
    m = _new(Message)
    _set_role(m, "assistant")
    _set_content(m, content)
    return m


def read_record_line(line: bytes | str) -> Conversation:
    """A record from an interchange line the build wrote (accepted once already: an empty final answer only
    where an adapter allowed it), checked again as it is read, since a stage file is a file on disk."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:  # what orjson refuses and `to_json_bytes`'s fallback wrote (a huge int)
        data = json.loads(line)
    return Conversation.from_dict(data, allow_empty_final_answer=True)


def read_record_lines(block: bytes) -> list[Conversation]:
    """`read_record_line` over a block of whole lines (`crystalmix.core.readers.line_blocks`)."""
    return [read_record_line(line) for line in block.splitlines()]


Parts = tuple[str, str, tuple[str, ...], tuple[str, ...], dict[str, Any]]  # id, source, roles, contents, meta


def conversation_parts(conv: Conversation) -> Parts:
    """A conversation as plain values (tuples pickle several times faster, both ways, than the objects)."""
    msgs = conv.messages
    return conv.id, conv.source, tuple(m.role for m in msgs), tuple(m.content for m in msgs), conv.meta


def restore_conversation(parts: Parts) -> Conversation:
    """The conversation `conversation_parts` took apart, with no checks: only for parts of a record that
    was valid when taken apart and has not left the build since (a spill file, a worker's result); anything
    read from outside is built by `Conversation.from_dict` or `build_conversation`, which check."""
    cid, source, roles, contents, meta = parts
    messages = []
    append = messages.append
    for role, content in zip(roles, contents, strict=True):
        m = _new(Message)
        _set_role(m, role)
        _set_content(m, content)
        append(m)
    return _filled(cid, source, tuple(messages), meta)


def build_conversation(cid: str, source: str, roles: tuple[str, ...], contents: Sequence[str],
                       meta: dict[str, Any], *, allow_empty_final_answer: bool = False) -> Conversation:
    """``Conversation(cid, source, tuple(map(Message, roles, contents)), meta)``: same checks, one pass.

    The role sequence is checked once, on `roles` itself (the roles the messages are built from), instead
    of once per `Message` and again from the built messages; each content gets `Message`'s checks.
    `allow_empty_final_answer` keeps a blank last assistant message (`empty_answer`).
    """
    if allow_empty_final_answer and roles and roles[-1] == "assistant" and contents and is_blank(contents[-1]):
        head = make_messages(zip(roles[:-1], contents[:-1], strict=True))
        return Conversation(cid, source, (*head, empty_answer(contents[-1])), meta)
    if type(roles) is not tuple or roles not in SCHEMA_ORDERS or len(contents) != len(roles) \
            or type(meta) is not dict:
        return Conversation(cid, source, make_messages(zip(roles, contents, strict=True)), meta)
    messages = []
    append = messages.append
    for role, content in zip(roles, contents, strict=False):  # same lengths (checked); strict costs a lot
        if type(content) is str and content and not content.isspace() \
                and (content.isascii() or _encodable(content)):  # the role is valid (SCHEMA_ORDERS)
            m = _new(Message)
            _set_role(m, role)
            _set_content(m, content)
            append(m)
        else:
            append(Message(role, content))  # type: ignore[arg-type]  # raises the usual error
    if not isinstance(cid, str) or not cid:
        raise InvalidRecordError("missing_id", "conversation id must be a non-empty string")
    if not isinstance(source, str) or not source:
        raise InvalidRecordError("missing_source", "conversation source must be a non-empty string")
    _check_meta(meta)
    return _filled(cid, source, tuple(messages), meta)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from disk or the hub, with where it came from (line/row is 1-based).

    `item` is 0 when the line tells this record apart from its neighbours (always, for JSON Lines and
    tables); when several elements of a JSON array start on one line (an array dumped on a single line),
    each of them gets its 1-based position in the array, so ``line#item`` still names exactly one record.
    """

    data: Any
    file: str
    line: int
    item: int = 0

    @property
    def ref(self) -> int | str:
        """Where the record is, as ids spell it: the line, or ``line#item`` when the line is shared."""
        return self.line if not self.item else f"{self.line}#{self.item}"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was dropped, with everything needed to find it again and to count it.

    The only type of a drop that reaches disk or a report: adapters, build steps, the mix and the tokenizer
    all produce it, and `RejectWriter` writes it. `step` is where it was dropped (``adapter``, ``clean``,
    ``mix``, ``tokenize`` ...), `reason` a stable snake_case key, `record` the original record (what the
    reader gave for an adapter reject, the interchange dict for a later step).
    """

    source: str
    step: str
    reason: str
    file: str
    line: int
    record: Any
    detail: str = ""
    duplicate_of: str | None = None
    item: int = 0  # the record's position in a JSON array when several elements start on `line` (else 0)

    @classmethod
    def of(cls, conv: Conversation, step: str, reason: str, detail: str = "",
           duplicate_of: str | None = None) -> Rejected:
        """The reject of a conversation dropped by `step`, located by its ``meta`` provenance."""
        meta = conv.meta
        return cls(conv.source, step, reason, str(meta.get("file", "")), int(meta.get("line") or 0),
                   conv.to_dict(), detail, duplicate_of, int(meta.get("item") or 0))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "step": self.step,
            "reason": self.reason,
            "file": self.file,
            "line": self.line,
            "detail": self.detail,
            "record": self.record,
        }
        if self.duplicate_of is not None:
            d["duplicate_of"] = self.duplicate_of
        if self.item:
            d["item"] = self.item
        return d

    def to_json_bytes(self) -> bytes:
        """THE rejects-file line (with its newline), as `json_line` writes it; text UTF-8 cannot hold (lone
        surrogates in the original record) is escaped as ``\\udXXX`` instead of lost."""
        d = self.to_dict()
        try:
            return json_line(d)
        except UnicodeEncodeError:
            return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode("ascii") + b"\n"


class RejectWriter:
    """The one writer of rejects files: JSONL, one `Rejected.to_json_bytes` line per reject, written
    atomically (the file appears under its name complete, at `close`, or not at all).

    Counts what it wrote per reason (`counts`), so a caller's report and the file cannot disagree.
    Use as a context manager::

        with RejectWriter(out / "rejects.jsonl") as rejects:
            rejects.write(Rejected.of(conv, "encode", "no_trained_tokens"))
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self._cm = atomic_open(self.path, "wb")
        self._fh: IO[bytes] = self._cm.__enter__()

    def write(self, rej: Rejected) -> None:
        self._fh.write(rej.to_json_bytes())
        self.counts[rej.reason] += 1

    def write_all(self, rejects: Iterable[Rejected]) -> None:
        for rej in rejects:
            self.write(rej)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Publish the file (its temporary is renamed into place)."""
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the temporary; nothing appears under `path`."""
        self._cm.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> RejectWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._cm.__exit__(exc_type, exc, tb)


def rejects_path_for(out: str | Path) -> Path:
    """Where a command that writes `out` puts its rejects by default: ``OUT.rejects.jsonl`` beside it."""
    out = Path(out)
    name = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{name}.rejects.jsonl")


def read_rejects(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a rejects file, as dicts (for tests, reports and tools)."""
    with open(path, "rb") as fh:
        for line in fh:
            yield json.loads(line)


# -- the one JSON-lines encoding ----------------------------------------------------------------------------
_JSON_LINE = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def json_line(obj: Any) -> bytes:
    """Compact UTF-8 JSON with keys sorted at every level, plus a newline: the same bytes for the same object.

    orjson writes it several times faster than the stdlib (writing, not parsing, dominates a conversion);
    what orjson refuses (ints beyond 64 bits, unusual types) falls back to `json` in the same layout.
    Raises `UnicodeEncodeError` for text UTF-8 cannot hold (lone surrogates from ``\\ud83d``).
    """
    try:
        return orjson.dumps(obj, option=_JSON_LINE)
    except TypeError:  # orjson.JSONEncodeError
        text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
        return text.encode("utf-8") + b"\n"


@dataclass(frozen=True, slots=True)
class UnparsedRecord:
    """The `data` of a `RawRecord` whose line was not valid JSON (a bad record inside a good JSONL file).

    Readers hand it on instead of raising so that the adapter's runner rejects it. `reason` is
    ``invalid_json``, ``not_utf8``, or ``too_large`` (a line over the reader's size cap; `text` then holds
    only its beginning).
    """

    text: str
    error: str
    reason: str = "invalid_json"
