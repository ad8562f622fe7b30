"""Benchmark of the pretraining pipeline (read, tokenize, pack, FIM, HDF5 write); prints ONE JSON line.

Every figure is a ratio against plain `tokenizers` ``encode_batch`` on the same texts in the same run (the
median over rounds; within a round each ratio compares runs made back to back), on
one thread (TOKENIZERS_PARALLELISM=false everywhere, so "per worker" means per core):
  ratio        pipeline tokens/s with 1 worker / bare encode_batch tokens/s      (target >= 0.6)
  ratio_fim    the same with FIM rate 0.9, context mode                           (target >= 0.4)
  scaling      pipeline tokens/s with 2 workers / with 1 worker                   (target >= 1.6)
  peak_rss_mb  peak RSS of a worker process (2-worker build, FIM on) for the larger input;
               peak_rss_growth is its ratio to the same build of an input a quarter as large (flat: ~1.0)
  projection_hours  stage 2 (345B SlimPajama tokens plain + 582B StarCoder tokens with FIM) on
               nodes x cores, from the measured tokens per CPU-second (per core).
The pipeline itself calls encode_batch_fast (no offsets); ratio_vs_encode_batch_fast compares with that.
The *_cpu keys divide by CPU seconds instead of wall time: on a machine shared with other jobs they
show what the code costs, whatever share of the CPU it got. scaling_cpu_bound = 2 x (tokens per
CPU-second with 2 workers) / (with 1): the wall-clock scaling two free cores would allow.
Input: the bundled demo corpora (real web text and code), repeated to the size asked; the real
CrystalCoder tokenizer when ../shared/realdata is present, else the demo tokenizer shipped in the package.
Usage: .venv/bin/python bench/pretrain.py [--mb 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "manifests" / "pretrain" / "demo_data"
REAL_TOK = ROOT.parent / "shared" / "realdata" / "tokenizers" / "crystalcoder"
DEMO_TOK = ROOT / "crystalmix" / "core" / "demo_tokenizer"  # what `tokenizer: demo` loads
STAGE2_PLAIN, STAGE2_FIM = 345e9, 582e9
CLUSTERS = [(1, 32), (4, 32), (16, 64), (64, 64)]


def corpus_texts() -> list[str]:
    from pretrain.documents import Document, read_file

    texts = []
    for path in sorted(DEMO.rglob("*.jsonl.zst")) + sorted(DEMO.rglob("*.parquet")):
        field = "content" if path.suffix == ".parquet" else "text"
        texts += [r.text for r in read_file(str(path), field) if isinstance(r, Document)]
    return texts


def write_inputs(folder: Path, texts: list[str], mb: float, files: int = 16) -> None:
    """`files` jsonl files holding about `mb` MB of the texts, repeated as needed."""
    folder.mkdir(parents=True, exist_ok=True)
    target, size, i = mb * 1e6, 0, 0
    handles = [open(folder / f"part-{k:03d}.jsonl", "w", encoding="utf-8") for k in range(files)]  # noqa: SIM115
    while size < target:
        t = texts[i % len(texts)]
        handles[i % files].write(json.dumps({"text": t}) + "\n")
        size += len(t.encode())
        i += 1
    for h in handles:
        h.close()


def manifest(folder: Path, inputs: Path, tokenizer: Path, fim_rate: float) -> Path:
    import yaml

    fim = {"rate": fim_rate, "spm_rate": 0.5, "mode": "context"}
    raw = {"stage": "bench", "tokenizer": str(tokenizer), "seq_len": 2048, "seed": 1,
           "samples_per_file": 50000,
           "sources": [{"name": "data", "paths": [str(inputs / "*.jsonl")], "fim": fim}]}
    path = folder / f"bench-{fim_rate}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Run:
    tokens: int
    wall: float
    cpu: float  # CPU seconds of this process and its (finished) worker processes

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    @property
    def cpu_rate(self) -> float:
        return self.tokens / self.cpu


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pipeline_run(man: Path, out: Path, workers: int) -> Run:
    """Shard building plus the final pass (tokenizer resolution is a one-off, left out)."""
    from pretrain.build import prepare
    from pretrain.config import load_manifest
    from pretrain.executors import LocalExecutor, shard_tokens
    from pretrain.outputs import finalize

    cfg = load_manifest(man)
    tasks, vocab = prepare(cfg, out)
    start, cpu = time.perf_counter(), _cpu()
    markers = LocalExecutor(workers).run(tasks, lambda t, m: None)
    finalize(tasks, markers, vocab, cfg.tokenizer)
    return Run(sum(shard_tokens(m) for m in markers.values()), time.perf_counter() - start, _cpu() - cpu)


def bare_run(texts: list[str], tokenizer: Path, method: str = "encode_batch") -> Run:
    """Plain tokenization of the same texts in batches of 256 (`method`: encode_batch or encode_batch_fast)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    encode = getattr(tok, method)
    start, cpu = time.perf_counter(), _cpu()
    n = 0
    for i in range(0, len(texts), 256):
        n += sum(len(e.ids) for e in encode(texts[i:i + 256], add_special_tokens=False))
    return Run(n, time.perf_counter() - start, _cpu() - cpu)


