"""Pretraining tokenize + pack against datatrove's DocumentTokenizer and the plain approach; ONE JSON line.

What is timed, on every side: one whole fresh process, from its command to its output files, including
its start-up (imports, tokenizer load) and its reading of the same one JSONL file; one core each
(TOKENIZERS_PARALLELISM=false, one worker). Like with like: each side is what a user runs to turn that
file into training tokens with the same tokenizer.
  crystalmix      ``crystalmix pretrain build`` (seq_len 2048, one worker): read, tokenize, pack rows
                  (input, loss mask, labels), write HDF5 with metadata, index and mixture files.
  crystalmix_fim  the same with FIM 0.9 (context mode, SPM 0.5).
  datatrove       ``LocalPipelineExecutor([JsonlReader, DocumentTokenizer])``, 1 task, 1 worker, EOS added,
                  ``shuffle_documents=False`` (crystalmix does not shuffle inside a shard; datatrove's
                  default shuffle is a second pass over its file, which would flatter crystalmix). datatrove
                  writes the flat token stream; packing into rows happens in its training-time dataset.
  plain           ``Tokenizer.encode_batch`` in batches of 1,000 + EOS + a numpy pack into (L+1)-token
                  rows of stride L (the last padded), saved with ``np.save``.
Each round runs every side once (the order rotates from round to round) and each ratio compares the
runs of one round; the JSON gives the median over rounds (every round under ``rounds``):
  ratio_vs_datatrove   crystalmix tokens/s / datatrove tokens/s                   (target >= 1.2)
  ratio_vs_plain       crystalmix tokens/s / plain tokens/s
  fim_ratio            crystalmix_fim speed / crystalmix speed on the same documents (no-FIM seconds /
                       FIM seconds)                                                 (target >= 0.6)
The ``*_cpu`` twins divide by each process's CPU seconds instead of wall time (the machine may be shared).
``tokens`` are document tokens with their EOS on every side (crystalmix: labels written + 1, as each
stream's first token is an input only); ``tokens_equal`` says whether they agree, ``tokens_note`` why not.
``startup_s`` is each side's wall time on a one-document input (imports and tokenizer load).
``projection_hours``: stage 2 (345B SlimPajama tokens plain + 582B StarCoder tokens with FIM 0.9) on
nodes x cores, from crystalmix's tokens per CPU-second here (start-up included: a conservative rate).
With ``--scaling``, also crystalmix with 2 workers against 1 on the same input split into two files (each
round both, back to back): ``scaling`` (wall clock), ``scaling_cpu_bound`` (2 x tokens per CPU-second with 2
workers / with 1: what two free cores would give on a shared machine) and ``peak_rss_mb`` (the largest
process of the 2-worker build).
Input: the bundled demo corpora (real web text and code) repeated to ``--mb``; the real CrystalCoder
tokenizer when ../shared/realdata is present, else the demo tokenizer. datatrove is optional (the
``bench`` extra): without it its keys are null and ``datatrove_note`` says why.
Usage: .venv/bin/python bench/pretrain.py [--mb 12] [--repeat 3] [--scaling]
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

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "manifests" / "pretrain" / "demo_data"
REAL_TOK = ROOT.parent / "shared" / "realdata" / "tokenizers" / "crystalcoder"
DEMO_TOK = ROOT / "crystalmix" / "core" / "demo_tokenizer"  # what `tokenizer: demo` loads
SEQ_LEN = 2048
EOS = "</s>"
SIDES = ("crystalmix", "crystalmix_fim", "datatrove", "plain")
STAGE2_PLAIN, STAGE2_FIM = 345e9, 582e9
CLUSTERS = [(1, 32), (4, 32), (16, 64), (64, 64)]

DATATROVE = """
import sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
inp, out, tok, eos = sys.argv[1:5]
LocalPipelineExecutor(pipeline=[
    JsonlReader(inp, glob_pattern="*.jsonl"),
    DocumentTokenizer(out + "/tokens", tokenizer_name_or_path=tok, eos_token=eos, shuffle_documents=False),
], tasks=1, workers=1, logging_dir=out + "/logs").run()
"""

PLAIN = """
import json, sys
from pathlib import Path
import numpy as np
from tokenizers import Tokenizer
inp, out, tok, eos, seq_len = sys.argv[1:6]
seq_len = int(seq_len)
tok = Tokenizer.from_file(tok)
eos_id = tok.token_to_id(eos)
texts = [json.loads(line)["text"] for f in sorted(Path(inp).glob("*.jsonl")) for line in open(f, encoding="utf-8")]
docs = []
for i in range(0, len(texts), 1000):
    for e in tok.encode_batch(texts[i:i + 1000], add_special_tokens=False):
        docs.append(np.asarray(e.ids + [eos_id], dtype=np.int32))
