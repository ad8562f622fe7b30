"""The MediaWiki subset converter used for Rosetta Code descriptions."""

from __future__ import annotations

from sft_builder.sources.mediawiki import normalize_spaces, to_text


def test_links_quotes_templates_and_entities() -> None:
    src = ("{{Wikipedia}}The '''Levenshtein distance''' is a [[wp:string metric|metric]] "
           "(see [[Longest common subsequence]] and [[wp:Edit distance]]).&nbsp; &nbsp;Done &amp; dusted.")
    assert to_text(src) == ("The Levenshtein distance is a metric (see Longest common subsequence and "
                            "Edit distance). Done & dusted.")


def test_headings_lists_and_preformatted_lines() -> None:
    src = (";Task:\nDo it.\n\n{{task heading|Related tasks}}\n* &nbsp; one\n** two\n# first\n# second\n"
           "::# nested\n   X  bottles\n== Notes ==\n<br>text<hr>")
    assert to_text(src) == ("Task:\nDo it.\n\nRelated tasks:\n- one\n  - two\n1. first\n2. second\n"
                            "    1. nested\n   X  bottles\nNotes\n\ntext")


def test_tags_scripts_math_and_code_blocks() -> None:
    src = ("the 2<sup>nd</sup> door, x<sup>2</sup>, F<sub>n-1</sub>, <big>big</big> <!-- hidden -->"
           "<math>a^2</math>\n<lang python>x = '''keep'''\n</lang>\n<pre>a &lt; b</pre>")
    assert to_text(src) == ("the 2nd door, x^2, F_(n-1), big a^2\n\n```python\nx = '''keep'''\n```\n\na < b")


def test_external_links_and_nbsp() -> None:
    assert to_text("[http://x.org/a Page] and [http://y.org]") == "Page (http://x.org/a) and http://y.org"
    assert normalize_spaces("a\u00a0b\u202fc") == "a b c"
