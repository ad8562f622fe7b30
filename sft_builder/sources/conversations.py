"""Our own interchange JSONL (``{"id", "source", "messages", "meta"}``), passed through with validation.

By default a record keeps its own ``source``; with ``keep_source=false`` it takes the adapter's source
name and the original goes to ``meta["orig_source"]``. Provenance already in ``meta`` is left alone; a
record without ``meta["file"]`` gets this file and line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crystalmix.core.records import Conversation
from sft_builder.sources.base import Adapter, RawRecord, register


@dataclass(frozen=True, slots=True)
class ConversationsOptions:
    keep_source: bool = True


@register
class ConversationsAdapter(Adapter[ConversationsOptions]):
    name = "conversations"
    forms = '{"id", "source", "messages": [{"role", "content"}], "meta"} (crystalmix interchange JSONL)'
    Options = ConversationsOptions

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        conv = Conversation.from_dict(record.data)
        if "file" not in conv.meta:  # provenance for rejects downstream; a record's own provenance wins
            conv = conv.with_meta(file=record.file, line=record.line)
        if not self.options.keep_source and conv.source != self.source:
            meta = {**conv.meta, "orig_source": conv.source}
            conv = Conversation(conv.id, self.source, conv.messages, meta)
        return (conv,)
