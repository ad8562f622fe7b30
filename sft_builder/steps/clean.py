"""The `clean` step: FastChat-style ShareGPT cleaning plus unicode and whitespace normalisation.

Scraped ShareGPT answers arrive as the chat page's HTML (``<div class="markdown prose">``, code blocks with a
"Copy code" button, "1 / 1" page counters). We convert HTML to Markdown with markdownify, remove those
leftovers, normalise unicode (NFC, non-breaking and zero-width spaces), trim whitespace, and remove turns
left empty together with their partner turn so the conversation still alternates.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from crystalmix.core.records import Conversation, Message, Role
from sft_builder.steps.base import Drop, FilterStep

_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_HTML_RE = re.compile(
    r"<(p|div|span|ol|ul|li|pre|code|h[1-6]|table|tr|td|br|strong|em|b|i|a|blockquote)\b[^>]*>", re.IGNORECASE
)
_CLOSE_RE = re.compile(
    r"</(p|div|span|ol|ul|li|pre|code|h[1-6]|table|strong|em|b|i|a|blockquote)>", re.IGNORECASE
)
# "```\npythonCopy code" (markdownify's rendering of the code header) -> "```python"
_COPY_FENCE_RE = re.compile(r"```[ \t]*\n?[ \t]*([\w+#.-]*)[ \t]*Copy code[ \t]*\n*")
_PAGE_RE = re.compile(r"\A\s*(\d{1,3}) / (\d{1,3})(?:\s+|(?=\S)|\Z)")
_SPACES = dict.fromkeys(
    map(ord, "\u00a0\u2007\u202f\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u3000"), " "
)
_REMOVE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANKS_RE = re.compile(r"\n{3,}")
_TRAILING_RE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True, slots=True)
class CleanConfig:
    """Settings of the clean step (turn `html_to_markdown` off for sources whose answers are HTML code)."""

    enabled: bool = True
    html_to_markdown: bool = True
    html_roles: tuple[Role, ...] = ("assistant",)  # scraped answers; a user's pasted HTML is their question
    remove_leftovers: bool = True
    leftover_lines: tuple[str, ...] = ("Copy code", "Regenerate response", "Copy")
    normalize_unicode: bool = True
    strip_whitespace: bool = True
    drop_empty_turns: bool = True


def looks_like_html(text: str) -> bool:
    """True when the text outside fenced code has HTML markup (opening and closing tags), as scraped pages."""
    outside = _FENCE_RE.sub("", text)
    return bool(_HTML_RE.search(outside) and _CLOSE_RE.search(outside))


def html_to_markdown(text: str) -> str:
    from markdownify import markdownify

    return markdownify(text, heading_style="ATX", bullets="-")


def normalize_unicode(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text).translate(_SPACES).translate(_REMOVE)
    return _CONTROL_RE.sub("", text)


def strip_whitespace(text: str) -> str:
    text = _TRAILING_RE.sub("\n", text)
    return _BLANKS_RE.sub("\n\n", text).strip()


class Clean(FilterStep):
    """Rewrite every message; drop the conversation only when nothing valid is left."""

    name = "clean"

    def __init__(self, cfg: CleanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._leftover_re = (
            re.compile(r"(?m)^[ \t]*(?:" + "|".join(map(re.escape, cfg.leftover_lines)) + r")[ \t]*$\n?")
            if cfg.leftover_lines
            else None
        )

    def clean_text(self, text: str, role: str = "assistant") -> str:
        cfg = self.cfg
        if cfg.normalize_unicode:
            text = normalize_unicode(text)
        if cfg.html_to_markdown and role in cfg.html_roles and looks_like_html(text):
            text = html_to_markdown(text)
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
        return text

    def apply(self, conv: Conversation) -> Conversation | Drop:
        cleaned = [(m.role, self.clean_text(m.content, m.role)) for m in conv.messages]
        if all(c == m.content for (_, c), m in zip(cleaned, conv.messages, strict=False)):
            return conv
        self.changes["rewritten"] += 1
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
