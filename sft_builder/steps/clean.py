"""The `clean` step: ShareGPT web-export residue to Markdown, plus unicode and whitespace normalisation.

Answers scraped from ChatGPT's page (ShareGPT's web export) arrive wrapped in the page's HTML: the rendered
answer ``<div class="markdown prose ...">`` with ``<p>``, lists and code blocks carrying a "Copy code" button,
and "1 / 1" page counters. Only a turn that carries those export marks is converted (markdownify); a turn
that is itself markup or code (an HTML page, a snippet, anything with scripts or styles) is never converted,
and when in doubt the text stays verbatim. Unicode is normalised (NFC, non-breaking and zero-width spaces);
whitespace is trimmed, inside prose only (fenced code and markup keep their layout); turns left empty are
removed with their partner turn so the conversation still alternates. A document (role ``text``) is cleaned
as one turn (HTML conversion only if ``text`` is among `html_roles`) and dropped only if nothing is left.

Every rewrite is counted by kind. A rewrite that removes more than a quarter of a turn's letters and digits
is also counted as ``large_rewrite``, and the first few are kept as samples for the build report.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html import unescape
from typing import Any

from crystalmix.core.records import Conversation, Message, Role
from sft_builder.steps.base import Drop, FilterStep
from sft_builder.steps.language import looks_like_code

_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_TAG_RE = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")
_DIV_CLASS_RE = re.compile(r"<div\b[^>]*?\bclass\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
_COPY_BUTTON_RE = re.compile(r"Copy code\s*</button>", re.IGNORECASE)
# Markup that is content, never export residue: the export shows code escaped (&lt;script&gt;), so a raw
# page, style or script element means the turn is itself a page or a snippet.
_DOCUMENT_RE = re.compile(
    r"<(?:!doctype|\?xml|html|head|body|script|style|link|meta|iframe|template|form|input|canvas)\b", re.IGNORECASE
)
# "```\npythonCopy code" (markdownify's rendering of the code header) -> "```python"
_COPY_FENCE_RE = re.compile(r"```[ \t]*\n?[ \t]*([\w+#.-]*)[ \t]*Copy code[ \t]*\n*")
# "1 / 1" glued to the text or on its own line by the scrape ("1 / 2 cup of flour" is a quantity)
_PAGE_RE = re.compile(r"\A\s*(\d{1,3}) / (\d{1,3})(?:[ \t]*\n\s*|(?=\S)|\Z)")
_SPACES = dict.fromkeys(
    map(ord, "\u00a0\u2007\u202f\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u3000"), " "
)
_REMOVE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANKS_RE = re.compile(r"\n{3,}")
LARGE_REWRITE = "large_rewrite"
LARGE_SHARE = 0.25  # a rewrite removing more than this share of a turn's letters and digits is large
MAX_SAMPLES = 5
SAMPLE_CHARS = 400
_TRAILING_RE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True, slots=True)
class CleanConfig:
    """Settings of the clean step. `html_to_markdown` converts ShareGPT web-export residue only; a source that
    has none (or whose answers are HTML code) can turn it off."""

    enabled: bool = True
    html_to_markdown: bool = True
    html_roles: tuple[Role, ...] = ("assistant",)  # scraped answers; a user's pasted HTML is their question
    remove_leftovers: bool = True
    leftover_lines: tuple[str, ...] = ("Copy code", "Regenerate response", "Copy")
    normalize_unicode: bool = True
    strip_whitespace: bool = True
    drop_empty_turns: bool = True


def looks_like_html(text: str) -> bool:
    """True when the text outside fenced code holds HTML elements (an opening and a closing tag)."""
    outside = _FENCE_RE.sub("", text)
    return bool(_TAG_RE.search(outside)) and "</" in outside


def is_export_residue(text: str) -> bool:
    """True when the text outside fenced code is an answer as ShareGPT's web export scraped it: ChatGPT's
    rendered-answer wrapper (a div whose classes include both ``markdown`` and ``prose``) or a code block's
    "Copy code" button, and no element that only content has (a page, a script, a style, a form)."""
    outside = _FENCE_RE.sub("", text)
    if _DOCUMENT_RE.search(outside):
        return False
    if _COPY_BUTTON_RE.search(outside):
        return True
    return any({"markdown", "prose"} <= set(m.group(1).split()) for m in _DIV_CLASS_RE.finditer(outside))


def text_size(text: str, markup: bool = False) -> int:
    """Letters and digits: what a rewrite must not lose (whitespace and markdown syntax do not count). With
    `markup`, counted on the text between the tags: the tags are the residue being removed."""
    if markup:
        text = unescape(_TAG_RE.sub(" ", text))
    return sum(ch.isalnum() for ch in text)


def html_to_markdown(text: str) -> str:
    from markdownify import markdownify

    return markdownify(text, heading_style="ATX", bullets="-")


def normalize_unicode(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text).translate(_SPACES).translate(_REMOVE)
    return _CONTROL_RE.sub("", text)


def strip_whitespace(text: str) -> str:
    """Trim the ends; inside, trailing spaces and runs of blank lines go from prose only: fenced code and a
    turn that is markup or unfenced code keep their layout byte for byte."""
    text = text.strip()
    if looks_like_html(text) or looks_like_code(text):
        return text
    parts = re.split(r"(```.*?(?:```|\Z))", text, flags=re.DOTALL)
    for i in range(0, len(parts), 2):  # even parts are outside fences
        parts[i] = _BLANKS_RE.sub("\n\n", _TRAILING_RE.sub("\n", parts[i]))
    return "".join(parts)


class Clean(FilterStep):
    """Rewrite every message; drop the conversation only when nothing valid is left."""

    name = "clean"

    def __init__(self, cfg: CleanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.samples: list[dict[str, Any]] = []  # the first large rewrites, for the build report
        self._leftover_re = (
            re.compile(r"(?m)^[ \t]*(?:" + "|".join(map(re.escape, cfg.leftover_lines)) + r")[ \t]*$\n?")
            if cfg.leftover_lines
            else None
        )

    def clean_text(self, text: str, role: str = "assistant") -> str:
        return self._clean(text, role)[0]

    def _clean(self, text: str, role: str) -> tuple[str, bool]:
        """The cleaned text, and whether it was converted from export markup."""
        cfg = self.cfg
        if cfg.normalize_unicode:
            text = normalize_unicode(text)
        converted = False
        if cfg.html_to_markdown and role in cfg.html_roles and is_export_residue(text):
            text = html_to_markdown(text)
            converted = True
            self.changes["html_to_markdown"] += 1
        if cfg.remove_leftovers:
            before = text
            text = _COPY_FENCE_RE.sub(lambda m: f"```{m.group(1)}\n", text)
            if self._leftover_re is not None:
                text = self._leftover_re.sub("", text)
            page = _PAGE_RE.match(text)
            if page and int(page.group(1)) <= int(page.group(2)):
                text = text[page.end() :]
            if text != before:
                self.changes["leftovers_removed"] += 1
        if cfg.strip_whitespace:
            text = strip_whitespace(text)
        return text, converted

    def _check_size(self, conv: Conversation, index: int, before: Message, after: str, converted: bool) -> None:
        """Count (and sample the first few of) rewrites that remove over a quarter of a turn's text."""
        size = text_size(before.content, markup=converted)
        if size == 0 or text_size(after) >= (1 - LARGE_SHARE) * size:
            return
        self.changes[LARGE_REWRITE] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({
                "id": conv.id,
                "source": conv.source,
                "file": str(conv.meta.get("file", "")),
                "line": int(conv.meta.get("line") or 0),
                "turn": index,
                "role": before.role,
                "removed_share": round(1 - text_size(after) / size, 3),
                "before": before.content[:SAMPLE_CHARS],
                "after": after[:SAMPLE_CHARS],
            })

    def apply(self, conv: Conversation) -> Conversation | Drop:
        cleaned: list[tuple[Role, str]] = []
        for i, m in enumerate(conv.messages):
            text, converted = self._clean(m.content, m.role)
            if text != m.content:
                self._check_size(conv, i, m, text, converted)
            cleaned.append((m.role, text))
        if all(c == m.content for (_, c), m in zip(cleaned, conv.messages, strict=False)):
            return conv
        self.changes["rewritten"] += 1
        if conv.kind == "document":
            if not cleaned[0][1].strip():
                return Drop("empty_after_clean", "no text left after cleaning")
            return conv.with_messages([Message(cleaned[0][0], cleaned[0][1])])
        if not self.cfg.drop_empty_turns:
            return conv.with_messages([Message(r, c) for r, c in cleaned])  # raises on an empty turn
        msgs: list[Message] = []
        if cleaned[0][0] == "system":
            if cleaned[0][1].strip():
                msgs.append(Message("system", cleaned[0][1]))
            else:
                self.changes["empty_system_removed"] += 1
            cleaned = cleaned[1:]
        # keep user/assistant pairs whose both sides survived, so the conversation still alternates
        for i in range(0, len(cleaned) - 1, 2):
            (ru, u), (ra, a) = cleaned[i], cleaned[i + 1]
            if u.strip() and a.strip():
                msgs += [Message(ru, u), Message(ra, a)]
            else:
                self.changes["empty_turn_removed"] += 1
        if not any(m.role == "assistant" for m in msgs):
            return Drop("empty_after_clean", "no user/assistant pair left after cleaning")
        return conv.with_messages(msgs)