def child_peak_rss(man: Path, out: Path) -> float:
    """Peak RSS (MB) of the busiest worker process of a fresh 2-worker build of `man`."""
    res = subprocess.run([sys.executable, __file__, "--child", str(man), str(out)], capture_output=True,
                         text=True, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40.0,
                    help="input size for the rate runs (smaller inputs under-state scaling: worker start-up)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each ratio is the median over rounds")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:  # the memory probe: build with 2 worker processes, report the larger one's peak RSS
        pipeline_run(Path(args.child[0]), Path(args.child[1]), 2)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        return
    from crystalmix.core.readers import iter_records

    tokenizer = REAL_TOK if (REAL_TOK / "tokenizer.json").exists() else DEMO_TOK
    texts = corpus_texts()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        write_inputs(tmp / "in", texts, args.mb)
        bench_texts = [r.data["text"] for f in sorted((tmp / "in").glob("*.jsonl")) for r in iter_records(str(f))]
        plain_man = manifest(tmp, tmp / "in", tokenizer, 0.0)
        fim_man = manifest(tmp, tmp / "in", tokenizer, 0.9)
        ratios: dict[str, list[float]] = {"ratio": [], "ratio_fim": [], "scaling": [], "ratio_cpu": [],
                                          "ratio_fim_cpu": [], "scaling_cpu_bound": [], "ratio_fast": []}
        runs: dict[str, list[Run]] = {"bare": [], "plain_1": [], "plain_2": [], "fim_1": []}
        for k in range(args.repeat):
            # Each ratio compares runs made back to back, so slow swings in outside load cancel out.
            b1 = bare_run(bench_texts, tokenizer)
            p1 = pipeline_run(plain_man, tmp / f"p1-{k}", 1)
            p2 = pipeline_run(plain_man, tmp / f"p2-{k}", 2)
            b2 = bare_run(bench_texts, tokenizer)
            f1 = pipeline_run(fim_man, tmp / f"f1-{k}", 1)
            bf = bare_run(bench_texts, tokenizer, "encode_batch_fast")
            ratios["ratio"].append(p1.rate / b1.rate)
            ratios["ratio_fim"].append(f1.rate / b2.rate)
            ratios["scaling"].append(p2.rate / p1.rate)
            ratios["ratio_cpu"].append(p1.cpu_rate / b1.cpu_rate)
            ratios["ratio_fim_cpu"].append(f1.cpu_rate / b2.cpu_rate)
            ratios["scaling_cpu_bound"].append(2 * p2.cpu_rate / p1.cpu_rate)
            ratios["ratio_fast"].append(p1.rate / bf.rate)
            for key, run in (("bare", b1), ("bare", b2), ("plain_1", p1), ("plain_2", p2), ("fim_1", f1)):
                runs[key].append(run)
        write_inputs(tmp / "small", texts, args.mb / 4)
        write_inputs(tmp / "large", texts, args.mb)
        rss_small = child_peak_rss(manifest(tmp / "small", tmp / "small", tokenizer, 0.9), tmp / "o4")
        rss_large = child_peak_rss(manifest(tmp / "large", tmp / "large", tokenizer, 0.9), tmp / "o5")
    plain_cpu = statistics.median(r.cpu_rate for r in runs["plain_1"])
    fim_cpu = statistics.median(r.cpu_rate for r in runs["fim_1"])
    hours = {f"{n}x{m}": round((STAGE2_PLAIN / plain_cpu + STAGE2_FIM / fim_cpu) / (n * m) / 3600, 1)
             for n, m in CLUSTERS}
    med = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    print(json.dumps({
        "ratio": med["ratio"], "ratio_fim": med["ratio_fim"], "scaling": med["scaling"],
        "peak_rss_mb": round(rss_large, 1), "peak_rss_growth": round(rss_large / rss_small, 3),
        "peak_rss_small_input_mb": round(rss_small, 1), "ratio_cpu": med["ratio_cpu"],
        "ratio_fim_cpu": med["ratio_fim_cpu"], "scaling_cpu_bound": med["scaling_cpu_bound"],
        "ratio_vs_encode_batch_fast": med["ratio_fast"],
        "all": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
        "median_tokens_per_s": {k: round(statistics.median(r.rate for r in v)) for k, v in runs.items()},
        "per_core_tokens_per_cpu_s": round(plain_cpu), "per_core_fim_tokens_per_cpu_s": round(fim_cpu),
        "input_mb": args.mb, "repeat": args.repeat, "tokenizer": tokenizer.name, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2), "projection_hours": hours,
    }))


if __name__ == "__main__":
    main()
