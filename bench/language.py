"""Language-step benchmark: what it keeps and drops on ../shared/realdata, and its speed in a build against
langdetect and lingua, one core each.

Quality: every conversation (or single prompt) of the real files is labelled English or not from where it
comes from, then judged by the step with its defaults (`languages: [en]`, `decide_on: both`).
Non-English: the Chinese Alpaca demo, OpenAssistant messages whose `lang` is not en, and the ShareGPT first
turns read by hand as written in another language (`NON_ENGLISH_SHAREGPT`). The other ShareGPT turns with CJK
letters are English prompts with a scraped Korean "지금 번역하기" (translate now) button or ask for a reply
"in 中文"; they count as English. Everything else is English (code instructions included). The peers are
judged the same way (`--peer-accuracy`).

Speed in the build: the records bench/build.py samples (real conversations and documents, perturbed), read
through its mix manifest's adapters and the steps before `language`, then `Language.run` with that
manifest's settings (`languages: [en, zh]`) on all of them, one core. The peers decide every k-th record
(`--peer-records` of them; they are too slow for all) the plain way, with the same rule (every side found
must be in `languages`): langdetect (seeded) and lingua (all languages, one thread) on each side's whole
text; the step decides those same records for the ratio. Rounds are interleaved (the order rotates) and
each contender's best round counts; the step runs its pass on the peers' records several times a round so
that its round is not a few hundredths of a second. The sample's sources are English, Chinese and code, so
a drop there is a mistake or a translation task (`build_dropped`). `fallback`: the texts the step handed to
langdetect, by why, and their share of the step's time.
Prints one JSON line (skips cleanly when the folder is missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from crystalmix.core.readers import iter_records
from crystalmix.core.records import Conversation, Rejected
from sft_builder.steps.language import Detector, Language, LanguageConfig, fold

WARM_UP = "Kannst du mir bitte erklären, wie man im Winter Zimmerpflanzen richtig gießt und pflegt?"
Verdict = Callable[[Sequence[str], Sequence[str]], bool]  # (user texts, assistant texts) -> dropped

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


def judge(items: list[Labelled], dropped: Verdict) -> dict[str, Any]:
    """Share of English items kept and of non-English items dropped by `dropped`, with the counts."""
    en = en_kept = other = other_dropped = 0
    for _, english, user, assistant in items:
        drop = dropped(user, assistant)
        if english:
            en += 1
            en_kept += not drop
        else:
            other += 1
            other_dropped += drop
    return {
        "english_kept": {"ratio": round(en_kept / en, 4), "kept": en_kept, "of": en},
        "non_english_dropped": {"ratio": round(other_dropped / other, 4), "dropped": other_dropped, "of": other},
    }


# -- the peers: one detector on each side's whole text, the step's keep rule -----------------------------------
def langdetect_id(seed: int = 0) -> Callable[[str], str | None]:
    """langdetect through its public factory (profiles loaded once, seeded): text -> folded code or None."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from langdetect.lang_detect_exception import LangDetectException

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)

    def ident(text: str) -> str | None:
        detector = factory.create()
        detector.append(text)
        try:
            return fold(detector.detect())
        except LangDetectException:
            return None

    return ident


def lingua_id() -> Callable[[str], str | None] | None:
    """lingua with every language it knows (its models loaded here, untimed), or None when not installed."""
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        return None
    detector = LanguageDetectorBuilder.from_all_languages().build()
    detector.detect_language_of("Load the models before anything is timed.")

    def ident(text: str) -> str | None:
        found = detector.detect_language_of(text)
        return None if found is None else found.iso_code_639_1.name.lower()

    return ident


def plain_verdict(ident: Callable[[str], str | None], languages: Sequence[str]) -> Verdict:
    """Drop when a side (all its turns as one text) is found in a language outside `languages`."""
    keep = frozenset(fold(lang) for lang in languages)

    def dropped(user: Sequence[str], assistant: Sequence[str]) -> bool:
        for side in (user, assistant):
            text = "\n".join(side)
            if text.strip():
                lang = ident(text)
                if lang is not None and lang not in keep:
                    return True
        return False

    return dropped


# -- the build stream --------------------------------------------------------------------------------------------
def build_stream(records: int, seed: int) -> tuple[list[Conversation], LanguageConfig]:
    """bench/build.py's sample (conversations and documents) and mix manifest: the records as they reach
    `language`, source after source, and its settings."""
    from sft_builder.build import split_order
    from sft_builder.manifest import load_manifest
    from sft_builder.sources.base import make_adapter
    from sft_builder.steps.table import STEPS

    spec = importlib.util.spec_from_file_location("bench_build", Path(__file__).with_name("build.py"))
    assert spec is not None and spec.loader is not None
    bench_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_build)
    convs: list[Conversation] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_build.write_sample(folder, records, seed)
        m = load_manifest(bench_build.manifest(folder, "mix"))
        pre, _ = split_order(m)
        for src in m.sources:
            stream: Any = make_adapter(src.adapter, src.options, source=src.name).stream(list(src.inputs))
            for name in pre[: pre.index("language")]:
                stream = STEPS[name].make(src.steps[name]).run(stream)
            convs += [c for c in stream if isinstance(c, Conversation)]
    return convs, m.sources[0].steps["language"]


