"""The `language` step: keep conversations whose user and assistant turns are in the configured languages.

langdetect costs the same few milliseconds whatever the text length (its random trials dominate), so
truncating alone barely helps. We first read cheap exact signals from a bounded sample: the script of the
letters (kana means Japanese, Hangul Korean, Han Chinese, ...) and, for plain-ASCII text, the share of
English function words. Only text those signals cannot settle (other Latin-script languages, Cyrillic,
code-like text) goes to langdetect, seeded so results are deterministic, on the same bounded sample.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from crystalmix.core.config import SEED, at_least, between, non_empty, spec
from crystalmix.core.records import Conversation
from sft_builder.steps.base import Drop, FilterStep

_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_ASCII_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kana", re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")),
    ("hangul", re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")),
    ("han", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")),
    ("cyrillic", re.compile(r"[\u0400-\u04ff]")),
    ("arabic", re.compile(r"[\u0600-\u06ff\u0750-\u077f]")),
    ("greek", re.compile(r"[\u0370-\u03ff]")),
    ("hebrew", re.compile(r"[\u0590-\u05ff]")),
    ("thai", re.compile(r"[\u0e00-\u0e7f]")),
    ("devanagari", re.compile(r"[\u0900-\u097f]")),
)
# Scripts used by exactly one language langdetect knows; the others (Cyrillic, Arabic, Devanagari) are shared.
_SCRIPT_LANG = {"hangul": "ko", "greek": "el", "hebrew": "he", "thai": "th"}
_EN_STOP = frozenset(
    """
