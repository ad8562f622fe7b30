"""Split a model's answer into numbered Instruction/Input/Output blocks, tolerating small format drift.

Models drift from the requested layout (`4) Instruction`, `**4. Instruction:**`, a missing Input line, a
repeated list of the examples); each block found becomes one candidate, and a block that cannot be read is
still reported (reason ``malformed_block``) so every candidate is accounted for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A field header at the start of a line: optional markdown noise, the item number, the field name, a colon.
_HEADER = re.compile(
    r"^[ \t>#*_]*(?P<num>\d{1,3})[ \t]*[.):][ \t]*[*_]*[ \t]*"
    r"(?P<field>instruction|input|output)[ \t]*[*_]*[ \t]*:[*_]*[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_SEPARATOR = re.compile(r"^\s*#{3,}\s*$", re.MULTILINE)
_NO_INPUT = re.compile(r"<\s*no[\s_-]*input\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One parsed block; `problem` names why it is unusable (then it is counted, not kept)."""

    number: int
    instruction: str
    input: str
    output: str
    problem: str | None = None


def _clean(value: str) -> str:
    return _SEPARATOR.sub("", value).strip()


def parse_answer(text: str, first_number: int, cut_off: bool) -> list[Candidate]:
    """Parse one answer. `first_number` is the item the prompt left open (its header is implied when the
    answer starts mid-item, as a completions endpoint does). When the answer was cut by the length limit,
    the last block is returned with problem ``cut_off``.
    """
    if not _HEADER.match(text.lstrip("\n")):
        text = f"{first_number}. Instruction: {text}"
    headers = list(_HEADER.finditer(text))
    blocks: dict[int, dict[str, list[str]]] = {}
    order: list[int] = []
    for i, m in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        num = int(m["num"])
        if num not in blocks:
            blocks[num] = {}
            order.append(num)
        blocks[num].setdefault(m["field"].lower(), []).append(_clean(text[m.end() : end]))

    out: list[Candidate] = []
    for idx, num in enumerate(order):
        fields = blocks[num]
        if cut_off and idx == len(order) - 1:
            out.append(_candidate(num, fields, "cut_off"))
            continue
        problem = None
        if any(len(v) > 1 for v in fields.values()):
            problem = "malformed_block"  # the same item number used twice: cannot tell which text is which
        elif "instruction" not in fields or "output" not in fields:
            problem = "malformed_block"
        out.append(_candidate(num, fields, problem))
    return out


def _candidate(num: int, fields: dict[str, list[str]], problem: str | None) -> Candidate:
    inp = fields.get("input", [""])[0]
    if _NO_INPUT.fullmatch(inp.strip()):
        inp = ""
    return Candidate(num, fields.get("instruction", [""])[0], inp, fields.get("output", [""])[0], problem)
