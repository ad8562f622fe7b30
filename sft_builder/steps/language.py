"""The `language` step: keep conversations whose user and assistant turns are in the configured languages,
and documents whose prose is.

A verdict is made only on natural-language text. Each turn is first reduced to its prose: fenced and inline
code, URLs, HTML tags and lines that look like code or formulas are removed, and a turn with too little
prose left ("Please continue", a bare link, "2+2=4") is skipped. A side (user or assistant) with no prose
left is undecided, and the other side decides; a conversation with no decided side is kept and counted.

Cheap exact signals decide most text: the script of the words (kana means Japanese, Hangul Korean, Han
Chinese, ...) and, for Latin script, the share of common English words. langdetect (seeded, so results
are deterministic) is asked only about the rest, and only on enough words: its verdict on a few words of
Latin script is noise ("Formulate a chemical formula" reads as Romanian), so a short text it would call
non-English stays undecided, as does any verdict below `min_confidence`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from crystalmix.core.config import SEED, at_least, between, non_empty, spec
from crystalmix.core.records import Conversation
from sft_builder.steps.base import Drop, FilterStep

if TYPE_CHECKING:
    from langdetect.detector_factory import DetectorFactory

UNDECIDED = "undecided"

_FENCE_RE = re.compile(r"(```|~~~).*?(?:\1|\Z)", re.DOTALL)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_URL_RE = re.compile(r"(?:https?://|ftp://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.]+|\S+\.(?:com|org|net|io)/\S*", re.I)
# what every match of `_URL_RE` contains (`maybe_url`): a cheap look that spares the costly one on most prose
_URL_HINT_RE = re.compile(r"://|www\.|@|\.(?:com|org|net|io)/", re.I)
_ENTITY_RE = re.compile(r"&[a-z]+;|&#\d+;")
# A line that reads as code, markup or a formula rather than prose: an assignment or comparison, a
# statement or block end, a call `name(`, snake_case or dotted names, an HTML tag, a code keyword opening
# the line, a Python/Ruby block header, or an SQL clause (upper case). The patterns a line start anchors,
# then one per character a pattern cannot match without, tried only on lines that have it (as one regex,
# 30 us a line).
_CODE_START_RE = re.compile(
    r"\s*(?:[{}]"
    r"|(?:def|class|import|#include|#define|public|private|static|var|let|const|func|fn|package)\s+\w"
    r"|from\s+[\w.]+\s+import|@\w+|//|/\*|\*/|<\?|\$\s"
    r"|(?:if|elif|else|for|while|with|try|except|finally|switch|case)\b.*:$"
    r"|(?:return|end|break|pass|yield)\b\s*[\w\[\]().'\"-]*$"
    r"|(?:SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|(?:CREATE|ALTER|DROP)\s+(?:TABLE|INDEX|VIEW)"
    r"|FROM|WHERE|(?:(?:INNER|LEFT|RIGHT|FULL|OUTER|CROSS)\s+)*JOIN|(?:ORDER|GROUP)\s+BY|HAVING|LIMIT)\b)"
)
_CODE_EQ_RE = re.compile(r"[=<>]=|=>|[^\s=!<>]=[^=]|\s=\s")
_CODE_CALL_RE = re.compile(r"\b[A-Za-z_]\w*\((?!s\))|\b[a-z]\w*\.[a-z]\w*\(")
_CODE_SNAKE_RE = re.compile(r"\b[a-z]+_[a-z0-9_]+\b")
_CODE_DOTTED_RE = re.compile(r"\b\w+\.\w+\.\w+")
_CODE_TAG_RE = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>|<!")
# What three of them cannot match without, found fast from a literal (a "(" after a word character, a "."
# between two, a "_" after a lower-case letter): the full pattern scans a prose paragraph 20 times slower.
_CALL_GATE_RE = re.compile(r"\((?<=\w\()")
_DOTTED_GATE_RE = re.compile(r"\.(?<=\w\.)\w")
_SNAKE_GATE_RE = re.compile(r"_(?<=[a-z]_)[a-z0-9_]")
_NON_LATIN_RE = re.compile(
    r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0750-\u077f\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff"
    r"\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
_HIGH_RE = re.compile(r"[\u0e00-\U0010ffff]+")  # from Thai on: a letter weighs 4 in `weight`
_ASCII_NON_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())
_SEGMENT_RE = re.compile(r"[\n,;:•·|/]|\s[-–—*]\s")
_LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+")
_EN_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")
# (name, token pattern, characters per word: 0 means tokens are words, as in space-separated scripts)
_SCRIPTS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    ("kana", re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]+"), 1.5),
    ("han", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]+"), 1.5),
    ("hangul", re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+"), 0),
    ("cyrillic", re.compile(r"[\u0400-\u04ff]+"), 0),
    ("arabic", re.compile(r"[\u0600-\u06ff\u0750-\u077f]+"), 0),
    ("greek", re.compile(r"[\u0370-\u03ff]+"), 0),
    ("hebrew", re.compile(r"[\u0590-\u05ff]+"), 0),
    ("thai", re.compile(r"[\u0e00-\u0e7f]+"), 5.0),
    ("devanagari", re.compile(r"[\u0900-\u097f]+"), 0),
)
# any letter of those scripts: a sample with none (English with curly quotes) skips the nine searches
_ANY_SCRIPT_RE = re.compile("[" + "".join(rx.pattern[1:-2] for _, rx, _ in _SCRIPTS) + "]")
_CJK = ("kana", "han", "hangul", "thai")  # scripts where one letter carries about a word's weight of text
# The language of a script used by one language; the shared ones ask langdetect, this is its fallback.
_SCRIPT_LANG = {"hangul": "ko", "greek": "el", "hebrew": "he", "thai": "th", "kana": "ja", "han": "zh",
                "cyrillic": "ru", "arabic": "ar", "devanagari": "hi"}
# Common English words: function words, numbers and the verbs and nouns of typical instructions. Words that
# are as common in German, French, Spanish or Italian ("die", "also", "come", "son") are left out.
_EN_WORDS = frozenset(
    """
