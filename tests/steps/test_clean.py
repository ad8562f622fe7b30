from __future__ import annotations

from sft_builder.sources.base import Rejected
from sft_builder.steps.base import Drop
from sft_builder.steps.clean import Clean, CleanConfig, looks_like_html

from .helpers import conv

SCRAPED = (
    '<div class="markdown prose w-full"><p>Use <strong>sorted</strong>:</p><pre><div class="bg-black">'
    '<div class="flex"><span>python</span><button>Copy code</button></div><div><code class="language-python">'
    "xs = sorted(xs)\nprint(xs &lt; ys)\n</code></div></div></pre><ol><li>one</li><li>two</li></ol></div>"
)


def test_scraped_html_becomes_markdown_without_copy_code() -> None:
    out = Clean(CleanConfig()).apply(conv("How do I sort?", SCRAPED))
    assert not isinstance(out, Drop)
    text = out.messages[1].content
    assert "<" not in text.replace("xs < ys", "")
    assert "Copy code" not in text
    assert "```python\nxs = sorted(xs)" in text
    assert "**sorted**" in text and "1. one" in text


def test_html_kept_when_disabled_for_code_sources() -> None:
    html = "<html><body><p>Hello</p></body></html>"
    out = Clean(CleanConfig(html_to_markdown=False)).apply(conv("Make a page", html))
    assert out.messages[1].content == html  # type: ignore[union-attr]


def test_html_inside_code_fence_is_not_scraped_markup() -> None:
    assert not looks_like_html("Here:\n```html\n<p>hi</p>\n```")
    assert looks_like_html("<p>hi</p>")


def test_page_counter_unicode_and_whitespace() -> None:
    c = conv("1 / 1Explain\u00a0NFC please  \n\n\n\nthanks\u200b", "cafe\u0301 is fine   ")
    out = Clean(CleanConfig()).apply(c)
    assert out.messages[0].content == "Explain NFC please\n\nthanks"  # type: ignore[union-attr]
    assert out.messages[1].content == "caf\u00e9 is fine"  # type: ignore[union-attr]


def test_a_ratio_in_prose_is_not_a_page_counter() -> None:
    out = Clean(CleanConfig()).apply(conv("3 / 2 is more than one, right?", "Yes, 1.5."))
    assert not isinstance(out, Drop) and out.messages[0].content.startswith("3 / 2")


def test_empty_turn_removed_with_its_partner() -> None:
    c = conv("First question", "First answer", "Second question", "Copy code")
    step = Clean(CleanConfig())
    out = step.apply(c)
    assert [m.content for m in out.messages] == ["First question", "First answer"]  # type: ignore[union-attr]
    assert step.changes["empty_turn_removed"] == 1


def test_nothing_left_is_dropped_with_reason_and_provenance() -> None:
    items = list(Clean(CleanConfig()).run([conv("1 / 1", "Copy code", cid="x", line=7)]))
    assert len(items) == 1 and isinstance(items[0], Rejected)
    r = items[0]
    assert (r.step, r.reason, r.line, r.record["id"]) == ("clean", "empty_after_clean", 7, "x")


def test_untouched_conversation_is_the_same_object() -> None:
    c = conv("Plain question", "Plain answer")
    assert Clean(CleanConfig()).apply(c) is c


def test_user_pasted_html_is_left_alone() -> None:
    html = "<div><p>Why is this not centered?</p></div>"
    out = Clean(CleanConfig()).apply(conv(html, SCRAPED))
    assert out.messages[0].content == html  # type: ignore[union-attr]
    assert "<div" not in out.messages[1].content  # type: ignore[union-attr]
