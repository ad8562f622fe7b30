from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pytest

from sft_builder.sources.base import Rejected
from sft_builder.steps.base import Drop
from sft_builder.steps.clean import Clean, CleanConfig, is_export_residue, looks_like_html

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


# -- issue 10.5: convert ShareGPT's web-export residue only, never content that is markup or code ---------------
MDN = Path(os.environ.get("CRYSTALMIX_REALDATA", Path(__file__).resolve().parents[3] / "shared" / "realdata"))
MDN = MDN / "code_documents" / "mdn-learning-area"
COPY_BUTTON = (  # the code-block header of ChatGPT's page as ShareGPT's export scraped it
    '<div class="flex items-center relative text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans '
    'justify-between rounded-t-md"><span>{lang}</span><button class="flex ml-auto gap-2"><svg '
    'stroke="currentColor" fill="none" stroke-width="2" viewBox="0 0 24 24" stroke-linecap="round" '
    'stroke-linejoin="round" class="h-4 w-4" height="1em" width="1em" xmlns="http://www.w3.org/2000/svg"><path '
    'd="M16 4h2a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2h2"></path><rect x="8" y="2" '
    'width="8" height="4" rx="1" ry="1"></rect></svg>Copy code</button></div>'
)
FAKE_CHATBOT = """<!DOCTYPE html>
<html>
<head>
  <title>Fake Chatbot</title>
  <style>
    .chat { display: none; position: fixed; bottom: 0; right: 15px; border: 3px solid #f1f1f1; }
    .markdown.prose p { margin: 0 0 1em; }
  </style>
</head>
<body>
  <button class="open-button" onclick="openChat()">Open Chat</button>
  <div class="chat" id="chat"><div class="markdown prose"><p>Hello! How can I help?</p></div>
    <textarea placeholder="Type message.." name="msg" required></textarea>
    <button type="submit" class="btn">Send</button>
  </div>
  <script>
    function openChat() { document.getElementById("chat").style.display = "block"; }
  </script>
</body>
</html>"""


def export(page_intro: str, code: str, lang: str) -> str:
    """An answer in the shape of ShareGPT's web export: wrapper, paragraphs, a list and a code block."""
    return (
        '<div class="markdown prose w-full break-words dark:prose-invert light">'
        f"<p>{page_intro}</p><ol><li><p>Save it as <code>index.html</code>.</p></li><li><p>Open it.</p></li></ol>"
        f'<pre><div class="bg-black mb-4 rounded-md">{COPY_BUTTON.format(lang=lang)}'
        f'<div class="p-4 overflow-y-auto"><code class="!whitespace-pre hljs language-{lang}">'
        f"{html.escape(code, quote=False)}</code></div></div></pre>"
        "<p>The <strong>style</strong> element holds the CSS.</p></div>"
    )


def mdn_files(*exts: str) -> list[Path]:
    if not MDN.is_dir():
        pytest.skip(f"{MDN} not present")
    return sorted(p for ext in exts for p in MDN.rglob(f"*.{ext}"))


def test_real_html_pages_as_answers_are_never_rewritten() -> None:
    pages = mdn_files("html")
    assert len(pages) >= 50
    step = Clean(CleanConfig())
    for p in pages + mdn_files("css", "js"):
        page = p.read_text(encoding="utf-8")
        if not page.strip():
            continue  # three empty starter scripts
        for answer in (page, f"Here is the page:\n\n{page}", f"Sure!\n\n```html\n{page}\n```"):
            out = step.apply(conv("Write the page for me, please.", answer))
            assert not isinstance(out, Drop)
            assert out.messages[1].content == answer.strip(), p  # only the ends of the turn are trimmed
    assert not {"html_to_markdown", "large_rewrite", "leftovers_removed"} & set(step.changes)