a about above after again all also am an and any are as at be because been before being below between
both but by can could did do does doing don't down during each few for from further had has have having
he her here hers him his how i i'm if in into is isn't it it's its just let's me more most my myself no
nor not now of off on once only or other our ours out over own same she should so some such than that
the their them then there these they this those through to too under until up very was we were what
when where which while who whom why will with would you your yours it's that's there's what's can't
won't didn't doesn't
one two three four five six seven eight nine ten eleven twelve hundred thousand first second third
please thanks thank hello hi yes okay sure
write make create give explain describe list find generate tell show help need want know think like
use using used get got go going continue summarize rewrite translate answer question example examples
following given provide suggest compare calculate identify classify convert design build change add
remove keep try look see say said read take work works working new good best better many much every
something anything everything someone people time way day year years world thing things sentence word
words text article story poem paragraph code program function data file list table number numbers
""".split()
)
_FOLD = {"zh-cn": "zh", "zh-tw": "zh"}
_VERDICTS_KEPT = 4096  # langdetect verdicts a detector remembers (texts are bounded samples: a few MB at most)


def fold(lang: str) -> str:
    """One code per language (langdetect's zh-cn/zh-tw are both Chinese)."""
    return _FOLD.get(lang.lower(), lang.lower())


@dataclass(frozen=True, slots=True)
class LanguageConfig:
    """Settings of the language step. `decide_on` says which side's language must be kept.

    `min_letters`: a turn with less prose than this (a CJK character counts as 4 letters) is skipped.
    `min_words`: Latin-script prose with fewer words is never called non-English (undecided instead).
    `min_confidence`: a langdetect verdict below this probability is undecided.
    """

    enabled: bool = True
    languages: tuple[str, ...] = field(default=("en",), metadata=spec(non_empty))
    decide_on: Literal["both", "user", "assistant", "either"] = "both"
    sample_chars: int = field(default=600, metadata=spec(at_least(30)))
    min_letters: int = field(default=16, metadata=spec(at_least(0)))
    min_words: int = field(default=8, metadata=spec(at_least(1)))
    en_stopword_ratio: float = field(default=0.2, metadata=spec(between(0, 1)))
    min_confidence: float = field(default=0.9, metadata=spec(between(0, 1)))
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


def code_line(line: str) -> bool:
    """True when a stripped line reads as code, markup or a formula (see `_CODE_START_RE`)."""
    return bool(
        line.endswith((";", "{", "}")) or "->" in line or "::" in line or _CODE_START_RE.match(line)
        or ("=" in line and _CODE_EQ_RE.search(line))
        or (_CALL_GATE_RE.search(line) and _CODE_CALL_RE.search(line))
        or (_SNAKE_GATE_RE.search(line) and _CODE_SNAKE_RE.search(line))
        or (_DOTTED_GATE_RE.search(line) and _CODE_DOTTED_RE.search(line))
        or ("<" in line and _CODE_TAG_RE.search(line))
    )


def maybe_url(text: str) -> bool:
    """False when `_URL_RE` cannot match: none of its literals (ASCII text: in C on the lower-cased text)."""
    if text.isascii():  # re.I also folds a few non-ASCII letters (the Kelvin sign is a k): the regex for those
        low = text.lower()
        return ("://" in low or "www." in low or "@" in low or ".com/" in low or ".org/" in low or ".net/" in low
                or ".io/" in low)
    return _URL_HINT_RE.search(text) is not None


def _lines(text: str) -> tuple[list[str], int, int]:
    """The prose lines of `text`, and how many characters are in code-looking lines and in prose lines."""
    keep: list[str] = []
    code = kept = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if code_line(stripped) and not _NON_LATIN_RE.search(stripped):  # code is Latin script
            code += len(stripped)
        elif weight(stripped) >= 0.6 * len(stripped.replace(" ", "")):
            keep.append(stripped)
            kept += len(stripped)
        # else: numbers and symbols, a formula: not a language and not code either
    return keep, code, kept


def looks_like_code(text: str) -> bool:
    """True when, outside fenced code, code-looking lines (a program, a stylesheet, markup) outweigh prose."""
    _, code, kept = _lines(_FENCE_RE.sub("\n", text) if "`" in text or "~~~" in text else text)
    return code > kept


def prose(text: str, strip_code: bool = True) -> str:
    """The natural-language part of a turn: no code (fenced, inline or code-looking lines), URLs or markup.

    A turn that is mostly code-looking lines (an unfenced program or HTML page) has no prose at all: the
    comments and strings inside code are not what the conversation is written in.
    """
    if strip_code and ("`" in text or "~~~" in text):
        text = _INLINE_CODE_RE.sub(" ", _FENCE_RE.sub("\n", text))
    if maybe_url(text):
        text = _URL_RE.sub(" ", text)
    if "&" in text:
        text = _ENTITY_RE.sub(" ", text)
    if not strip_code:
        return text
    keep, code, kept = _lines(text)
    if code > kept:
        # mostly code: its Latin-script comments and strings do not tell the conversation's language, but
        # a line in another script (a Chinese request above the code it quotes) still does
        keep = [line for line in keep if _NON_LATIN_RE.search(line)]
    return "\n".join(keep)


def weight(text: str) -> int:
    """Letters of prose, a CJK or Thai character counting as 4 (it carries about a word of meaning)."""
    n = len(text.encode("ascii", "ignore").translate(None, _ASCII_NON_LETTERS))  # ASCII letters, counted in C
    if not text.isascii():
        other = "".join(_NON_ASCII_RE.findall(text))
        n += sum(map(str.isalpha, other))
        high = "".join(_HIGH_RE.findall(other))
        if high:
            n += 3 * sum(map(str.isalpha, high))
    return n


def sentences(text: str) -> bool:
    """True when the text reads as sentences, not a list of names or single words (3+ words a segment)."""
    segments = [seg for seg in _SEGMENT_RE.split(text) if _LATIN_RE.search(seg)]
    words = sum(len(_LATIN_RE.findall(seg)) for seg in segments)
    return bool(segments) and words >= 3 * len(segments)


@lru_cache(maxsize=4)
def _factory(seed: int) -> DetectorFactory:
    """langdetect's profiles, loaded once per process and seed through its public API (no global state)."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)
    return factory


class Detector:
    """Language id of prose on a bounded sample: script and word signals first, langdetect only when needed."""

    def __init__(
        self,
        sample_chars: int = 600,
        min_words: int = 8,
        en_stopword_ratio: float = 0.2,
        seed: int = 0,
        min_confidence: float = 0.9,
    ) -> None:
        self.sample_chars = sample_chars
        self.min_words = min_words
        self.en_stopword_ratio = en_stopword_ratio
        self.min_confidence = min_confidence
        self.seed = seed
        self.calls = Counter[str]()  # which path decided, for benchmarks and the report
        # the texts handed to langdetect and the seconds they took, by why (`latin`: Latin-script prose with
        # too few common English words; a script's name: which of the languages writing it), for the bench
        self.fallback = Counter[str]()
        self.fallback_seconds: dict[str, float] = {}
        self.fallback_reused = 0  # texts whose verdict was remembered from an earlier run
        self._verdicts: dict[str, tuple[str, float] | None] = {}

    def detect(self, text: str) -> str | None:
        """A folded language code, or None when the text cannot tell (too short, or no confident verdict).

        `text` should already be prose (see `prose`); a long text is read on a bounded sample.
        """
        sample = bounded_sample(text, self.sample_chars)
        units: dict[str, float] = {}
        tokens: dict[str, list[str]] = {}
        latin = _LATIN_RE.findall(sample)
        units["latin"] = len(latin)
        if not sample.isascii() and _ANY_SCRIPT_RE.search(sample):
            for name, rx, per_word in _SCRIPTS:
                found = rx.findall(sample)
                if found:
                    tokens[name] = found
                    units[name] = sum(map(len, found)) / per_word if per_word else len(found)
        if not any(units.values()):
            self.calls["empty"] += 1
            return None
        others = [kv for kv in units.items() if kv[0] != "latin" and kv[1]]
        if others:
            script, n = max(others, key=lambda kv: kv[1])
            if n >= 0.5 * units["latin"]:  # a third of the words or more: a quoted English phrase stays a quote
                return self._script(script, tokens)
        return self._latin(latin, sample)

    def _script(self, script: str, tokens: dict[str, list[str]]) -> str | None:
        """Text mostly in one non-Latin script: certainly not English; which language the script says."""
        self.calls["script"] += 1
        if script in ("han", "kana"):
            kana = "".join(tokens.get("kana", ()))
            hiragana = sum(ch <= "\u309f" for ch in kana)
            cjk = len(kana) + sum(map(len, tokens.get("han", ())))
            # hiragana (the particles of a Japanese sentence), or mostly katakana: Japanese; a Chinese text
            # quoting a few names in katakana (サカナクション) or dotting them with "・" stays Chinese
            return "ja" if hiragana >= 0.05 * cjk or len(kana) - hiragana >= 0.25 * cjk else "zh"
        if script in ("cyrillic", "arabic", "devanagari"):
            found = self._langdetect(" ".join(tokens[script]), script)
            if found is not None:
                return found[0]
        return _SCRIPT_LANG[script]

    def _latin(self, words: list[str], text: str | None = None) -> str | None:
        common = sum(map(_EN_WORDS.__contains__, _EN_WORD_RE.findall(" ".join(words).lower())))
        if len(words) >= 3 and common >= self.en_stopword_ratio * len(words):
            self.calls["english_words"] += 1
            return "en"
        if len(words) < self.min_words:
            self.calls["too_few_words"] += 1
            return None  # a few words are noise to any detector: never enough to call a language
        if not sentences(" ".join(words) if text is None else text):
            self.calls["word_list"] += 1
            return None  # "Canada, Mexico, Brazil": names and lists are in no language in particular
        self.calls["langdetect"] += 1
        found = self._langdetect(" ".join(words), "latin")
        if found is None:
            return None
        lang, prob = found
        if lang != "en" and prob < self.min_confidence:
            self.calls["uncertain"] += 1
            return None
        return lang

    def _langdetect(self, text: str, why: str) -> tuple[str, float] | None:
        """langdetect's best guess and its probability; a text seen before gets its verdict again (a copy is
        common before dedup, and a seeded verdict depends on the text alone), with no second run."""
        if text in self._verdicts:
            self.fallback_reused += 1
            return self._verdicts[text]
        if len(self._verdicts) >= _VERDICTS_KEPT:
            self._verdicts.clear()
        found = self._verdicts[text] = self._run_langdetect(text, why)
        return found

    def _run_langdetect(self, text: str, why: str) -> tuple[str, float] | None:
        from langdetect.lang_detect_exception import LangDetectException

        start = time.perf_counter()
        detector = _factory(self.seed).create()
        detector.append(text)
        try:
            best = detector.get_probabilities()
        except LangDetectException:
            best = []
        self.fallback[why] += 1
        self.fallback_seconds[why] = self.fallback_seconds.get(why, 0.0) + time.perf_counter() - start
        if not best or best[0].lang == "unknown":
            return None
        return fold(best[0].lang), float(best[0].prob)


def side_prose(texts: Iterable[str], cfg: LanguageConfig) -> str:
    """The prose of one side: turns with enough of it, until a sample's worth is collected."""
    out: list[str] = []
    size = 0
    for text in texts:
        p = prose(bounded_sample(text, 4 * cfg.sample_chars), cfg.strip_code)
        if weight(p) < cfg.min_letters:
            continue  # "Please continue", a link, a number: nothing to identify
        out.append(p)
        size += len(p)
        if size >= cfg.sample_chars:
            break
    return "\n".join(out)


