"""A small MediaWiki-markup-to-plain-text converter for Rosetta Code task descriptions.

Rosetta Code's ``00DESCRIPTION`` files use a modest subset of wiki markup: ``'''bold'''``, ``[[links|text]]``,
``{{templates}}``, ``;definition`` headings, ``*``/``#``/``:`` lists, ``<br>``, ``<sup>``/``<sub>``,
``<big>``, ``<math>``, ``<pre>``/``<lang>`` blocks and HTML entities (``&nbsp;`` everywhere). We convert
that subset ourselves instead of adding a full parser (mwparserfromhell's ``strip_code`` drops the text
of templates like ``{{task heading|Related tasks}}`` and flattens lists). Non-breaking spaces become
plain spaces; lines that start with a space are MediaWiki preformatted text and keep their alignment.
"""

from __future__ import annotations

import html
import re

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_BLOCK = re.compile(r"<(pre|lang|math|syntaxhighlight|nowiki)(\s[^>]*)?>(.*?)</\1\s*>", re.S | re.I)
_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):[^\]]*\]\]", re.I)
_LINK = re.compile(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]")
_EXT_LINK = re.compile(r"\[(https?://[^\s\]]+)(?:\s+([^\]]*))?\]")
_QUOTES = re.compile(r"'{2,5}")
_BR = re.compile(r"<(?:br|hr)\s*/?>", re.I)
_ORDINAL = re.compile(r"<sup>\s*(st|nd|rd|th)\s*</sup>", re.I)
_SUP = re.compile(r"<sup>(.*?)</sup>", re.I | re.S)
_SUB = re.compile(r"<sub>(.*?)</sub>", re.I | re.S)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_LIST = re.compile(r"^([*#:]+)\s*(.*)$")
_SPACES = re.compile(r"[ \t\u00a0\u202f\u2007]+")
_BLANKS = re.compile(r"\n{3,}")
_INVISIBLE = re.compile("[\u200b\u200e\u200f\ufeff]")
NBSP_CHARS = "\u00a0\u202f\u2007"
_INLINE_TEMPLATES = {"math", "mvar", "tt", "code", "var", "small", "big", "nowrap", "smallcaps"}


def normalize_spaces(text: str) -> str:
    """Turn non-breaking and figure spaces into plain spaces (they break code and tokenizers alike)."""
    for ch in NBSP_CHARS:
        text = text.replace(ch, " ")
    return text


def _template(m: re.Match[str]) -> str:
    parts = [p.strip() for p in m.group(1).split("|")]
    name = parts[0].lower()
    if name == "task heading":
        return f"{parts[1] if len(parts) > 1 and parts[1] else 'Task'}:"  # it stands on its own line
    if name in _INLINE_TEMPLATES and len(parts) > 1:
        return parts[-1]
    return ""  # banners such as {{Wikipedia}}, {{task}}, {{Related tasks/...}}


def _link(m: re.Match[str]) -> str:
    target, text = m.group(1), m.group(2)
    if text:
        return text
    return target.split(":", 1)[1] if target.lower().startswith("wp:") else target


def _line(line: str, counters: list[int]) -> str:
    if line.startswith(" "):  # preformatted: keep alignment, drop only the NBSPs and trailing space
        counters.clear()
        return normalize_spaces(line).rstrip()
    line = _SPACES.sub(" ", line).strip()
    m = _HEADING.match(line)
    if m:
        counters.clear()
        return m.group(2)
    if line.startswith(";"):
        counters.clear()
        return line[1:].strip().rstrip(":;").strip() + ":"
    m = _LIST.match(line)
    if not m:
        counters.clear()
        return line
    prefix, body = m.group(1), m.group(2).strip()
    depth = len(prefix)
    del counters[depth:]
    counters.extend([0] * (depth - len(counters)))
    indent = "  " * (depth - 1)
    kind = prefix[-1]
    if kind == "#":
        counters[depth - 1] += 1
        return f"{indent}{counters[depth - 1]}. {body}"
    if kind == "*":
        return f"{indent}- {body}"
    return f"{indent}{body}"


def _group(script: str) -> str:
    """``F<sub>n-1</sub>`` reads as ``F_(n-1)``; a single token needs no parentheses."""
    script = script.strip()
    return script if re.fullmatch(r"\w+", script) else f"({script})"


def to_text(markup: str) -> str:
    """Plain text from Rosetta Code wiki markup (see the module docstring for what is handled)."""
    blocks: list[str] = []

    def keep(m: re.Match[str]) -> str:
        tag, attrs, body = m.group(1).lower(), m.group(2) or "", m.group(3)
        if tag == "lang":
            lang = attrs.strip().split()[0] if attrs.strip() else ""
            text = f"\n```{lang}\n{body.strip(chr(10))}\n```\n"
        elif tag == "pre":
            text = "\n" + html.unescape(body.strip("\n")) + "\n"
        else:
            text = body
        blocks.append(normalize_spaces(text))
        return f"\x00{len(blocks) - 1}\x00"

    text = _COMMENT.sub("", markup.replace("\r\n", "\n"))
    text = _BLOCK.sub(keep, text)
    while True:
        new = _TEMPLATE.sub(_template, text)
        if new == text:
            break
        text = new
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(_link, text)
    text = _EXT_LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    text = _QUOTES.sub("", text)
    text = _BR.sub("\n", text)
    text = _ORDINAL.sub(r"\1", text)
    text = _SUP.sub(lambda m: "^" + _group(m.group(1)), text)
    text = _SUB.sub(lambda m: "_" + _group(m.group(1)), text)
    text = _TAG.sub("", text)
    text = _INVISIBLE.sub("", html.unescape(text))
    counters: list[int] = []
    text = "\n".join(_line(line, counters) for line in text.split("\n"))
    text = re.sub(r"\x00(\d+)\x00", lambda m: blocks[int(m.group(1))], text)
    return _BLANKS.sub("\n\n", text).strip()
