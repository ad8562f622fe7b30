"""The language step on every conversation of ../shared/realdata: English kept, other languages dropped.

Labels come from where each record comes from (read with plain `json` here, not with our adapters):
the Chinese Alpaca demo and the ShareGPT first turns read by hand as written in another language are
non-English, OpenAssistant messages by their `lang`; everything else is English, code instructions included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sft_builder.steps.language import _URL_RE, Language, LanguageConfig, code_line, maybe_url, weight
from tests.steps.test_language import ONE_REGEX

# ja, ja, zh, ko, ko (a Korean question above English search results), de. The other four ShareGPT first
# turns with CJK letters are English with a scraped Korean "translate now" button, or ask for a reply "in 中文".
NON_ENGLISH_SHAREGPT = {"Zf6ORvQ_0", "F74DTJZ_0", "EZuMRWq_0", "qAO9QDw_0", "l4MsKo7_0", "rUnZkaM_0"}
Item = tuple[str, bool, list[str], list[str]]


def _paths(msg: dict[str, Any], path: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    path = path + [msg]
    if not msg.get("replies"):
        yield path
    for reply in msg.get("replies") or []:
        yield from _paths(reply, path)


def _items(root: Path) -> list[Item]:
    out: list[Item] = []
    for name in ("llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
                 "stanford_alpaca/alpaca_data_first200.json", "codealpaca/code_alpaca_2k.json",
                 "evol_instruct_code/evol-codealpaca-2k-1.json"):
        for r in json.loads((root / name).read_text()):
            user = "\n\n".join(x for x in (r["instruction"], r.get("input")) if x)
            out.append((name, "zh_demo" not in name, [user], [r["output"]]))
    for name in ("fastchat/dummy_conversation.json", "sharegpt/dialogstudio_sharegpt_original_example.json",
                 "llama_factory/glaive_toolcall_en_demo.json"):
        for r in json.loads((root / name).read_text()):
            turns = r["conversations"]
            out.append((name, True, [t["value"] for t in turns if t["from"] in ("human", "observation")],
                        [t["value"] for t in turns if t["from"] in ("gpt", "function_call")]))
    name = "open_assistant/en_100_message.jsonl"
    for line in (root / name).read_text().splitlines():
        for path in _paths(json.loads(line), []):
            out.append((name, all(m["lang"] == "en" for m in path),
                        [m["text"] for m in path if m["role"] == "prompter"],
                        [m["text"] for m in path if m["role"] == "assistant"]))
    name = "sharegpt/ShareGPT_V3_filtered_500.json"
    for r in json.loads((root / name).read_text()):
        out.append((name, r["id"] not in NON_ENGLISH_SHAREGPT, [r["conversations"][0]["value"]], []))
    for line in (root / "wizardlm/WizardLM_testset.jsonl").read_text().splitlines():
        out.append(("wizardlm", True, [json.loads(line)["Instruction"]], []))
    for line in (root / "fastchat/mt_bench_question.jsonl").read_text().splitlines():
        out.append(("mt_bench", True, json.loads(line)["turns"], []))
    return out


@pytest.fixture(scope="module")
def judged(realdata: Path) -> list[tuple[Item, bool]]:
    step = Language(LanguageConfig())
    return [(item, step.verdict(item[2], item[3]) is not None) for item in _items(realdata)]


def test_english_is_kept(judged: list[tuple[Item, bool]]) -> None:
    english = [(item, dropped) for item, dropped in judged if item[1]]
    assert len(english) > 7000
    lost = [(item[0], item[2][0][:80]) for item, dropped in english if dropped]
    assert len(lost) <= 0.005 * len(english), lost


def test_other_languages_are_dropped(judged: list[tuple[Item, bool]]) -> None:
    other = [(item, dropped) for item, dropped in judged if not item[1]]
    assert len(other) >= 1000  # the 1000 Chinese Alpaca records and the hand-read ShareGPT turns
    kept = [(item[0], item[2][0][:80]) for item, dropped in other if not dropped]
    assert len(kept) <= 0.05 * len(other), kept


def test_the_cheaper_code_line_and_weight_agree_with_their_definitions(realdata: Path) -> None:
    """Every real text and line: the split code-line test, the C-counted weight and the URL pre-check change
    no verdict (each agrees with the plain definition it replaced)."""
    texts = {text for _, _, user, assistant in _items(realdata) for text in user + assistant}
    assert [text for text in texts if _URL_RE.search(text) and not maybe_url(text)] == []
    lines = {line.strip() for text in texts for line in text.splitlines()}
    assert len(lines) > 50_000
    assert [line for line in lines if code_line(line) != bool(ONE_REGEX.search(line))] == []
    assert [line for line in lines if weight(line) != sum(4 if c >= "\u0e00" else 1 for c in line if c.isalpha())] == []
