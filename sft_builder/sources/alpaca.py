"""Alpaca-form instructions: ``{instruction, input, output}`` or ``{instruction, output}``.

Used for CodeAlpaca, Evol-CodeAlpaca v1, Evol-Instruct-Code-80k and our website-creation samples. The user
turn is the instruction alone when the input is empty (or Alpaca's ``<noinput>``), otherwise the
instruction, a blank line, and the input (``join`` option). A record's own ``meta`` object (the webgen
generator writes one) is carried into ``Conversation.meta["record_meta"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.records import (
    Conversation,
    InvalidRecordError,
    build_conversation,
    is_blank,
    make_conversation,
    make_messages,
)
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import FileLabels, RecordIds, as_mapping, text_field

FIELDS = ("instruction", "input", "output", "system", "id", "meta")
NO_INPUT = "<noinput>"
USER_ASSISTANT = ("user", "assistant")
SYSTEM_USER_ASSISTANT = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class AlpacaOptions:
    column_map: dict[str, str] = field(default_factory=dict)  # our field -> record key, e.g. output:response
    join: str = "\n\n"  # between instruction and a non-empty input
    allow_empty_final_answer: bool = False  # keep an empty output (LLM360's faithful mode): trains only EOS


def user_turn(instruction: str, inp: str, join: str = "\n\n") -> str:
    """The documented join: instruction alone, or instruction + join + input."""
    if not inp or inp.isspace() or (len(inp) < 32 and inp.strip() == NO_INPUT):
        return instruction
    return f"{instruction}{join}{inp}"


@register
class AlpacaAdapter(Adapter[AlpacaOptions]):
    name = "alpaca"
    forms = "{instruction, input?, output} (+ optional system, id, meta): CodeAlpaca, Evol-CodeAlpaca, webgen"
    Options = AlpacaOptions

    def __init__(self, options: AlpacaOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self.labels = FileLabels()
        unknown = sorted(set(options.column_map) - set(FIELDS))
        if unknown:
            raise UserError(f"column_map for adapter 'alpaca' names unknown fields {', '.join(unknown)}; "
                            f"valid fields: {', '.join(FIELDS)}")
        self.cols = {f: options.column_map.get(f, f) for f in FIELDS}
        self._keys = tuple(self.cols[f] for f in ("instruction", "output", "input", "system", "id", "meta"))
        self._ids = RecordIds(self.source, self.labels)

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = record.data
        if type(data) is not dict:
            data = as_mapping(data)
        k_ins, k_out, k_inp, k_sys, k_id, k_meta = self._keys
        instruction, output = data.get(k_ins), data.get(k_out)
        inp, system = data.get(k_inp, ""), data.get(k_sys, "")
        if type(instruction) is not str or type(output) is not str or type(inp) is not str \
                or type(system) is not str:  # None counts as missing; the slow path says what is wrong
            instruction, output = text_field(data, k_ins), text_field(data, k_out)
            inp, system = text_field(data, k_inp, required=False), text_field(data, k_sys, required=False)
        if not instruction or instruction.isspace():
            raise InvalidRecordError("empty_content", "empty instruction")
        user = user_turn(instruction, inp, self.options.join)
        if system and not system.isspace():
            roles: tuple[str, ...] = SYSTEM_USER_ASSISTANT
            contents = [system, user, output]
        else:
            roles, contents = USER_ASSISTANT, [user, output]
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if record.item:  # one of several records starting on this line (a one-line JSON array)
            meta["item"] = record.item
        orig = data.get(k_id)
        if orig is not None and not isinstance(orig, (dict, list)):
            meta["orig_id"] = str(orig)
        extra = data.get(k_meta)
        if isinstance(extra, dict):
            meta["record_meta"] = extra
            extra = None
        prefix = self._ids.known.get(record.file)
        if self.options.allow_empty_final_answer and is_blank(output):
            if extra is not None:
                raise InvalidRecordError("bad_field", f"{k_meta!r} must be an object")
            cid = f"{self._ids.prefix(record.file)}{record.ref}"
            return (build_conversation(cid, self.source, roles, contents, meta, allow_empty_final_answer=True),)
        if prefix is not None and extra is None:  # not the first kept record of its file: one call
            return (build_conversation(f"{prefix}{record.ref}", self.source, roles, contents, meta),)
        messages = make_messages(zip(roles, contents, strict=True))  # a bad message is reported first
        if extra is not None:
            raise InvalidRecordError("bad_field", f"{k_meta!r} must be an object")
        cid = f"{self._ids.prefix(record.file)}{record.ref}"  # = record_id(source, label, record.ref)
        return (make_conversation(cid, self.source, messages, meta),)
