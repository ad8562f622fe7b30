"""Split a model's answer into numbered Instruction/Input/Output blocks, tolerating small format drift.

Models drift from the requested layout (`4) Instruction`, `**4. Instruction:**`, a missing Input line, a
repeated list of the examples); each block found becomes one candidate, and a block that cannot be read is
still reported (reason ``malformed_block``) so every candidate is accounted for. Every field ends at the next
block boundary: a field header (even one missing its colon, as in `7. Instruction Write ...`) or a `###`
separator line. A block with a colon-less header, or text after a separator that no header claims, is
rejected whole, so none of its text can end up inside a neighbouring item that is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A field header at the start of a line: optional markdown noise, the item number, the field name, and
# normally a colon. The colon is optional here so a header that lost it still ends the previous field.
_HEADER = re.compile(
    r"^[ \t>#*_]*(?P<num>\d{1,3})[ \t]*[.):][ \t]*[*_]*[ \t]*"
    r"(?P<field>instruction|input|output)\b[ \t]*[*_]*[ \t]*(?P<colon>:)?[*_]*[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_SEPARATOR = re.compile(r"^[ \t]*#{3,}[ \t]*$", re.MULTILINE)
_NO_INPUT = re.compile(r"<\s*no[\s_-]*input\s*>", re.IGNORECASE)
MALFORMED = "malformed_block"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One parsed block; `problem` names why it is unusable (then it is counted, not kept)."""

    number: int
    instruction: str
    input: str
    output: str
    problem: str | None = None


@dataclass(slots=True)
class _Block:
    number: int
    fields: dict[str, list[str]]
    malformed: bool = False
    stray: bool = False  # text after a separator that no header named; never takes a later header's text


def _is_boundary(m: re.Match[str], current: _Block | None) -> bool:
    """A header with its colon always starts a field. Without the colon it does only where a new block (a
    higher number) or a field this block lacks can start; a numbered list item such as `1. Input validation`
    inside an output is content."""
    if m["colon"] or current is None:
        return True
    num = int(m["num"])
    return num > current.number or (num == current.number and m["field"].lower() not in current.fields)


def _split(text: str) -> list[_Block]:
    """The blocks of `text` in order. Each field's value runs to the next boundary; a block whose header
    lost its colon, or that starts with text no header names, is marked malformed."""
    marks: list[tuple[int, int, re.Match[str] | None]] = [(m.start(), m.end(), m) for m in _HEADER.finditer(text)]
    marks += [(m.start(), m.end(), None) for m in _SEPARATOR.finditer(text)]
    marks.sort(key=lambda x: x[0])
    blocks: list[_Block] = []
    current: _Block | None = None
    field: str | None = None  # the field whose value is being read; None after a separator
    start = 0

    def close(end: int) -> None:
        nonlocal current
        value = text[start:end].strip()
        if field is not None and current is not None:
            current.fields.setdefault(field, []).append(value)
        elif value:  # text after a separator that no header names: a block of its own, malformed
            number = current.number + 1 if current is not None else 0
            current = _Block(number, {"instruction": [value]}, malformed=True, stray=True)
            blocks.append(current)

    for begin, end, m in marks:
        if m is not None and not _is_boundary(m, current):
            continue
        close(begin)
        start = end
        if m is None:
            field = None
            continue
        num, field = int(m["num"]), m["field"].lower()
        if current is None or current.stray or num != current.number:
            current = _Block(num, {})
            blocks.append(current)
        if not m["colon"]:
            current.malformed = True
    close(len(text))
    return blocks


def parse_answer(text: str, first_number: int, cut_off: bool) -> list[Candidate]:
    """Parse one answer. `first_number` is the item the prompt left open (its header is implied when the
    answer starts mid-item, as a completions endpoint does). When the answer was cut by the length limit,
    the last block is returned with problem ``cut_off``.
    """
    if not _HEADER.match(text.lstrip("\n")):
        text = f"{first_number}. Instruction: {text}"
    blocks = _split(text)
    out: list[Candidate] = []
    for idx, b in enumerate(blocks):
        if cut_off and idx == len(blocks) - 1:
            out.append(_candidate(b, "cut_off"))
            continue
        problem = None
        if b.malformed or any(len(v) > 1 for v in b.fields.values()):
            problem = MALFORMED  # a header without its colon, or one item number used twice
        elif "instruction" not in b.fields or "output" not in b.fields:
            problem = MALFORMED
        out.append(_candidate(b, problem))
    return out


def _candidate(b: _Block, problem: str | None) -> Candidate:
    fields = b.fields
    inp = fields.get("input", [""])[0]
    if _NO_INPUT.fullmatch(inp.strip()):
        inp = ""
    return Candidate(b.number, fields.get("instruction", [""])[0], inp, fields.get("output", [""])[0], problem)