def test_an_html_page_with_css_and_js_is_kept_verbatim_even_with_export_like_classes() -> None:
    step = Clean(CleanConfig())
    out = step.apply(conv("Make a fake chatbot page", FAKE_CHATBOT))
    assert out.messages[1].content == FAKE_CHATBOT  # type: ignore[union-attr]
    assert not is_export_residue(FAKE_CHATBOT) and step.changes == {}


@pytest.mark.parametrize(
    "answer",
    [
        '<div class="card"><h2>Pricing</h2><p>Basic plan: <strong>$5</strong></p></div>',
        "<ul>\n  <li><a href=\"/\">Home</a></li>\n  <li><a href=\"/about\">About</a></li>\n</ul>",
        "<p>Hello</p>",
        "Use this markup:\n\n<div class=\"markdown-body\">\n  <p>Readme</p>\n</div>",
    ],
)
def test_markup_without_export_marks_is_content(answer: str) -> None:
    assert Clean(CleanConfig()).apply(conv("Write the HTML", answer)).messages[1].content == answer  # type: ignore[union-attr]


def test_sharegpt_export_residue_becomes_markdown_with_the_code_intact() -> None:
    page = (MDN / "css" / "css-layout" / "floats" / "4-clearfix.html").read_text(encoding="utf-8") \
        if MDN.is_dir() else FAKE_CHATBOT
    step = Clean(CleanConfig())
    out = step.apply(conv("Show me a clearfix page", export("Here is a page with a clearfix:", page, "html")))
    text = out.messages[1].content  # type: ignore[union-attr]
    assert text.startswith("Here is a page with a clearfix:\n\n1. Save it as `index.html`.")
    assert f"```html\n{page.strip()}\n```" in text  # the page shown as code, byte for byte (trailing spaces too)
    assert text.endswith("The **style** element holds the CSS.")
    assert "Copy code" not in text and "<div" not in text.split("```")[0] + text.split("```")[-1]
    assert step.changes["html_to_markdown"] == 1 and "large_rewrite" not in step.changes


def test_a_large_rewrite_is_counted_apart_and_sampled() -> None:
    step = Clean(CleanConfig())
    out = step.apply(conv("Say yes", "Copy\nRegenerate response\nYes, of course.", cid="big", line=9))
    assert out.messages[1].content == "Yes, of course."  # type: ignore[union-attr]
    assert step.changes["large_rewrite"] == 1 and step.changes["leftovers_removed"] == 1
    (smp,) = step.samples
    assert (smp["id"], smp["line"], smp["turn"], smp["role"]) == ("big", 9, 1, "assistant")
    assert smp["after"] == "Yes, of course." and smp["removed_share"] > 0.25
    small = Clean(CleanConfig())
    small.apply(conv("Explain sorting", "Copy code\n" + "Sorting puts items in order. " * 3))
    assert "large_rewrite" not in small.changes and small.samples == []


def test_the_build_report_lists_large_rewrite_samples(tmp_path: Path) -> None:
    from sft_builder.build import build
    from sft_builder.manifest import load_manifest

    rows = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"Question number {i} about sorting"},
                                              {"from": "gpt", "value": answer}]}
            for i, answer in enumerate(["Copy\nRegenerate response\nYes, sorted() returns a new list.",
                                        "Use list.sort() to sort in place, or sorted() for a copy."])]
    (tmp_path / "chat.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "m.yaml").write_text(
        "seed: 1\nsources:\n  - {name: chat, adapter: sharegpt, inputs: chat.json}\nsteps:\n  clean: {}\n",
        encoding="utf-8",
    )
    report = build(load_manifest(tmp_path / "m.yaml"), tmp_path / "out").report
    src = report["sources"]["chat"]
    assert src["changes"]["clean:large_rewrite"] == 1
    (smp,) = src["rewrite_samples"]["clean"]
    assert (smp["source"], smp["file"], smp["turn"], smp["after"]) == (
        "chat", "chat.json", 1, "Yes, sorted() returns a new list.")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Large rewrites (samples)" in md and "Yes, sorted() returns a new list." in md
