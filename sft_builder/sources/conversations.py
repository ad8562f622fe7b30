"""Our own interchange JSONL (``{"id", "source", "messages", "meta"}``, or ``"text"`` instead of ``"messages"``
for a document), passed through with validation.

By default a record keeps its own ``source``; with ``keep_source=false`` it takes the adapter's source
name and the original goes to ``meta["orig_source"]``. Provenance already in ``meta`` is left alone; a
record without ``meta["file"]`` gets this file and line. Turns get the repair every multi-turn adapter
shares (`common.repair_turns`, counted in ``fixes``); a valid record passes through unchanged. Ids come
from the records, so a repeated id is rejected (``duplicate_id``) instead of giving two conversations
one id. ``allow_empty_final_answer`` keeps a conversation whose last answer is empty instead of dropping
that round (or rejecting the record as ``empty_content`` when it is the only one): LLM360's faithful mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crystalmix.core.records import Conversation, InvalidRecordError
from sft_builder.sources.base import Adapter, DuplicateIdError, RawRecord, register
from sft_builder.sources.common import Repaired, as_mapping, repair_turns


@dataclass(frozen=True, slots=True)
class ConversationsOptions:
    keep_source: bool = True
    trim_trailing_user: bool = True  # drop a final unanswered user turn (counted)
    allow_empty_final_answer: bool = False  # keep an empty last answer (LLM360's data has one): trains only EOS


@register
class ConversationsAdapter(Adapter[ConversationsOptions]):
    name = "conversations"
    forms = ('{"id", "source", "messages": [{"role", "content"}] | "text", "meta"} (crystalmix interchange '
             'JSONL: conversations and documents)')
    Options = ConversationsOptions
    splittable = False  # duplicate ids are found across the whole source

    def __init__(self, options: ConversationsOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self._ids: set[str] = set()

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = as_mapping(record.data)
        if data.get("text") is not None and not data.get("messages"):  # a document: nothing to repair
            conv = Conversation.from_dict(data)
            repaired = Repaired(conv.messages, [], 0)
        else:
            allow = self.options.allow_empty_final_answer
            repaired = repair_turns(_turns(data), trim_trailing_user=self.options.trim_trailing_user,
                                    allow_empty_final_answer=allow)
            conv = Conversation.from_dict({**data, "messages": [m.to_dict() for m in repaired.messages]},
                                          allow_empty_final_answer=allow)
        if "file" not in conv.meta:  # provenance for rejects downstream; a record's own provenance wins
            conv = conv.with_meta(file=record.file, line=record.line)
            if record.item:
                conv = conv.with_meta(item=record.item)
        if not self.options.keep_source and conv.source != self.source:
            meta = {**conv.meta, "orig_source": conv.source}
            conv = Conversation(conv.id, self.source, conv.messages, meta)
        if conv.id in self._ids:
            raise DuplicateIdError(conv.id)
        self._ids.add(conv.id)
        self.stats.fixes.update(repaired.fixes)
        return (conv,)


def _turns(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The (role, content) pairs of an interchange record, with `Conversation.from_dict`'s reasons."""
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRecordError("no_messages", "missing or empty 'messages' list")
    turns = []
    for m in raw:
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise InvalidRecordError("bad_message", "each message needs 'role' and 'content'")
        turns.append((m["role"], m["content"]))
    return turns