def sides(conv: Conversation) -> tuple[list[str], list[str]]:
    if conv.text is not None:
        return [conv.text], []
    return ([m.content for m in conv.turns if m.role == "user"],
            [m.content for m in conv.turns if m.role == "assistant"])


def step_pass(convs: list[Conversation], cfg: LanguageConfig) -> tuple[int, Language]:
    """One pass of the step as the build runs it: how many it dropped, and the step (for its counters)."""
    step = Language(cfg)
    return sum(isinstance(item, Rejected) for item in step.run(convs)), step


def timed_step(convs: list[Conversation], cfg: LanguageConfig, reps: int = 1) -> tuple[float, int, Language]:
    """Seconds of one pass of the step over `convs` (the mean of `reps`), what it dropped, the last step."""
    t = time.perf_counter()
    for _ in range(reps):
        dropped, step = step_pass(convs, cfg)
    return (time.perf_counter() - t) / reps, dropped, step


def speed(convs: list[Conversation], cfg: LanguageConfig, peers: dict[str, Verdict], rounds: int,
          peer_records: int) -> dict[str, Any]:
    """Interleaved rounds, best round each: the step on the whole stream, and the step and the peers on every
    k-th record, `peer_records` of them (the peers are too slow for the whole): rates and what each dropped."""
    sub = convs[:: max(1, len(convs) // max(peer_records, 1))][:peer_records]  # spread over every source
    split = [sides(c) for c in sub]
    step_pass(convs[:50], cfg)  # warm up
    reps = max(1, min(20, round(0.5 / max(timed_step(sub, cfg)[0], 1e-6))))  # about half a second a round
    best: dict[str, float] = {}
    dropped: dict[str, int] = {}
    whole: tuple[float, int, Language] | None = None
    names = ["step", "step_on_peer_records", *peers]
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if name == "step":
                run = timed_step(convs, cfg)
                whole = run if whole is None or run[0] < whole[0] else whole
                elapsed, dropped[name] = run[0], run[1]
            elif name == "step_on_peer_records":
                elapsed, dropped[name], _ = timed_step(sub, cfg, reps)
            else:
                t = time.perf_counter()
                dropped[name] = sum(peers[name](u, a) for u, a in split)
                elapsed = time.perf_counter() - t
            best[name] = min(best.get(name, float("inf")), elapsed)
    assert whole is not None
    seconds, _, step = whole
    det = step.detector
    texts = sum(det.calls.values())
    fallback = {
        "texts": sum(det.fallback.values()),
        "reused": det.fallback_reused,  # copies of a text langdetect already decided: not run again
        "share_of_texts": round(sum(det.fallback.values()) / max(texts, 1), 5),
        "share_of_step_time": round(sum(det.fallback_seconds.values()) / seconds, 4),
        "by_why": {why: {"texts": n, "seconds": round(det.fallback_seconds[why], 4)}
                   for why, n in sorted(det.fallback.items())},
    }
    sub_rate = {name: len(sub) / best[name] for name in ("step_on_peer_records", *peers)}
    return {
        "build_records": len(convs),
        "build_step_conv_per_s": round(len(convs) / best["step"], 1),
        "build_dropped": dropped["step"],  # sources in English, Chinese and code: a mistake or a translation
        "build_texts": texts,
        "build_paths": dict(sorted(det.calls.items())),
        "fallback": fallback,
        "peer_records": len(sub),
        **{f"{name}_conv_per_s": round(rate, 1) for name, rate in sub_rate.items()},
        **{f"ratio_vs_{name}": round(sub_rate["step_on_peer_records"] / sub_rate[name], 1) for name in peers},
        "peer_records_dropped": {name: dropped[name] for name in sub_rate},
        "rounds": rounds,
        "step_passes_per_round_on_peer_records": reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000, help="records of the build stream (bench/build.py's)")
    ap.add_argument("--peer-records", type=int, default=1000, help="how many of them the peers decide too")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer-accuracy", action=argparse.BooleanOptionalAction, default=True,
                    help="judge the peers on the labelled real data too (a minute or two)")
    args = ap.parse_args()
    if not REALDATA.is_dir():
        print(json.dumps({"skipped": f"{REALDATA} not found"}))
        return
    items = labelled(REALDATA)
    Detector().detect(WARM_UP)  # langdetect's profiles loaded before anything is timed
    step = Language(LanguageConfig())
    t = time.perf_counter()
    quality = judge(items, lambda u, a: step.verdict(u, a) is not None)
    realdata_rate = len(items) / (time.perf_counter() - t)
    quality["undecided"] = step.changes["undecided"]
    idents = {"langdetect": langdetect_id()}
    lingua = lingua_id()
    if lingua is not None:
        idents["lingua"] = lingua
    peer_quality = {}
    if args.peer_accuracy:
        peer_quality = {f"{name}_accuracy": judge(items, plain_verdict(ident, ("en",)))
                        for name, ident in idents.items()}
    convs, cfg = build_stream(args.records, args.seed)
    peers = {name: plain_verdict(ident, cfg.languages) for name, ident in idents.items()}
    print(json.dumps({
        **quality,
        **speed(convs, cfg, peers, args.rounds, args.peer_records),
        **peer_quality,
        "realdata_items": len(items),
        "realdata_step_conv_per_s": round(realdata_rate),
        "peers": list(idents),  # lingua only when it is installed
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    sys.exit(main())
