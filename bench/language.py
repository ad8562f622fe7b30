"""Language-step benchmark on ../shared/realdata: what it keeps and drops, and its speed against langdetect.

Quality: every conversation (or single prompt) of the real files is labelled English or not from where it
comes from, then judged by the step with its defaults (`languages: [en]`, `decide_on: both`).
Non-English: the Chinese Alpaca demo, OpenAssistant messages whose `lang` is not en, and the ShareGPT first
turns read by hand as written in another language (`NON_ENGLISH_SHAREGPT`). The other ShareGPT turns with CJK
letters are English prompts with a scraped Korean "지금 번역하기" (translate now) button or ask for a reply
"in 中文"; they count as English. Everything else is English (code instructions included).

Speed: the step's detector on each document's prose (extraction included) against `langdetect.detect` on
the whole document, both seeded. Prints one JSON line (skips cleanly when the folder is missing).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crystalmix.core.readers import iter_records
from sft_builder.steps.language import Detector, Language, LanguageConfig, fold, side_prose

REALDATA = Path(os.environ.get("CRYSTALMIX_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))

# Read by hand: ja, ja, zh, ko (+ "Please write in English language."), ko question above English search
# results, and de (asking for English image prompts).
NON_ENGLISH_SHAREGPT = frozenset({"Zf6ORvQ_0", "F74DTJZ_0", "EZuMRWq_0", "qAO9QDw_0", "l4MsKo7_0", "rUnZkaM_0"})
ALPACA = {
    "llama_factory/alpaca_en_demo.json": True,
    "llama_factory/alpaca_zh_demo.json": False,
    "stanford_alpaca/alpaca_data_first200.json": True,
    "codealpaca/code_alpaca_2k.json": True,
    "evol_instruct_code/evol-codealpaca-2k-1.json": True,
}
SHAREGPT = ("fastchat/dummy_conversation.json", "sharegpt/dialogstudio_sharegpt_original_example.json",
            "llama_factory/glaive_toolcall_en_demo.json")
USER_ROLES = {"human", "user", "observation"}

Labelled = tuple[str, bool, list[str], list[str]]  # file, is English, user texts, assistant texts


def _oasst_paths(msg: dict[str, Any], path: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    path = path + [msg]
    if not msg.get("replies"):
        yield path
    for reply in msg.get("replies") or []:
        yield from _oasst_paths(reply, path)


def _rows(path: Path) -> list[Any]:
    """The records of a file (a JSON array or JSON Lines), read as the project reads its inputs."""
    return [r.data for r in iter_records(str(path))]


def labelled(root: Path) -> list[Labelled]:
    """Every conversation (OpenAssistant: every root-to-leaf path) and single prompt, labelled."""
    out: list[Labelled] = []
    for name, english in ALPACA.items():
        for r in _rows(root / name):
            user = "\n\n".join(x for x in (r.get("instruction"), r.get("input")) if x)
            out.append((name, english, [user], [r.get("output") or ""]))
    for name in SHAREGPT:
        for r in _rows(root / name):
            turns = r["conversations"]
            out.append((name, True, [t["value"] for t in turns if t["from"] in USER_ROLES],
                        [t["value"] for t in turns if t["from"] not in USER_ROLES | {"system"}]))
    name = "open_assistant/en_100_message.jsonl"
    for tree in _rows(root / name):
        for path in _oasst_paths(tree, []):
            english = all(m.get("lang") in (None, "en") for m in path)
            out.append((name, english, [m["text"] for m in path if m["role"] == "prompter"],
                        [m["text"] for m in path if m["role"] == "assistant"]))
    name = "sharegpt/ShareGPT_V3_filtered_500.json"
    for r in _rows(root / name):
        out.append((name, r["id"] not in NON_ENGLISH_SHAREGPT, [r["conversations"][0]["value"]], []))
    name = "wizardlm/WizardLM_testset.jsonl"
    for r in _rows(root / name):
        out.append((name, True, [r["Instruction"]], []))
    name = "fastchat/mt_bench_question.jsonl"
    for r in _rows(root / name):
        out.append((name, True, list(r["turns"]), []))
    return out


def judge(items: list[Labelled], cfg: LanguageConfig | None = None) -> dict[str, Any]:
    """Share of English items kept and of non-English items dropped by the step, with the counts."""
    step = Language(cfg or LanguageConfig())
    en = en_kept = other = other_dropped = 0
    for _, english, user, assistant in items:
        dropped = step.verdict(user, assistant) is not None
        if english:
            en += 1
            en_kept += not dropped
        else:
            other += 1
            other_dropped += dropped
    return {
        "english_kept": {"ratio": round(en_kept / en, 4), "kept": en_kept, "of": en},
        "non_english_dropped": {"ratio": round(other_dropped / other, 4), "dropped": other_dropped, "of": other},
        "undecided": step.changes["undecided"],
    }


def documents(items: list[Labelled]) -> list[str]:
    """Each side of each item as one document (the unit both detectors are timed on)."""
    return [d for _, _, user, assistant in items for d in ("\n".join(user), "\n".join(assistant)) if d.strip()]


def full_langdetect(docs: list[str]) -> tuple[list[str | None], float]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # a benchmark script, not library code: the global seed is fine here
    detect("warm up: load the profiles before timing")
    out: list[str | None] = []
    t = time.perf_counter()
    for d in docs:
        try:
            out.append(fold(detect(d)))
        except LangDetectException:
            out.append(None)
    return out, time.perf_counter() - t


def main() -> None:
    if not REALDATA.is_dir():
        print(json.dumps({"skipped": f"{REALDATA} not found"}))
        return
    items = labelled(REALDATA)
    quality = judge(items)
    docs = documents(items)
    base, t_base = full_langdetect(docs)
    cfg = LanguageConfig()
    det = Detector(cfg.sample_chars, cfg.min_words, cfg.en_stopword_ratio, 0, cfg.min_confidence)
    det.detect("warm up: load the profiles before timing")
    det.calls.clear()
    t = time.perf_counter()
    ours = [det.detect(side_prose([d], cfg)) for d in docs]
    t_ours = time.perf_counter() - t
    decided = [(a, b) for a, b in zip(base, ours, strict=True) if b is not None]
    print(json.dumps({
        **quality,
        "speedup": round(t_base / t_ours, 2),
        "docs": len(docs),
        "undecided_docs_share": round(1 - len(decided) / len(docs), 3),
        "agreement_when_decided": round(sum(a == b for a, b in decided) / len(decided), 4),
        "langdetect_share": round(det.calls["langdetect"] / len(docs), 3),
        "langdetect_docs_per_s": round(len(docs) / t_base),
        "ours_docs_per_s": round(len(docs) / t_ours),
    }))


if __name__ == "__main__":
    sys.exit(main())
