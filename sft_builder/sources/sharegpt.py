"""ShareGPT-family conversations: ShareGPT V4.3, SlimOrca, Evol-ShareGPT, oasst1-guanaco exports, and
``messages``/``role``/``content`` files, as options of one adapter.

Records look like ``{"id": ..., "conversations": [{"from": "human", "value": ...}, ...]}`` (or ``idx``,
``messages``, ``role``/``content``). Roles go through a fixed map (human/user -> user; gpt/chatgpt/bing/
assistant/model -> assistant; system -> system) plus the ``role_map`` option; any other role rejects the
record as ``unknown_role`` rather than silently dropping the turn. Chunk ids ``abc_2`` set ``group``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.records import (
    ROLES,
    SCHEMA_ORDERS,
    Conversation,
    InvalidRecordError,
    build_conversation,
    make_conversation,
)
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import DEFAULT_ROLE_MAP, FileLabels, RecordIds, as_mapping, normalize_turns

CHUNK_SUFFIX = re.compile(r"^(.+)_(\d+)$")


@dataclass(frozen=True, slots=True)
class ShareGPTOptions:
    messages_key: str = ""  # "" = the first of: conversations, messages
    id_key: str = ""  # "" = the first of: id, idx
    system_key: str = "system"  # a top-level system prompt, used when the turns hold none
    role_map: dict[str, str] = field(default_factory=dict)  # extra names, e.g. function_call:assistant
    group_chunks: bool = True  # ids ending in _N are chunks of one conversation: same group
    trim_trailing_user: bool = True  # drop a final unanswered user turn (counted)
    allow_empty_final_answer: bool = False  # keep an empty last answer (LLM360's data has one): trains only EOS


@register
class ShareGPTAdapter(Adapter[ShareGPTOptions]):
    name = "sharegpt"
    forms = ("{id|idx, conversations|messages: [{from, value} | {role, content}]}: ShareGPT V4.3, "
             "SlimOrca, Evol-ShareGPT, oasst1-guanaco ShareGPT export")
    Options = ShareGPTOptions

    def __init__(self, options: ShareGPTOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self.labels = FileLabels()
        bad = {k: v for k, v in options.role_map.items() if v not in ROLES}
        if bad:
            raise UserError(f"role_map for adapter 'sharegpt' maps to unknown roles {bad}; "
                            f"valid roles: {', '.join(ROLES)}")
        self.roles = {**DEFAULT_ROLE_MAP, **{k.lower(): v for k, v in options.role_map.items()}}
        self.message_keys = (options.messages_key,) if options.messages_key else ("conversations", "messages")
        self.id_keys = (options.id_key,) if options.id_key else ("id", "idx")
        self._group_chunks = options.group_chunks
        self._ids = RecordIds(self.source, self.labels)

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = record.data
        if type(data) is not dict:
            data = as_mapping(data)
        raw_turns = None
        for key in self.message_keys:  # the first key present
            if key in data:
                raw_turns = data[key]
                break
        if not isinstance(raw_turns, list) or not raw_turns:
            keys = " or ".join(self.message_keys)
            raise InvalidRecordError("no_messages", f"no non-empty list under {keys}")
        # The usual record in one pass: every turn is {"from": <a mapped name>, "value": <text>}, the roles
        # are already in schema order (so normalize_turns would change nothing) and this is not the first
        # kept record of its file (whose id prefix is known). Anything else, or a message that
        # build_conversation refuses, goes through the reference path, which repairs what it can and
        # otherwise gives the reason and detail.
        prefix = self._ids.known.get(record.file)
        if prefix is not None:
            roles_map = self.roles
            try:
                roles = tuple([roles_map[t["from"]] for t in raw_turns])
                contents = [t["value"] for t in raw_turns]
            except (KeyError, TypeError):
                return self._convert_reference(record, data, raw_turns)
            key = self.options.system_key
            system = data.get(key) if key else None
            if type(system) is str and system and not system.isspace() and roles[0] != "system":
                roles = ("system", *roles)
                contents.insert(0, system)
            if roles in SCHEMA_ORDERS:
                try:
                    return (build_conversation(f"{prefix}{record.ref}", self.source, roles, contents,
                                               self._meta(record, data)),)
                except InvalidRecordError:
                    pass
        return self._convert_reference(record, data, raw_turns)

    def _convert_reference(self, record: RawRecord, data: Mapping[str, Any],
                           raw_turns: list[Any]) -> tuple[Conversation]:
        """Map the turns, add the system prompt, repair the order, then validate."""
        options = self.options
        turns = self._turns(raw_turns)
        system = data.get(options.system_key) if options.system_key else None
        if type(system) is str and system and not system.isspace() and turns[0][0] != "system":
            turns.insert(0, ("system", system))
        messages, fixes = normalize_turns(turns, trim_trailing_user=options.trim_trailing_user,
                                          allow_empty_final_answer=options.allow_empty_final_answer)
        meta = self._meta(record, data)
        cid = f"{self._ids.prefix(record.file)}{record.ref}"  # = record_id(source, label, record.ref)
        conv = make_conversation(cid, self.source, messages, meta)
        if fixes:
            self.stats.fixes.update(fixes)
        return (conv,)

    def _meta(self, record: RawRecord, data: Mapping[str, Any]) -> dict[str, Any]:
        """Provenance: file and line, the record's own id, and the group of ``_N`` chunks."""
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if record.item:  # one of several records starting on this line (a one-line JSON array)
            meta["item"] = record.item
        orig = None
        for key in self.id_keys:
            if key in data:
                orig = data[key]
                break
        if orig is not None and not isinstance(orig, (dict, list)):
            meta["orig_id"] = orig = orig if type(orig) is str else str(orig)
            base = chunk_base(orig) if self._group_chunks else None
            if base is not None:
                meta["group"] = f"{self.source}/{base}"
        return meta

    def _turns(self, raw_turns: list[Any]) -> list[tuple[str, str]]:
        """(role, content) pairs with mapped roles; the first bad turn rejects the record."""
        roles = self.roles
        try:  # the usual {"from": <lower-case name>, "value": <str>} turns, without the checks below
            out = [(roles[t["from"]], t["value"]) for t in raw_turns]
            for _, c in out:
                if type(c) is not str:
                    break
            else:
                return out
        except (KeyError, TypeError):
            pass
        out = []
        for i, turn in enumerate(raw_turns):
            if type(turn) is not dict:
                raise InvalidRecordError("bad_turn", f"turn {i} is not an object")
            role = turn.get("from")
            if role is None:
                role = turn.get("role")
            content = turn.get("value")
            if content is None:
                content = turn.get("content")
            mapped = roles.get(role.lower()) if type(role) is str else None
            if mapped is None or type(content) is not str:
                _explain(i, role, content)
            out.append((mapped, content))  # type: ignore[arg-type]
        return out


