"""Language-id benchmark: the language step's detector against `langdetect.detect` on each full document.

Real documents from ../shared/realdata (English and Chinese Alpaca demos, ShareGPT first turns with a few
CJK/Cyrillic ones, OASST, Dolly-style sets), at least 20% non-English. Both sides are seeded; zh-cn/zh-tw
are folded to zh as the step does. Prints one JSON line (skips cleanly when the folder is missing).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sft_builder.steps.language import Detector, fold

REALDATA = Path(os.environ.get("CRYSTALMIX_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))


def documents(root: Path) -> list[str]:
    docs: list[str] = []
    for name in ("llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
                 "stanford_alpaca/alpaca_data_first200.json"):
        for r in json.loads((root / name).read_text(encoding="utf-8")):
            docs.append("\n".join(str(r.get(k) or "") for k in ("instruction", "input", "output")).strip())
    for name in ("sharegpt/ShareGPT_V3_filtered_500.json", "fastchat/dummy_conversation.json",
                 "sharegpt/dialogstudio_sharegpt_original_example.json"):
        data = json.loads((root / name).read_text(encoding="utf-8"))
        for r in data if isinstance(data, list) else data.values():
            turns = r.get("conversations") or []
            docs.append("\n".join(str(t.get("value") or "") for t in turns).strip())
    for line in (root / "open_assistant/en_100_message.jsonl").read_text(encoding="utf-8").splitlines():
        stack = [json.loads(line)]
        while stack:
            m = stack.pop()
            docs.append(str(m.get("text") or ""))
            stack += m.get("replies") or []
    return [d for d in docs if d]


def full_langdetect(docs: list[str]) -> tuple[list[str | None], float]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
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
    docs = documents(REALDATA)
    base, t_base = full_langdetect(docs)
    det = Detector(seed=0)
    t = time.perf_counter()
    ours = [det.detect(d) for d in docs]
    t_ours = time.perf_counter() - t
    agree = sum(a == b for a, b in zip(base, ours, strict=True))
    non_en = sum(b not in ("en", None) for b in base)
    print(json.dumps({
        "speedup": round(t_base / t_ours, 2),
        "agreement": round(agree / len(docs), 4),
        "docs": len(docs),
        "non_english_share": round(non_en / len(docs), 3),
        "fast_path_share": round(det.calls["fast"] / len(docs), 3),
        "langdetect_docs_per_s": round(len(docs) / t_base),
        "ours_docs_per_s": round(len(docs) / t_ours),
    }))


if __name__ == "__main__":
    sys.exit(main())
