"""Benchmark reading inputs through fsspec URLs against the local fast path, on the same bytes.

Prints one JSON line: records/s of `iter_records` over a generated JSON Lines file (plain and zstd) read from a
``memory://`` URL and from a ``file://`` URL, each divided by records/s over the same file as a local path, in
this run (``ratio_memory``, ``ratio_file``, ``ratio_memory_zst``, ``ratio_file_zst``; 1.0 = no cost). Speeds
are CPU time of this process, best of interleaved rounds (wall time on a shared machine mostly measures the
neighbours). Also ``digest_mb_per_s_memory`` / ``_local``: the streamed content digest a stage key reads, in MB
of input per CPU second. The file lives in a temporary folder (in /dev/shm when present), deleted at the end.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crystalmix.core.digest import file_digest  # noqa: E402
from crystalmix.core.readers import iter_records  # noqa: E402

N_RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
WORDS = "the model data token train chat code python json value answer question list file stream".split()


def _file(folder: Path) -> bytes:
    rng = random.Random(0)
    lines = []
    for i in range(N_RECORDS):
        turns = [{"from": "human", "value": " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))},
                 {"from": "gpt", "value": " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))}]
        lines.append(json.dumps({"id": f"r{i}", "conversations": turns}))
    return ("\n".join(lines) + "\n").encode()


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _count(spec: str) -> int:
    return sum(1 for _ in iter_records(spec))


def main() -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        data = _file(folder)
        packed = zstandard.ZstdCompressor().compress(data)
        (folder / "a.jsonl").write_bytes(data)
        (folder / "a.jsonl.zst").write_bytes(packed)
        fs = fsspec.filesystem("memory")
        fs.pipe_file("/bench-url/a.jsonl", data)
        fs.pipe_file("/bench-url/a.jsonl.zst", packed)
        specs = {}
        for ext in (".jsonl", ".jsonl.zst"):
            tag = "_zst" if ext.endswith("zst") else ""
            specs[f"local{tag}"] = str(folder / f"a{ext}")
            specs[f"memory{tag}"] = f"memory://bench-url/a{ext}"
            specs[f"file{tag}"] = (folder / f"a{ext}").as_uri()
        assert len({_count(s) for s in specs.values()}) == 1  # the same records every way
        best: dict[str, float] = {}
        for _ in range(ROUNDS):  # interleaved: each round times every way once
            for name, spec in specs.items():
                t = _cpu(lambda spec=spec: _count(spec))
                best[name] = min(best.get(name, t), t)
        dig: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, spec in (("local", str(folder / "a.jsonl")), ("memory", "memory://bench-url/a.jsonl")):
                t = _cpu(lambda spec=spec: file_digest(spec))
                dig[name] = min(dig.get(name, t), t)
        fs.rm("/bench-url", recursive=True)
    mb = len(data) / 1e6
    out = {"records": N_RECORDS, "mb": round(mb, 1), "rounds": ROUNDS,
           "local_records_per_s": round(N_RECORDS / best["local"]),
           **{f"ratio_{k}": round(best["local" + ("_zst" if k.endswith("_zst") else "")] / v, 3)
              for k, v in best.items() if not k.startswith("local")},
           "digest_mb_per_s_local": round(mb / max(dig["local"], 1e-9)),
           "digest_mb_per_s_memory": round(mb / max(dig["memory"], 1e-9))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
