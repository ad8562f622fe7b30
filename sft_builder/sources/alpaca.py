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

from sft_builder.errors import UserError
from sft_builder.schema import Conversation, InvalidRecordError, Message
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import as_mapping, record_id, text_field

FIELDS = ("instruction", "input", "output", "system", "id", "meta")
NO_INPUT = "<noinput>"


@dataclass(frozen=True, slots=True)
class AlpacaOptions:
    column_map: dict[str, str] = field(default_factory=dict)  # our field -> record key, e.g. output:response
    join: str = "\n\n"  # between instruction and a non-empty input


def user_turn(instruction: str, inp: str, join: str = "\n\n") -> str:
    """The documented join: instruction alone, or instruction + join + input."""
    if not inp.strip() or inp.strip() == NO_INPUT:
        return instruction
    return f"{instruction}{join}{inp}"


@register
class AlpacaAdapter(Adapter[AlpacaOptions]):
    name = "alpaca"
    forms = "{instruction, input?, output} (+ optional system, id, meta): CodeAlpaca, Evol-CodeAlpaca, webgen"
    Options = AlpacaOptions

    def __init__(self, options: AlpacaOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        unknown = sorted(set(options.column_map) - set(FIELDS))
        if unknown:
            raise UserError(f"column_map for adapter 'alpaca' names unknown fields {', '.join(unknown)}; "
                            f"valid fields: {', '.join(FIELDS)}")
        self.cols = {f: options.column_map.get(f, f) for f in FIELDS}

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = as_mapping(record.data)
        c = self.cols
        instruction = text_field(data, c["instruction"])
        output = text_field(data, c["output"])
        inp = text_field(data, c["input"], required=False)
        system = text_field(data, c["system"], required=False)
        if not instruction.strip():
            raise InvalidRecordError("empty_content", "empty instruction")
        messages = [Message("system", system)] if system.strip() else []
        messages += [Message("user", user_turn(instruction, inp, self.options.join)),
                     Message("assistant", output)]
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        orig = data.get(c["id"])
        if orig is not None and not isinstance(orig, (dict, list)):
            meta["orig_id"] = str(orig)
        extra = data.get(c["meta"])
        if isinstance(extra, dict):
            meta["record_meta"] = extra
        elif extra is not None:
            raise InvalidRecordError("bad_field", f"{c['meta']!r} must be an object")
        cid = record_id(self.source, record.file, record.line)
        return (Conversation(cid, self.source, tuple(messages), meta),)