def _explain(i: int, role: Any, content: Any) -> None:
    """Raise the reason a turn was refused (kept out of the hot loop)."""
    if not isinstance(role, str):
        raise InvalidRecordError("bad_turn", f"turn {i} has no 'from'/'role' string")
    if not isinstance(content, str):
        got = "nothing" if content is None else type(content).__name__
        raise InvalidRecordError("bad_content", f"turn {i} content must be a string, got {got}")
    raise InvalidRecordError("unknown_role", f"turn {i} has role {role!r}; the role_map option can map it "
                                             "(role_map=<name>:<user|assistant|system>)")


def chunk_base(orig_id: str) -> str | None:
    """The ``abc`` of a chunk id ``abc_2`` (group 1 of `CHUNK_SUFFIX`), or None when it is not one.

    String operations decide the usual cases (several times faster than the regex); anything else, such as
    a trailing newline (which ``$`` allows), is left to the regex itself.
    """
    head, sep, tail = orig_id.rpartition("_")
    if not sep:
        return None  # no "_": the regex cannot match
    if head and tail.isdecimal() and "\n" not in head:  # \d is a Unicode decimal, like isdecimal
        return head  # greedy "(.+)" ends at the last "_", since the digits after it hold none
    m = CHUNK_SUFFIX.match(orig_id)
    return m.group(1) if m else None