flat = np.concatenate(docs)
n = -(-(len(flat) - 1) // seq_len)  # rows, the last one padded with EOS
padded = np.full(n * seq_len + 1, eos_id, dtype=np.int32)
padded[:len(flat)] = flat
rows = np.stack([padded[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)])
Path(out).mkdir(parents=True, exist_ok=True)
np.save(Path(out) / "rows.npy", np.ascontiguousarray(rows))
(Path(out) / "tokens.txt").write_text(str(len(flat)))
"""


def corpus_texts() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from pretrain.documents import Document, read_file

    texts = []
    for path in sorted(DEMO.rglob("*.jsonl.zst")) + sorted(DEMO.rglob("*.parquet")):
        field = "content" if path.suffix == ".parquet" else "text"
        texts += [r.text for r in read_file(str(path), field) if isinstance(r, Document)]
    return texts


def write_input(folder: Path, texts: list[str], mb: float, files: int = 1) -> Path:
    """`files` JSONL files holding about `mb` MB of the texts, repeated as needed (one shard, one stream each)."""
    folder.mkdir(parents=True, exist_ok=True)
    target, size, i = mb * 1e6, 0, 0
    handles = [open(folder / f"part-{k:03d}.jsonl", "w", encoding="utf-8") for k in range(files)]  # noqa: SIM115
    while size < target or i < files:
        t = texts[i % len(texts)]
        handles[i % files].write(json.dumps({"text": t}) + "\n")
        size += len(t.encode())
        i += 1
    for h in handles:
        h.close()
    return folder


def manifest(folder: Path, inputs: Path, tokenizer: Path, fim_rate: float) -> Path:
    fim = {"rate": fim_rate, "spm_rate": 0.5, "mode": "context"}
    raw = {"stage": "bench", "tokenizer": str(tokenizer), "seq_len": SEQ_LEN, "seed": 1, "samples_per_file": 50000,
           "sources": [{"name": "data", "paths": [str(inputs / "*.jsonl")], "fim": fim}]}
    path = folder / f"bench-{inputs.name}-{fim_rate}.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    return path


@dataclass(frozen=True)
class Run:
    tokens: int
    wall: float
    cpu: float  # user + system seconds of the side's process (and any it waited for)
    note: str = ""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process run to completion; its output is kept only on failure."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    cpu, start = _children_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if res.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall, cpu


CLI = "from crystalmix.cli import main; main()"
PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def run_crystalmix(man: Path, out: Path, workers: int = 1) -> Run:
    wall, cpu = timed([sys.executable, "-c", CLI, "pretrain", "build", str(man), "--out", str(out), "-j",
                       str(workers), "-q"])
    summary = json.loads((out / "build.json").read_text(encoding="utf-8"))
    streams = len(list((out / ".state").rglob("*.done.json")))  # each stream's first token is never a label
    labels = sum(json.loads((out / f / "metadata.json").read_text(encoding="utf-8"))["loss_valid_tokens"]
                 for f in summary["folders"])
    skipped = {k: v for c in summary["documents"].values() for k, v in c.items() if k != "documents_read" and v}
    return Run(labels + streams, wall, cpu, f"skipped {skipped}" if skipped else "")


def scaling(texts: list[str], tmp: Path, tokenizer: Path, mb: float, repeat: int) -> dict[str, object]:
    """crystalmix with 2 workers against 1 on two input files, and the peak RSS of the 2-worker build."""
    inp = write_input(tmp / "two", texts, mb, files=2)
    man = manifest(tmp, inp, tokenizer, 0.0)
    walls, cpus = [], []
    for k in range(repeat):
        one, two = run_crystalmix(man, tmp / f"s1-{k}"), run_crystalmix(man, tmp / f"s2-{k}", 2)
        walls.append(one.wall / two.wall)
        cpus.append(2 * (two.tokens / two.cpu) / (one.tokens / one.cpu))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    peak = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-c", CLI, "pretrain", "build", str(man),
                           "--out", str(tmp / "s-rss"), "-j", "2", "-q"], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=True)
    return {"scaling": round(statistics.median(walls), 3), "scaling_cpu_bound": round(statistics.median(cpus), 3),
            "peak_rss_mb": round(float(peak.stdout.split()[-1]), 1),
            "scaling_rounds": [round(x, 3) for x in walls]}


def run_datatrove(inputs: Path, out: Path, tokenizer: Path) -> Run:
    wall, cpu = timed([sys.executable, "-c", DATATROVE, str(inputs), str(out), str(tokenizer / "tokenizer.json"), EOS])
    tokens = sum(int(p.read_text().splitlines()[1]) for p in (out / "tokens").glob("*.metadata"))
    return Run(tokens, wall, cpu)


def run_plain(inputs: Path, out: Path, tokenizer: Path) -> Run:
    wall, cpu = timed([sys.executable, "-c", PLAIN, str(inputs), str(out), str(tokenizer / "tokenizer.json"), EOS,
                       str(SEQ_LEN)])
    return Run(int((out / "tokens.txt").read_text()), wall, cpu)


def datatrove_missing() -> str | None:
    try:
        import datatrove  # noqa: F401
    except ImportError as exc:
        return f"datatrove is not importable ({exc}); pip install 'crystalmix[bench]'"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=12.0, help="input size (one JSONL file)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each ratio is the median over rounds")
    ap.add_argument("--scaling", action="store_true", help="also 2 workers against 1, and the peak RSS")
    args = ap.parse_args()
    tokenizer = REAL_TOK if (REAL_TOK / "tokenizer.json").exists() else DEMO_TOK
    missing = datatrove_missing()
    sides = [s for s in SIDES if not (s == "datatrove" and missing)]
    texts = corpus_texts()
    runs: dict[str, list[Run]] = {s: [] for s in sides}
    startup: dict[str, list[float]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        big, tiny = write_input(tmp / "in", texts, args.mb), write_input(tmp / "tiny", texts[:1], 0)
        mans = {(inp, f): manifest(tmp, inp, tokenizer, f) for inp in (big, tiny) for f in (0.0, 0.9)}

        def run(side: str, inp: Path, out: Path) -> Run:
            if side == "datatrove":
                return run_datatrove(inp, out, tokenizer)
            if side == "plain":
                return run_plain(inp, out, tokenizer)
            return run_crystalmix(mans[inp, 0.9 if side == "crystalmix_fim" else 0.0], out)

        for k in range(args.repeat):
            order = sides[k % len(sides):] + sides[:k % len(sides)]  # rotate: no side always runs first
            for side in order:
                runs[side].append(run(side, big, tmp / f"{side}-{k}"))
                startup[side].append(run(side, tiny, tmp / f"{side}-tiny-{k}").wall)
        extra = scaling(texts, tmp, tokenizer, args.mb, args.repeat) if args.scaling else {}
    print(json.dumps({**report(runs, startup, missing, args, tokenizer), **extra}))


def report(runs: dict[str, list[Run]], startup: dict[str, list[float]], missing: str | None,
           args: argparse.Namespace, tokenizer: Path) -> dict[str, object]:
    cm = runs["crystalmix"]
    rounds: dict[str, list[float]] = {"fim_ratio": [], "fim_ratio_cpu": [], "ratio_vs_plain": [],
                                      "ratio_vs_plain_cpu": []}
    for k, c in enumerate(cm):
        f, p = runs["crystalmix_fim"][k], runs["plain"][k]
        rounds["fim_ratio"].append(c.wall / f.wall)
        rounds["fim_ratio_cpu"].append(c.cpu / f.cpu)
        rounds["ratio_vs_plain"].append((c.tokens / c.wall) / (p.tokens / p.wall))
        rounds["ratio_vs_plain_cpu"].append((c.tokens / c.cpu) / (p.tokens / p.cpu))
        if not missing:
            d = runs["datatrove"][k]
            rounds.setdefault("ratio_vs_datatrove", []).append((c.tokens / c.wall) / (d.tokens / d.wall))
            rounds.setdefault("ratio_vs_datatrove_cpu", []).append((c.tokens / c.cpu) / (d.tokens / d.cpu))
    med = {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    tokens = {s: v[0].tokens for s, v in runs.items() if s != "crystalmix_fim"}
    equal = len(set(tokens.values())) == 1
    note = "" if equal else (
        "; ".join(r[0].note for r in runs.values() if r[0].note) or "sides disagree on the documents' tokens")
    rate = {s: round(statistics.median(r.tokens / r.wall for r in v)) for s, v in runs.items()}
    cpu_rate = {s: round(statistics.median(r.tokens / r.cpu for r in v)) for s, v in runs.items()}
    return {
        "crystalmix_tokens_per_s": rate["crystalmix"], "datatrove_tokens_per_s": rate.get("datatrove"),
        "ratio_vs_datatrove": med.get("ratio_vs_datatrove"),
        "ratio_vs_datatrove_cpu": med.get("ratio_vs_datatrove_cpu"),
        "fim_ratio": med["fim_ratio"], "fim_ratio_cpu": med["fim_ratio_cpu"],
        "ratio_vs_plain": med["ratio_vs_plain"], "ratio_vs_plain_cpu": med["ratio_vs_plain_cpu"],
        "tokens": tokens, "tokens_equal": equal, "tokens_note": note,
        "datatrove_note": missing or "shuffle_documents=False, 1 task, 1 worker",
        "tokens_per_s": rate, "tokens_per_cpu_s": cpu_rate,
        "startup_s": {s: round(statistics.median(v), 2) for s, v in startup.items()},
        "projection_hours": {f"{n}x{m}": round((STAGE2_PLAIN / cpu_rate["crystalmix"] + STAGE2_FIM
                                                / cpu_rate["crystalmix_fim"]) / (n * m) / 3600, 1)
                             for n, m in CLUSTERS},
        "rounds": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
        "input_mb": args.mb, "repeat": args.repeat, "seq_len": SEQ_LEN, "tokenizer": tokenizer.name,
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
