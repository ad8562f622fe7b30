"""Per-candidate filters of the website-creation loop; each returns None to keep or a named reason to reject.

The reasons are stable snake_case keys counted in the run summary and written beside each rejected candidate.
Similarity (ROUGE-L) is not here: it depends on the pool, see `similarity.py`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser

from sft_builder.webgen.parse import Candidate

# Things a text-only model cannot do for a website task (Alpaca's list, minus words such as "image", "file",
# "video" and "map" that are ordinary HTML elements and attributes here).
CANNOT_DO = (
    "draw",
    "sketch",
    "paint",
    "photograph",
    "take a picture",
    "screenshot",
    "figma",
    "photoshop",
    "illustrator",
    "deploy",
    "publish",
    "host it",
    "go to",
    "visit",
    "browse to",
    "log in to",
    "sign up for",
    "watch",
    "listen",
    "record",
    "flowchart",
    "diagram",
    "plot",
    "video tutorial",
    "wake me",
    "remind me",
    "set an alarm",
)
_CANNOT_DO_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in CANNOT_DO) + r")\b", re.IGNORECASE)

# Instructions that ask for markup: the output must then hold HTML elements, unless the task is about CSS or
# JavaScript alone (a style sheet for "the page" needs no tags).
_MARKUP_WORDS_RE = re.compile(
    r"\b(html5?|markup|web ?page|landing page|login page|error page|form|semantic|aria|landmarks?)\b",
    re.IGNORECASE,
)
_CODE_ONLY_RE = re.compile(r"\b(css|stylesheet|style sheet|styles|javascript|js|typescript)\b", re.IGNORECASE)
_EXPLICIT_HTML_RE = re.compile(r"\b(html5?|markup)\b", re.IGNORECASE)


def needs_markup(instruction: str) -> bool:
    """Whether the task asks for HTML, so an answer without any element is wrong."""
    if not _MARKUP_WORDS_RE.search(instruction):
        return False
    return bool(_EXPLICIT_HTML_RE.search(instruction)) or not _CODE_ONLY_RE.search(instruction)


# Elements that never have an end tag, and those whose end tag HTML lets an author omit.
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_OPTIONAL_END = frozenset(
    """html head body p li dt dd option optgroup thead tbody tfoot tr td th
    colgroup caption rtc rb rt rp""".split()
)
# Every element name of the HTML standard plus common SVG ones, so `<noinput>` or `a<b` is not markup.
_KNOWN = frozenset(
    """a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption cite
    code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure
    footer form h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link
    main map mark menu meta meter nav noscript object ol optgroup option output p param picture pre progress
    q rp rt ruby s samp script search section select slot small source span strong style sub summary sup
    table tbody td template textarea tfoot th thead time title tr track u ul var video wbr svg path circle
    rect line polyline polygon g defs use text ellipse lineargradient stop""".split()
)


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """Bounds of the per-candidate filters (Alpaca: more than 3 and at most 150 words)."""

    min_words: int = 4
    max_words: int = 150


class _MarkupScan(HTMLParser):
    """Counts known elements and unclosed/mismatched ones with the standard-library HTML tokenizer."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements = 0
        self.stack: list[str] = []
        self.mismatched = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _KNOWN:
            return
        self.elements += 1
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _KNOWN:
            self.elements += 1  # `<br/>` or a self-closed SVG shape: nothing to close

    def handle_endtag(self, tag: str) -> None:
        if tag not in _KNOWN or tag in _VOID:
            return
        if tag not in self.stack:
            self.mismatched += 1
            return
        # Close implicitly the elements whose end tag may be omitted; anything else left open is an error.
        while self.stack:
            top = self.stack.pop()
            if top == tag:
                break
            if top not in _OPTIONAL_END:
                self.mismatched += 1

    def unclosed(self) -> int:
        return self.mismatched + sum(1 for t in self.stack if t not in _OPTIONAL_END)


_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NOT_MARKUP_LANGS = frozenset(
    "css scss sass less js javascript jsx ts typescript json bash sh shell python".split()
)


def markup_parts(text: str) -> list[str]:
    """The parts of an output to read as HTML: its fenced blocks that are not CSS/JS/..., else the whole text
    (a `<` in a JavaScript comparison is not a tag)."""
    fences = _FENCE.findall(text)
    if not fences:
        return [text]
    return [body for lang, body in fences if lang.lower() not in _NOT_MARKUP_LANGS]


def scan_markup(text: str) -> tuple[int, int]:
    """(known elements, unclosed or mismatched elements) in `text`, each markup part parsed on its own."""
    elements = unclosed = 0
    for part in markup_parts(text):
        scan = _MarkupScan()
        scan.feed(part)
        scan.close()
        elements += scan.elements
        unclosed += scan.unclosed()
    return elements, unclosed


def check_length(c: Candidate, cfg: FilterConfig) -> str | None:
    n = len(c.instruction.split())
    if n < cfg.min_words:
        return "instruction_too_short"
    if n > cfg.max_words:
        return "instruction_too_long"
    return None


def check_start(c: Candidate, cfg: FilterConfig) -> str | None:
    first = c.instruction[:1]
    if first in string.punctuation:
        return "starts_with_punctuation"
    if not first.isascii():
        return "starts_non_ascii"
    return None


def check_feasible(c: Candidate, cfg: FilterConfig) -> str | None:
    return "text_model_cannot_do" if _CANNOT_DO_RE.search(c.instruction) else None


def check_output(c: Candidate, cfg: FilterConfig) -> str | None:
    if not c.output.strip():
        return "empty_output"
    elements, unclosed = scan_markup(c.output)
    if elements == 0 and needs_markup(c.instruction):
        return "missing_markup"
    if unclosed:
        return "broken_markup"
    return None


FILTERS: tuple[Callable[[Candidate, FilterConfig], str | None], ...] = (
    check_length,
    check_start,
    check_feasible,
    check_output,
)


def first_rejection(c: Candidate, cfg: FilterConfig) -> str | None:
    """The parse problem or the first failing filter's reason; None lets the candidate go on to similarity."""
    if c.problem:
        return c.problem
    for f in FILTERS:
        reason = f(c, cfg)
        if reason:
            return reason
    return None
