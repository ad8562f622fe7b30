from __future__ import annotations

import re

import pytest

from sft_builder.steps.base import Drop
from sft_builder.steps.language import (
    Detector,
    Language,
    LanguageConfig,
    bounded_sample,
    code_line,
    maybe_url,
    prose,
    sentences,
    side_prose,
    weight,
)

from .helpers import conv

EN = "The quick brown fox jumps over the lazy dog because it wants to see what is on the other side."
ZH = "光合作用是植物利用阳光、水和二氧化碳制造养分并释放氧气的过程。没有它，大多数生物都无法获得食物。"
JA = "日本の桜の季節について教えてください。東京では三月の終わりから四月の初めにかけて満開になります。"
RU = "Расскажи, пожалуйста, как правильно заваривать зелёный чай, чтобы он не горчил и был вкусным."
DE = "Kannst du mir bitte erklären, wie man im Winter Zimmerpflanzen richtig gießt und pflegt?"
ANSWERS = (
    "The second part of the story follows the knight into the forest, where he meets an old woman.",
    "She gives him a map and tells him the way to the castle on the hill beyond the river.",
    "At the castle he finds the gate open and walks into the great hall alone, sword in hand.",
)


@pytest.mark.parametrize(
    ("text", "lang", "path"),
    [
        (EN, "en", "english_words"),
        (ZH, "zh", "script"),
        (JA, "ja", "script"),
        (RU, "ru", "script"),
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


def test_langdetect_is_deterministic_and_leaves_the_global_seed_alone() -> None:
    from langdetect import DetectorFactory

    before = DetectorFactory.seed
    text = "Ciao, come stai? Oggi il tempo è bello e andiamo al mare con gli amici."
    assert {Detector(seed=3).detect(text) for _ in range(3)} == {"it"}
    assert DetectorFactory.seed == before


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


def test_english_with_a_few_non_ascii_characters_is_english() -> None:
    d = Detector()
    assert d.detect("🚀 Ready for takeoff! Explore the world beyond your café and what is waiting there.") == "en"
    assert d.calls == {"english_words": 1}
    assert Detector().detect("Où est la gare? Je voudrais acheter un billet pour Paris, s'il vous plaît.") == "fr"


# -- issue 10.3: English conversations that were dropped -------------------------------------------------------
EGGS = (
    "Twelve eggs - two dropped eggs = ten eggs\nTen eggs - four eggs for breakfast = six eggs\n"
    "Six eggs + twelve new eggs = eighteen eggs"
)
URLS = (
    "https://www.google.com/maps/place/Snowdon,+Caernarfon+LL55+4UL/@53.0685,-4.0762,15z",  # was Welsh
    "https://www.youtube.com/watch?v=kCc8FmEb1nY%26list%3DPLAqhIrjkxbuWI23v9cThsA9GvCAUhRvKZ",  # was German
)


def test_please_continue_three_times_is_decided_by_the_english_answers() -> None:
    step = Language(LanguageConfig())
    c = conv("Please continue", ANSWERS[0], "Please continue", ANSWERS[1], "Please continue", ANSWERS[2])
    assert step.apply(c) is c
    assert step.changes["undecided"] == 0 and step.languages == {"en": 1}  # the assistant side decided


def test_an_arithmetic_word_problem_is_not_norwegian() -> None:
    c = conv(EGGS, "You have eighteen eggs left, because you started with twelve and bought twelve more.")
    assert Language(LanguageConfig()).apply(c) is c
    assert prose(EGGS) == ""


@pytest.mark.parametrize("url", URLS)
def test_a_prompt_that_is_only_a_url_is_not_a_language(url: str) -> None:
    assert Detector().detect(side_prose([url], LanguageConfig())) is None
    step = Language(LanguageConfig())
    c = conv(url, "I cannot open links, but paste the text of the page here and I will summarize it for you.")
    assert step.apply(c) is c


def test_nothing_to_decide_on_is_kept_and_counted() -> None:
    step = Language(LanguageConfig())
    c = conv(URLS[0], "42", "Please continue", "```python\nprint(42)\n```")
    assert step.apply(c) is c
    assert step.changes == {"undecided": 1} and step.languages == {"unknown": 1}
    strict = Language(LanguageConfig(keep_undetermined=False)).apply(c)
    assert isinstance(strict, Drop) and strict.reason == "undecided"


def test_the_assistant_side_decides_when_the_user_side_cannot() -> None:
    out = Language(LanguageConfig()).apply(conv("Please continue", ZH))
    assert isinstance(out, Drop) and out.reason == "zh" and out.detail == "assistant=zh, user=undecided"
    user_only = Language(LanguageConfig(decide_on="user")).apply(conv("https://example.com/a/b", ZH))
    assert isinstance(user_only, Drop) and user_only.reason == "zh"


def test_a_short_latin_text_is_never_called_foreign() -> None:
    for text in ("Formulate a chemical formula\n\nCalcium oxide", "Suggest a good restaurant.\n\nLos Angeles, CA",
                 "Generate 10 random integers between 0 - 100."):
        assert Detector().detect(side_prose([text], LanguageConfig())) in ("en", None)


def test_a_list_of_names_is_not_a_language() -> None:
    countries = "- Canada\n- Mexico\n- Brazil\n- Argentina\n- Chile\n- Colombia\n- Venezuela\n- Cuba\n- Peru"
    assert not sentences(countries)
    assert Detector().detect(side_prose([countries], LanguageConfig())) is None
    assert Detector().detect("Persistent, dogged, determined, resolute, steadfast, unwavering, tenacious") is None


def test_an_uncertain_langdetect_verdict_does_not_drop() -> None:
    cfg = LanguageConfig(min_confidence=1.01)  # no verdict is ever that sure
    assert Language(cfg).apply(conv(DE, DE)) is not None
    assert Language(cfg).verdict([DE], [DE]) is None


def test_prose_leaves_out_code_urls_markup_and_formulas() -> None:
    text = (
        "Here is how to sort the list in place.\n"
        "```python\nxs.sort()\n```\n"
        "Call `sorted()` instead if you need a copy, see https://docs.python.org/3/howto/sorting.html\n"
        "result = sorted(xs, key=len)\n"
        "<div class=\"note\">Hello</div>\n"
        "2 + 2 = 4\n"
        "1234 5678"
    )
    lines = prose(text).split("\n")
    assert lines == ["Here is how to sort the list in place.", "Call   instead if you need a copy, see"]


def test_an_unfenced_program_or_page_has_no_prose() -> None:
    program = "def get_max(a, b):\n    if a > b:\n        return a\n    else:\n        return b\n\nprint(get_max(3, 5))"
    page = "<html>\n<head>\n<title>Tag Cloud</title>\n</head>\n<body>\n<p>Lorem ipsum dolor sit amet</p>\n</body>"
    assert prose(program) == "" and prose(page) == ""


def test_chinese_around_code_or_formulas_is_still_chinese() -> None:
    d = Detector()
    assert d.detect(prose("编辑给定的代码以添加错误处理。\n\n输入：\ndef f(numbers):\n    s = 0\n    return s")) == "zh"
    assert d.detect(prose("求f(x) = x^2 - 4x + 6的导数。")) == "zh"
    assert d.detect(prose('计算句子"I want to go for a walk"中的单词数。')) == "zh"


def test_english_with_a_few_foreign_words_is_english() -> None:
    d = Detector()
    assert d.detect('The literal translation of "好领导" is "good leader" in most of the contexts.') == "en"
    assert d.detect("Write a blog post about which audience you would recommend the book to\n\n지금 번역하기") == "en"


# -- issue 14: the same verdicts, cheaper ---------------------------------------------------------------------
# The code-line test as one regex, as it was before it was split by the character each part needs (and
# with the SQL clauses added since).
ONE_REGEX = re.compile(
    r"[=<>]=|=>|->|::|[^\s=!<>]=[^=]|\s=\s|[;{}]\s*$|^\s*[{}]|\b[A-Za-z_]\w*\((?!s\))"
    r"|\b[a-z]+_[a-z0-9_]+\b|\b\w+\.\w+\.\w+|\b[a-z]\w*\.[a-z]\w*\("
    r"|</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>|<!"
    r"|^\s*(?:def|class|import|#include|#define|public|private|static|var|let|const|func|fn|package)\s+\w"
    r"|^\s*(?:from\s+[\w.]+\s+import|@\w+|//|/\*|\*/|<\?|\$\s)"
    r"|^\s*(?:if|elif|else|for|while|with|try|except|finally|switch|case)\b.*:$"
    r"|^\s*(?:return|end|break|pass|yield)\b\s*[\w\[\]().'\"-]*$"
    r"|^\s*(?:SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|(?:CREATE|ALTER|DROP)\s+(?:TABLE|INDEX|VIEW)"
    r"|FROM|WHERE|(?:(?:INNER|LEFT|RIGHT|FULL|OUTER|CROSS)\s+)*JOIN|(?:ORDER|GROUP)\s+BY|HAVING|LIMIT)\b",
)
LINES = (
    "x == y", "a => b", "p -> q", "std::vector", "x=1", "a = b", "return x;", "{", "} else {", "print(x)",
    "Call sorted(s) on it", "my_var is set", "os.path.join", "a.b.c", "obj.method(", "<div class=\"a\">", "<!DOCTYPE",
    "def f", "class A", "#include <x>", "from a.b import c", "@decorator", "// note", "/* c", "*/", "<?php", "$ ls",
    "if x > 0:", "else:", "return x", "end", "break", "The cat (s) sat.", "I saw 3.5 cats.", "e.g. this one",
    "Write a story about a cat.", "Is 2 < 3 and 5 > 4?", "a != b", "x <= y", "for each item: do it", "yield 3",
    "函数f(x) = x^2", "<br>", "Hello :: world", "re-do -> done", "ends with a brace }", "",
    "SELECT e name Employees", "INNER JOIN departments d", "UPDATE: the meeting moved", "Select the best one.",
)


@pytest.mark.parametrize("line", LINES)
def test_code_line_is_the_one_regex(line: str) -> None:
    assert code_line(line) == bool(ONE_REGEX.search(line))


def _weight_by_letter(text: str) -> int:
    return sum(4 if ch >= "\u0e00" else 1 for ch in text if ch.isalpha())


@pytest.mark.parametrize("text", ["", "Hi, world 42!", EN, ZH, JA, RU, DE, "x² + ½ Ⅻ ① ٣ é ß", "สวัสดี ครับ", "a_b\t\n"])
def test_weight_counts_letters_as_before(text: str) -> None:
    assert weight(text) == _weight_by_letter(text)


def test_fallback_to_langdetect_is_counted_by_why() -> None:
    d = Detector()
    for text in (EN, ZH, DE, RU):
        d.detect(text)
    assert d.fallback == {"latin": 1, "cyrillic": 1}
    assert set(d.fallback_seconds) == {"latin", "cyrillic"} and all(s > 0 for s in d.fallback_seconds.values())
    assert d.detect(DE) == "de" and d.fallback == {"latin": 1, "cyrillic": 1} and d.fallback_reused == 1


def test_a_chinese_text_quoting_japanese_names_is_chinese() -> None:
    artists = "这里有一些在日本流行的音乐艺术家的名字：宇多田光，椎名林檎，米津玄師，サカナクション，迈克尔・乔丹。"
    assert Detector().detect(artists) == "zh"
    assert Detector().detect("地下鉄サリン事件") == "ja"  # katakana a quarter of the letters: Japanese
    assert Detector().detect(JA) == "ja"


@pytest.mark.parametrize(("text", "url"), [
    ("See WWW.EXAMPLE.COM for more", True), ("mail me at a@b.org", True), ("Visit Example.COM/page today", True),
    ("ftp://host/file", True), ("A plain sentence. Nothing else.", False), ("Café au lait, s'il vous plaît.", False),
    ("site.\u0131o/page", True),  # a dotless i folds to i under re.I: non-ASCII text asks the regex
])
def test_maybe_url_is_false_only_without_a_url(text: str, url: bool) -> None:
    assert maybe_url(text) == url


def test_an_sql_query_left_unfenced_is_code_not_catalan() -> None:
    answer = ("SELECT Employee, AS departments.name, departments.name employees.name Department\nFROM employees\n"
              "JOIN departments ON employees.department_id = departments.id\nORDER BY AS employees.name;")
    assert prose(answer) == ""
    c = conv("Design a SQL query that lists all employees along with the names of their departments.", answer)
    assert Language(LanguageConfig()).apply(c) is c  # was dropped: langdetect read the first line as Catalan
