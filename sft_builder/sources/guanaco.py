"""The Guanaco text form: one ``text`` field holding ``### Human: ... ### Assistant: ...`` turns.

Only the exact markers ``### Human:`` and ``### Assistant:`` split turns, so markdown headings such as
``### Step 1`` inside a reply stay part of it. Turns are stripped of surrounding whitespace; text before
the first marker rejects the record (``text_outside_turns``) since its role is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crystalmix.core.records import Conversation, InvalidRecordError
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import FileLabels, as_mapping, normalize_turns, record_id, text_field

MARKER = re.compile(r"###\s?(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class GuanacoOptions:
    text_key: str = "text"
    trim_trailing_user: bool = True


def split_turns(text: str) -> list[tuple[str, str]]:
    """Cut a Guanaco text into (role, content) pairs; raise `InvalidRecordError` if it has no markers."""
    parts = MARKER.split(text)
    if len(parts) < 3:
        raise InvalidRecordError("no_turn_markers", "no '### Human:' or '### Assistant:' marker")
    if parts[0].strip():
        raise InvalidRecordError("text_outside_turns", "text before the first '### Human:' marker")
    return [(ROLE[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


@register
class GuanacoAdapter(Adapter[GuanacoOptions]):
    name = "guanaco"
    forms = "{text: '### Human: ... ### Assistant: ...'} (timdettmers/openassistant-guanaco)"
    Options = GuanacoOptions

    def __init__(self, options: GuanacoOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self.labels = FileLabels()

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = as_mapping(record.data)
        turns = split_turns(text_field(data, self.options.text_key))
        messages, fixes = normalize_turns(turns, trim_trailing_user=self.options.trim_trailing_user)
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if record.item:  # one of several records starting on this line (a one-line JSON array)
            meta["item"] = record.item
        conv = Conversation(record_id(self.source, self.labels(record.file), record.ref), self.source, messages, meta)
        if fixes:
            self.stats.fixes.update(fixes)
        return (conv,)