class Language(FilterStep):
    """Drop conversations whose deciding side(s) are in another language; reason is the language found.

    With `decide_on: both` every side that can be decided must be in `languages`; a side with no prose
    (a bare link, "continue", code only) is left to the other. Conversations with no decided side are kept
    and counted as the change ``undecided`` (``keep_undetermined: false`` drops them instead).
    """

    name = "language"

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.keep = frozenset(fold(lang) for lang in cfg.languages)
        self.detector = Detector(cfg.sample_chars, cfg.min_words, cfg.en_stopword_ratio, cfg.seed,
                                 cfg.min_confidence)
        self.languages: Counter[str] = Counter()  # the language mix (user side first) of everything examined

    def apply(self, conv: Conversation) -> Conversation | Drop:
        text = conv.text
        if text is not None:  # a document is one side: its prose decides, whatever `decide_on` says
            verdict = self.verdict_one(text)
            return conv if verdict is None else verdict
        by_role: dict[str, list[str]] = {"user": [], "assistant": []}
        for m in conv.turns:
            by_role[m.role].append(m.content)
        verdict = self.verdict(by_role["user"], by_role["assistant"])
        return conv if verdict is None else verdict

    def verdict_one(self, text: str) -> Drop | None:
        """A `Drop`, or None to keep: the decision on a document's prose (its code is left out as for a turn)."""
        lang = self.detector.detect(side_prose((text,), self.cfg))
        self.languages[lang or "unknown"] += 1
        if lang is None:
            self.changes[UNDECIDED] += 1
            return None if self.cfg.keep_undetermined else Drop(UNDECIDED, "too little prose to identify")
        return None if lang in self.keep else Drop(lang, f"text={lang}")

    def verdict(self, user: Sequence[str], assistant: Sequence[str]) -> Drop | None:
        """A `Drop`, or None to keep: the decision on the user and the assistant turns' texts."""
        cfg = self.cfg
        sides = ("user", "assistant") if cfg.decide_on in ("both", "either") else (cfg.decide_on,)
        texts = {"user": user, "assistant": assistant}
        found = {side: self.detector.detect(side_prose(texts[side], cfg)) for side in sides}
        if cfg.decide_on in ("user", "assistant") and found[cfg.decide_on] is None:
            # the configured side has no prose to tell: the other side decides
            other = "assistant" if cfg.decide_on == "user" else "user"
            found[other] = self.detector.detect(side_prose(texts[other], cfg))
        self.languages[found.get("user") or found.get("assistant") or "unknown"] += 1
        decided = {s: lang for s, lang in found.items() if lang is not None}
        if not decided:
            self.changes[UNDECIDED] += 1
            return None if cfg.keep_undetermined else Drop(UNDECIDED, "too little prose to identify")
        ok = [lang in self.keep for lang in decided.values()]
        if all(ok) or (cfg.decide_on == "either" and any(ok)):
            return None
        bad = next(lang for lang in decided.values() if lang not in self.keep)
        return Drop(bad, ", ".join(f"{s}={lang or UNDECIDED}" for s, lang in sorted(found.items())))
