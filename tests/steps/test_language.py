from __future__ import annotations

import pytest

from sft_builder.steps.base import Drop
from sft_builder.steps.language import Detector, Language, LanguageConfig, bounded_sample

from .helpers import conv

EN = "The quick brown fox jumps over the lazy dog because it wants to see what is on the other side."
ZH = "光合作用是植物利用阳光、水和二氧化碳制造养分并释放氧气的过程。没有它，大多数生物都无法获得食物。"
JA = "日本の桜の季節について教えてください。東京では三月の終わりから四月の初めにかけて満開になります。"
RU = "Расскажи, пожалуйста, как правильно заваривать зелёный чай, чтобы он не горчил и был вкусным."
DE = "Kannst du mir bitte erklären, wie man im Winter Zimmerpflanzen richtig gießt und pflegt?"


@pytest.mark.parametrize(
    ("text", "lang", "path"),
    [
        (EN, "en", "fast"),
        (ZH, "zh", "fast"),
        (JA, "ja", "fast"),
        (RU, "ru", "langdetect"),
        (DE, "de", "langdetect"),
    ],
)
def test_detector(text: str, lang: str, path: str) -> None:
    d = Detector()
    assert d.detect(text) == lang
    assert d.calls[path] == 1


def test_too_little_text_is_undetermined() -> None:
    assert Detector().detect("ok") is None
    assert Detector().detect("12345 67 -- ??") is None


def test_langdetect_is_deterministic_across_instances() -> None:
    text = "Ciao, come stai? Oggi il tempo è bello e andiamo al mare con gli amici."
    assert len({Detector(seed=3).detect(text) for _ in range(3)}) == 1


def test_bounded_sample_has_fixed_size_and_sees_the_middle() -> None:
    text = "a" * 5000 + "MIDDLE" + "b" * 5000
    s = bounded_sample(text, 600)
    assert len(s) <= 602 and "MIDDLE" in s


def test_step_drops_other_language_with_its_code() -> None:
    step = Language(LanguageConfig(languages=("en",)))
    out = step.apply(conv(ZH, ZH))
    assert isinstance(out, Drop) and out.reason == "zh"
    assert not isinstance(step.apply(conv(EN, EN)), Drop)
    assert step.languages == {"zh": 1, "en": 1}


def test_decide_on_both_vs_user() -> None:
    mixed = conv(EN, DE)
    assert isinstance(Language(LanguageConfig(decide_on="both")).apply(mixed), Drop)
    assert not isinstance(Language(LanguageConfig(decide_on="user")).apply(mixed), Drop)
    assert not isinstance(Language(LanguageConfig(decide_on="either")).apply(mixed), Drop)


def test_code_answer_does_not_decide() -> None:
    c = conv(EN, "```python\ndef f(x):\n    return sorted(x, key=len)\n```")
    assert not isinstance(Language(LanguageConfig()).apply(c), Drop)


def test_chinese_kept_when_configured() -> None:
    assert not isinstance(Language(LanguageConfig(languages=("zh-cn",))).apply(conv(ZH, ZH)), Drop)


def test_english_with_a_few_non_ascii_characters_takes_the_fast_path() -> None:
    d = Detector()
    assert d.detect("🚀 Ready for takeoff! Explore the world beyond your café and what is waiting there.") == "en"
    assert d.calls == {"fast": 1}
    assert Detector().detect("Où est la gare? Je voudrais acheter un billet pour Paris, s'il vous plaît.") == "fr"