a about after all also an and any are as at be been but by can could did do does for from had has
have he her his how i if in into is it its just may me more most my no not of on one only or other
our out she should so some such than that the their them then there these they this those to up us
was we were what when where which who will with would you your
""".split()
)
_FOLD = {"zh-cn": "zh", "zh-tw": "zh"}


def fold(lang: str) -> str:
    """One code per language (langdetect's zh-cn/zh-tw are both Chinese)."""
    return _FOLD.get(lang.lower(), lang.lower())


@dataclass(frozen=True, slots=True)
class LanguageConfig:
    """Settings of the language step. `decide_on` says which side's language must be kept."""

    enabled: bool = True
    languages: tuple[str, ...] = field(default=("en",), metadata=spec(non_empty))
    decide_on: Literal["both", "user", "assistant", "either"] = "both"
    sample_chars: int = field(default=600, metadata=spec(at_least(30)))
    min_letters: int = field(default=12, metadata=spec(at_least(0)))
    en_stopword_ratio: float = field(default=0.2, metadata=spec(between(0, 1)))
    # plain-ASCII text shorter than this without English words: undetermined
    short_ascii_letters: int = field(default=25, metadata=spec(at_least(0)))
    strip_code: bool = True
    keep_undetermined: bool = True
    seed: int = field(default=0, metadata=spec(SEED))


def bounded_sample(text: str, limit: int) -> str:
    """Up to `limit` characters taken from the start, middle and end, so cost is fixed but mixes are seen."""
    if len(text) <= limit:
        return text
    third = limit // 3
    mid = len(text) // 2 - third // 2
    return " ".join((text[:third], text[mid : mid + third], text[-third:]))


class Detector:
    """Language id on a bounded sample: exact script signals first, langdetect only when they can't decide."""

    def __init__(
        self,
        sample_chars: int = 600,
        min_letters: int = 12,
        en_stopword_ratio: float = 0.2,
        seed: int = 0,
        short_ascii_letters: int = 25,
    ) -> None:
        self.sample_chars = sample_chars
        self.min_letters = min_letters
        self.en_stopword_ratio = en_stopword_ratio
        self.short_ascii_letters = short_ascii_letters
        self.seed = seed
        self.calls = Counter[str]()  # which path decided, for benchmarks and the report

    def detect(self, text: str) -> str | None:
        """A folded language code, or None when there is too little text to tell."""
        sample = bounded_sample(text, self.sample_chars)
        fast = self._fast(sample)
        if fast is not None:
            self.calls["fast"] += 1
            return fast or None
        self.calls["langdetect"] += 1
        return self._langdetect(sample)

    def _fast(self, sample: str) -> str | None:
        """A code, "" for too little text, or None to ask langdetect."""
        if sample.isascii():
            words = _ASCII_WORD_RE.findall(sample.lower())
            letters = sum(map(len, words))
            if letters < self.min_letters:
                return ""
            stop = sum(w in _EN_STOP for w in words)
            if len(words) >= 4 and stop >= self.en_stopword_ratio * len(words):
                return "en"
            # a few plain-ASCII words ("Paris, France", "Red") are noise to langdetect: too little to tell
            return "" if letters < self.short_ascii_letters else None
        counts = {name: len(rx.findall(sample)) for name, rx in _SCRIPTS}
        letters = sum(ch.isalpha() for ch in sample)
        if letters < self.min_letters // 3:
            return ""
        cjk = counts["han"] + counts["kana"]  # Japanese mixes kanji and kana
        if cjk >= 0.9 * letters:
            return "ja" if counts["kana"] >= 0.05 * cjk else "zh"
        words = _ASCII_WORD_RE.findall(sample.lower())
        if sum(map(len, words)) >= 0.97 * letters and len(words) >= 4:
            # English with an emoji, a curly quote or a café: the same function-word test as plain ASCII
            if sum(w in _EN_STOP for w in words) >= self.en_stopword_ratio * len(words):
                return "en"
        script, n = max(counts.items(), key=lambda kv: kv[1])
        if n < 0.9 * letters:
            return None  # Latin with accents, or scripts mixed (langdetect then follows the Latin part)
        return _SCRIPT_LANG.get(script)

    def _langdetect(self, sample: str) -> str | None:
        from langdetect.detector_factory import DetectorFactory, init_factory
        from langdetect.lang_detect_exception import LangDetectException

        init_factory()
        from langdetect.detector_factory import _factory

        DetectorFactory.seed = self.seed
        detector = _factory.create()
        detector.append(sample)
        try:
            return fold(detector.detect())
        except LangDetectException:
            return None


def side_texts(conv: Conversation, strip_code: bool) -> dict[str, str]:
    """The user text and the assistant text, with fenced code removed (code is not a natural language)."""
    out = {}
    for role in ("user", "assistant"):
        text = "\n".join(m.content for m in conv.turns if m.role == role)
        out[role] = _FENCE_RE.sub(" ", text) if strip_code else text
    return out


class Language(FilterStep):
    """Drop conversations whose deciding side(s) are in another language; reason is the language found."""

    name = "language"

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.keep = frozenset(fold(lang) for lang in cfg.languages)
        self.detector = Detector(cfg.sample_chars, cfg.min_letters, cfg.en_stopword_ratio, cfg.seed,
                                 cfg.short_ascii_letters)
        self.languages: Counter[str] = Counter()  # the language mix (user side) of everything examined

    def apply(self, conv: Conversation) -> Conversation | Drop:
        cfg = self.cfg
        texts = side_texts(conv, cfg.strip_code)
        sides = ("user", "assistant") if cfg.decide_on in ("both", "either") else (cfg.decide_on,)
        found = {side: self.detector.detect(texts[side]) for side in sides}
        self.languages[found.get("user") or found.get("assistant") or "undetermined"] += 1
        decided = {s: lang for s, lang in found.items() if lang is not None}
        if not decided:
            return conv if cfg.keep_undetermined else Drop("undetermined", "too little text to identify")
        ok = [lang in self.keep for lang in decided.values()]
        if all(ok) or (cfg.decide_on == "either" and any(ok)):
            return conv
        bad = next(lang for lang in decided.values() if lang not in self.keep)
        return Drop(bad, ", ".join(f"{s}={lang}" for s, lang in sorted(found.items())))
