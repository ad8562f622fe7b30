"""Benchmark: encode + mask + pack throughput against bare `tokenizers` encode_batch, and memory vs corpus size.

Prints one JSON line:
- ``tokens_per_s``: our path (render with the chat template, encode, masks, bfd packing) on all cores;
- ``ratio``: that over the bare tokenizer's ``encode_batch`` of the same rendered texts, measured in this run;
- ``peak_rss_mb_small`` / ``peak_rss_mb_large``: peak RSS of a child process streaming SMALL vs LARGE
  conversations through encode + pack (rows are produced and dropped; the writers are bounded by design).

Usage: python bench/encode.py [--n 20000] [--small 100000] [--large 1000000] [--tokenizer PATH|demo]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crystalmix.core.records import Conversation, Message  # noqa: E402
from sft_builder.encode import TokenizeConfig, encode_stream, make_encoder  # noqa: E402
from sft_builder.pack import PackStats, pack  # noqa: E402

WORDS = ("the of and to in is that for it with as was on are be by this from or have an they which one you "
         "function return value list python code data file error user print loop class method string number "
         "import def self if else while true false none result input output test case index array map key").split()


def conversations(n: int, seed: int = 0, scale: int = 1) -> Iterator[Conversation]:
    """Synthetic chats with a long-tailed length mix (system prompts, 1-3 turns, code-like answers)."""
    rng = random.Random(seed)
    for i in range(n):
        msgs = [Message("system", "You are a helpful assistant.")] if rng.random() < 0.4 else []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            msgs.append(Message("user", " ".join(rng.choices(WORDS, k=rng.randint(5, 60) // scale + 2))))
            k = int(rng.lognormvariate(4.8, 0.9)) // scale + 3
            msgs.append(Message("assistant", " ".join(rng.choices(WORDS, k=k))))
        yield Conversation(f"b{i}", "bench", tuple(msgs))


def default_tokenizer() -> str:
    real = ROOT.parent / "shared" / "realdata" / "tokenizers" / "crystalcoder"
    return str(real) if real.is_dir() else "demo"


def throughput(n: int, tokenizer: str) -> dict[str, float]:
    cfg = TokenizeConfig.from_mapping({"tokenizer": tokenizer, "workers": 0})
    convs = list(conversations(n))
    encoder = make_encoder(cfg)
    texts: list[str] = []
    for start in range(0, n, 1024):
        texts.extend(encoder.render(convs[start:start + 1024])[0])
    bare = encoder.control  # its own copy, threads on all cores (Rayon)

    t0 = time.perf_counter()
    bare_tokens = 0
    for start in range(0, n, 1024):
        bare_tokens += sum(len(e.ids) for e in bare.encode_batch(texts[start:start + 1024],
                                                                 add_special_tokens=False))
    bare_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = PackStats()
    ours_tokens = 0

    def counted() -> Iterator:
        nonlocal ours_tokens
        for item in encode_stream(convs, cfg):
            ours_tokens += len(getattr(item, "input_ids", ()))
            yield item

    for _ in pack(counted(), "bfd", cfg.seq_len, 0, stats):  # type: ignore[arg-type]
        pass
    ours_s = time.perf_counter() - t0
    assert ours_tokens == bare_tokens, (ours_tokens, bare_tokens)
    return {"tokens_per_s": ours_tokens / ours_s, "bare_tokens_per_s": bare_tokens / bare_s,
            "tokens": ours_tokens, "packing_efficiency": stats.efficiency}


def peak_rss_child(n: int, tokenizer: str) -> float:
    """Peak RSS (MB) of a fresh process streaming `n` short conversations through encode + pack."""
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--tokenizer", tokenizer],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(n: int, tokenizer: str) -> None:
    cfg = TokenizeConfig.from_mapping({"tokenizer": tokenizer, "workers": 0})
    stats = PackStats()
    for _ in pack(encode_stream(conversations(n, seed=1, scale=8), cfg), "bfd", cfg.seq_len, 0, stats):
        pass
    # ru_maxrss is in KB on Linux; children (workers) counted separately and summed.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print((own + kids) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--child", type=int, default=None)
    a = ap.parse_args()
    tok = a.tokenizer or default_tokenizer()
    if a.child is not None:
        child(a.child, tok)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    t = throughput(a.n, tok)
    small = peak_rss_child(a.small, tok)
    large = peak_rss_child(a.large, tok)
    print(json.dumps({
        "ratio": round(t["tokens_per_s"] / t["bare_tokens_per_s"], 3),
        "tokens_per_s": round(t["tokens_per_s"]),
        "bare_tokens_per_s": round(t["bare_tokens_per_s"]),
        "peak_rss_mb_small": round(small, 1),
        "peak_rss_mb_large": round(large, 1),
        "n_throughput": a.n, "n_small": a.small, "n_large": a.large, "cores": os.cpu_count(),
        "tokenizer": Path(tok).name,
    }))


if __name__ == "__main__":
    main()
