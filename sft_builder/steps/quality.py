"""The `quality` step: length bounds (characters and rounds), refusal/boilerplate phrases, blocked words.

Refusals ("As an AI language model, I cannot ...") teach a chat model to refuse; the phrase list is
configurable because what counts as boilerplate depends on the mix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from crystalmix.core.config import at_least, spec
from crystalmix.core.records import Conversation, Role
from sft_builder.steps.base import Drop, FilterStep

DEFAULT_REFUSALS: tuple[str, ...] = (
    "as an ai language model",
    "as a language model",
    "as an ai model",
    "i'm sorry, but as an ai",
    "i am sorry, but as an ai",
    "i cannot fulfill that request",
    "i'm unable to browse the internet",
    "my knowledge cutoff",
    "openai's content policy",
)


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Bounds apply to the user+assistant text (no system prompt), or to a document's text; a round is a user
    turn and its answer (a document has none, so the round bounds do not apply to it). Refusal phrases are
    looked for in the `refusals_in` roles (``text`` for documents)."""

    enabled: bool = True
    min_chars: int = field(default=1, metadata=spec(at_least(0)))
    max_chars: int = field(default=200_000, metadata=spec(at_least(1)))
    min_rounds: int = field(default=1, metadata=spec(at_least(0)))
    max_rounds: int = field(default=1_000, metadata=spec(at_least(1)))
    refusal_phrases: tuple[str, ...] = DEFAULT_REFUSALS
    refusals_in: tuple[Role, ...] = ("assistant",)
    blocked_words: tuple[str, ...] = ()

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.min_chars > self.max_chars:
            yield "max_chars", f"must be >= min_chars ({self.min_chars})"
        if self.min_rounds > self.max_rounds:
            yield "max_rounds", f"must be >= min_rounds ({self.min_rounds})"


class Quality(FilterStep):
    """Drop reasons: too_short, too_long, too_few_rounds, too_many_rounds, refusal, blocked_word."""

    name = "quality"

    def __init__(self, cfg: QualityConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._refusal = _alternation(cfg.refusal_phrases, word=False)
        self._blocked = _alternation(cfg.blocked_words, word=True)

    def apply(self, conv: Conversation) -> Conversation | Drop:
        cfg = self.cfg
        turns = conv.turns
        chars = sum(len(m.content) for m in turns)
        rounds = len(turns) // 2
        document = conv.kind == "document"
        if chars < cfg.min_chars:
            return Drop("too_short", f"{chars} < {cfg.min_chars} chars")
        if chars > cfg.max_chars:
            return Drop("too_long", f"{chars} > {cfg.max_chars} chars")
        if rounds < cfg.min_rounds and not document:  # a document has no rounds: only its length counts
            return Drop("too_few_rounds", f"{rounds} < {cfg.min_rounds}")
        if rounds > cfg.max_rounds:
            return Drop("too_many_rounds", f"{rounds} > {cfg.max_rounds}")
        if self._refusal is not None:
            for m in turns:
                if m.role in cfg.refusals_in and (
                    hit := self._refusal.search(m.content.replace("\u2019", "'"))
                ):
                    return Drop("refusal", f"{m.role}: {hit.group(0)!r}")
        if self._blocked is not None:
            for m in conv.messages:
                if hit := self._blocked.search(m.content):
                    return Drop("blocked_word", f"{m.role}: {hit.group(0)!r}")
        return conv


def _alternation(phrases: tuple[str, ...], *, word: bool) -> re.Pattern[str] | None:
    """One case-insensitive regex for all phrases (whitespace-tolerant; whole words when `word`)."""
    parts = [r"\s+".join(map(re.escape, p.split())) for p in phrases if p.strip()]
    if not parts:
        return None
    body = "|".join(sorted(parts, key=len, reverse=True))
    return re.compile(rf"\b(?:{body})\b" if word else f"(?:{body})", re.IGNORECASE)
