"""Benchmark `convert` against a plain loop, and the memory of streaming a 1 GB JSON array.

Prints one JSON line:
- ``ratio_sharegpt`` / ``ratio_alpaca``: records/s of `convert_source` (read, adapt, validate, write output
  and rejects) divided by records/s of a plain loop (``json.loads`` per line + dict access) over the same
  generated JSONL file, in this run. Target: >= 0.5. Speeds are in CPU time of this process (best of
  several interleaved runs), because on a shared machine wall time mostly measures the neighbours; the
  wall-clock ratios are printed too (``*_wall``). Output goes to /dev/shm when present, so the disk is
  not what is measured either.
- ``rss_growth_mb``: peak RSS minus RSS before streaming, in a fresh process that converts a generated
  ~1 GB JSON array with the sharegpt adapter. Target: < 300.
- ``ratio_huge_array``: CPU time to read one ~64 MB record (``BENCH_HUGE_MB``) inside a ``.json`` array
  divided by the time to read the same record as a JSONL line (the core readers, best of 3). Target: <= 3,
  whatever the size: the array decoder is the stdlib's (slower than orjson) and retries a cut element after
  doubling the buffer. A buffer that re-copies itself per chunk grows with the size: 6.4 at 64 MB, 17 at 200 MB.
Generated files live in a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_RECORDS = int(os.environ.get("BENCH_RECORDS", "60000"))
ARRAY_BYTES = int(os.environ.get("BENCH_ARRAY_BYTES", str(1 << 30)))
HUGE_MB = int(os.environ.get("BENCH_HUGE_MB", "64"))
WORDS = ("the model data token train chat code python json value answer question list file stream "
         "memory record adapter schema user assistant system build mix").split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def sharegpt_record(rng: random.Random, i: int) -> dict:
    turns = []
    for t in range(rng.choice((2, 2, 4, 6))):
        turns.append({"from": "human" if t % 2 == 0 else "gpt", "value": _text(rng, rng.randint(10, 120))})
    return {"id": f"{i:08x}_0", "conversations": turns}


def alpaca_record(rng: random.Random, i: int) -> dict:
    return {"instruction": _text(rng, rng.randint(5, 30)), "input": _text(rng, rng.randint(0, 20)),
            "output": _text(rng, rng.randint(20, 200))}


def write_jsonl(path: Path, make, n: int) -> None:  # noqa: ANN001 - a record factory
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps(make(rng, i)) + "\n")


def plain_loop(path: Path, kind: str) -> int:
    """The baseline: json.loads each line and touch every field a converter needs."""
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            d = json.loads(line)
            if kind == "sharegpt":
                _ = d["id"]
                for t in d["conversations"]:
                    _ = (t["from"], t["value"])
            else:
                _ = (d["instruction"], d["input"], d["output"])
            n += 1
    return n


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def ratio(tmp: Path, out_dir: Path, kind: str, make) -> tuple[float, float]:  # noqa: ANN001
    """convert records/s over plain-loop records/s: (by CPU time, by wall time)."""
    from crystalmix.cli.convert import convert_source
    from sft_builder.sources.base import make_adapter

    data = tmp / f"{kind}.jsonl"
    write_jsonl(data, make, N_RECORDS)
    plain_loop(data, kind)  # warm the page cache for both contenders

    def run() -> None:
        report = convert_source(make_adapter(kind, {}), [str(data)], out_dir / f"{kind}.out.jsonl")
        assert report["kept"] == N_RECORDS, report

    plain, conv = [], []
    for _ in range(5):  # interleaved, so a busy neighbour slows both alike
        plain.append(timed(lambda: plain_loop(data, kind)))
        conv.append(timed(run))
    return (min(p[0] for p in plain) / min(c[0] for c in conv),
            min(p[1] for p in plain) / min(c[1] for c in conv))


def huge_record_ratio(tmp: Path) -> float:
    """Reading one huge record from a .json array over reading it from a .jsonl line (CPU time, best of 3)."""
    from crystalmix.core.readers import iter_records

    record = {"instruction": "a", "output": ("word " * 40 + "\n") * (HUGE_MB * 2**20 // 201)}
    array, lines = tmp / "huge.json", tmp / "huge.jsonl"
    array.write_text(json.dumps([record]), encoding="utf-8")
    lines.write_text(json.dumps(record) + "\n", encoding="utf-8")
    del record

    def read(path: Path) -> None:
        assert sum(1 for _ in iter_records(str(path))) == 1

    best = {p: min(timed(lambda p=p: read(p))[0] for _ in range(3)) for p in (array, lines)}
    return best[array] / best[lines]


def write_array(path: Path, size: int) -> int:
    rng = random.Random(1)
    blocks = [json.dumps(sharegpt_record(rng, i), indent=1) for i in range(2000)]  # reused to write fast
    written, n = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        while written < size:
            block = blocks[n % len(blocks)]
            fh.write((",\n" if n else "") + block)
            written += len(block) + 2
            n += 1
        fh.write("\n]\n")
    return n


CHILD = """
import json, sys
from pathlib import Path
from crystalmix.cli.convert import convert_source
from sft_builder.sources.base import make_adapter

def rss_mb(key="VmRSS:"):  # a -c script: bench/procstat.py is not on its path
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024

adapter = make_adapter("sharegpt", {})
before = rss_mb()
report = convert_source(adapter, [sys.argv[1]], Path(sys.argv[2]))
peak = rss_mb("VmHWM:")  # not ru_maxrss: Linux keeps it across exec (the parent bench's peak)
print(json.dumps({"before": before, "peak": peak, "kept": report["kept"], "rejected": report["rejected"]}))
"""


def rss_growth(tmp: Path) -> tuple[float, int]:
    array = tmp / "big.json"
    n = write_array(array, ARRAY_BYTES)
    out = tmp / "big.out.jsonl"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(array), str(out)], capture_output=True, text=True,
                          check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["kept"] == n and res["rejected"] == 0, res
    return res["peak"] - res["before"], array.stat().st_size


def main() -> None:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="crystalmix-bench-") as d, \
            tempfile.TemporaryDirectory(prefix="crystalmix-bench-", dir=shm if shm.is_dir() else None) as o:
        tmp, out_dir = Path(d), Path(o)
        r_share, r_share_wall = ratio(tmp, out_dir, "sharegpt", sharegpt_record)
        r_alpaca, r_alpaca_wall = ratio(tmp, out_dir, "alpaca", alpaca_record)
        growth, size = rss_growth(tmp)
        huge = huge_record_ratio(tmp)
    print(json.dumps({"ratio_sharegpt": round(r_share, 3), "ratio_alpaca": round(r_alpaca, 3),
                      "rss_growth_mb": round(growth, 1), "ratio_huge_array": round(huge, 3),
                      "ratio_sharegpt_wall": round(r_share_wall, 3),
                      "ratio_alpaca_wall": round(r_alpaca_wall, 3), "records": N_RECORDS,
                      "array_mb": round(size / 2**20)}))


if __name__ == "__main__":
    main()
