"""The global stage (dedup, decontaminate) and the mix hand their heavy pure batches to an ordered map; the
number of workers running them never changes a decision, nor a byte of any output."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sft_builder.build as build_mod
import sft_builder.mix as mix_mod
import sft_builder.steps.decontaminate as decon_mod
import sft_builder.steps.dedup as dedup_mod
from crystalmix.core.executors import LocalExecutor
from crystalmix.core.records import Conversation
from sft_builder.build import build
from sft_builder.manifest import load_manifest
from sft_builder.mix import chunks, run_mix
from sft_builder.sources.base import Rejected
from sft_builder.steps.base import PerSource
from sft_builder.steps.decontaminate import BenchmarkConfig, Decontaminate, DecontaminateConfig
from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig

from .helpers import conv

rng = random.Random(11)
WORDS = [f"w{i}" for i in range(2000)]
PROMPTS = [" ".join(rng.choice(WORDS) for _ in range(24)) for _ in range(3)]  # benchmark prompts
SOLUTIONS = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(3)]  # benchmark solutions


def _words(n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(text: str) -> str:
    w = text.split()
    w[len(w) // 2] = "edited"
    return " ".join(w)


def _write(path: Path, n: int, tag: str, shared: list[tuple[str, str]]) -> None:
    """Alpaca records: fresh ones, exact and near copies (some of `shared`, the other source's), records
    holding a benchmark prompt or solution, and a few too short to compare."""
    recent: list[tuple[str, str]] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            kind = i % 20
            if kind == 3 and recent:
                q, a = rng.choice(recent)  # exact copy
            elif kind == 7 and recent:
                q, a = rng.choice(recent)
                a = _edit(a)  # near copy
            elif kind == 9 and shared:
                q, a = rng.choice(shared)  # also in the other source
            elif kind == 11:
                q, a = f"{tag} {i}: please solve {PROMPTS[i % 3]}", _words(60)
            elif kind == 13:
                q, a = f"{tag} {i}: write the code", f"Here: {SOLUTIONS[i % 3]} done"
            elif kind == 17:
                q, a = f"{tag} short {i}", "yes it is"
            else:
                q, a = f"{tag} {i} {_words(10)}", _words(rng.randint(40, 120))
                recent.append((q, a))
            fh.write(json.dumps({"instruction": q, "output": a}) + "\n")
    shared.extend(recent[:20])


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    with open(tmp_path / "bench.jsonl", "w", encoding="utf-8") as fh:
        for i, (p, s) in enumerate(zip(PROMPTS, SOLUTIONS, strict=True)):
            fh.write(json.dumps({"task_id": i, "text": p, "code": s}) + "\n")
    shared: list[tuple[str, str]] = []
    _write(tmp_path / "alpha.jsonl", 500, "alpha", shared)
    _write(tmp_path / "beta.jsonl", 300, "beta", shared)
    path = tmp_path / "m.yaml"
    path.write_text("""
seed: 3
sources:
  - {name: alpha, adapter: alpaca, inputs: alpha.jsonl}
  - name: beta
    adapter: alpaca
    inputs: beta.jsonl
    weight: 0.5
    steps:
      decontaminate:
        benchmarks:
          - {name: mini, path: bench.jsonl, fields: [text], id_field: task_id}
steps:
  quality: {min_chars: 5}
  exact_dedup: {}
  near_dedup: {threshold: 0.8, batch_size: 16}
  decontaminate:
    benchmarks:
      - {name: mini, path: bench.jsonl, fields: [text], solution_fields: [code], id_field: task_id}
split: {test_fraction: 0.1}
""", encoding="utf-8")
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(out).parts}


def _small_batches(mp: pytest.MonkeyPatch) -> None:
    """Many batches, chunks, row groups and shards from a few hundred records."""
    mp.setattr(decon_mod, "BATCH", 16)
    mp.setattr(dedup_mod, "EXACT_BATCH", 16)
    mp.setattr(dedup_mod, "BLOCK_BYTES", 2_000)
    mp.setattr(build_mod, "LOAD_BYTES", 2_000)
    mp.setattr(mix_mod, "CHUNK_BYTES", 3_000)
    mp.setattr(mix_mod, "ROW_GROUP", 40)
    mp.setattr(mix_mod, "ROWS_PER_FILE", 200)


class Counting(LocalExecutor):
    """The build's local executor, counting the batches each map hands to its worker processes."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers, start="fork")
        self.sent: Counter[str] = Counter()

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        def each() -> Iterator[Any]:  # counted as the map reads them, so the window stays as it is
            for item in items:
                self.sent[fn.__name__] += 1
                yield item

        return super().imap(fn, each())


def test_global_and_mix_give_the_same_bytes_for_any_worker_count(
    tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch)
    m = load_manifest(manifest)
    runs = {w: _outputs(build(m, tmp_path / f"w{w}", workers=w).out) for w in (1, 2)}
    counting = Counting(3)
    runs[3] = _outputs(build(m, tmp_path / "w3", executor=counting).out)
    assert runs[1] == runs[2] == runs[3]
    sent = counting.sent
    # every kind of heavy batch went to the workers, several of each
    heavy = {"exact_block", "sign_texts", "shared_buckets", "match_texts", "scan_chunk", "row_group"}
    assert {k for k, v in sent.items() if v > 1} == heavy | {"_ingest_worker"}  # the sources are 2 tasks
    # and the build had something to decide in each step
    report = json.loads(runs[1]["report.json"])
    dropped = json.dumps(report)
    for reason in ('"exact_dedup:duplicate"', '"near_dedup:near_duplicate"', '"decontaminate:mini"',
                   '"mix:weight"'):
        assert reason in dropped, reason
    decon = runs[1]["rejects/decontaminate.jsonl"].decode()
    assert "of the solution of mini/" in decon and "with the prompt of mini/" in decon
    assert sum(1 for k in runs[1] if k.startswith("conversations/train-")) >= 2  # several shards


class Backwards:
    """An ordered map that runs each window of items last first (as workers finishing out of order would),
    yet yields the results in order; it records how far ahead of the consumer it has read."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.calls = 0

    def __call__(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        buf: list[Any] = []
        for item in items:
            buf.append(item)
            if len(buf) == self.window:
                yield from self._run(fn, buf)
                buf = []
        yield from self._run(fn, buf)

    def _run(self, fn: Callable[[Any], Any], buf: list[Any]) -> list[Any]:
        self.calls += len(buf)
        out = [fn(x) for x in reversed(buf)]
        return out[::-1]


def test_dedup_and_decontaminate_decide_alike_under_any_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng2 = random.Random(2)
    base = [" ".join(rng2.choice(WORDS) for _ in range(80)) for _ in range(40)]
    items: list[Any] = []
    for i, t in enumerate(base):
        items.append(conv("question", t, cid=f"o{i}", source="a" if i % 3 else "b"))
        if i % 5 == 0:
            items.append(conv("question", _edit(t), cid=f"n{i}", source="b"))
        if i % 7 == 0:
            items.append(Rejected("a", "adapter", "bad", "f", i, {}))
        if i % 4 == 0:
            items.append(conv("question", t, cid=f"x{i}", source="b"))  # an exact copy
        if i % 6 == 0:
            answer = " ".join(rng2.choice(WORDS) for _ in range(80))
            items.append(conv(f"copy: {PROMPTS[0]}", answer, cid=f"c{i}", source="a"))
    (tmp_path / "bench.jsonl").write_text(json.dumps({"text": PROMPTS[0]}) + "\n", encoding="utf-8")
    cfg = DecontaminateConfig(benchmarks=(BenchmarkConfig(name="mini", path=str(tmp_path / "bench.jsonl"),
                                                          fields=("text",)),))

    monkeypatch.setattr(dedup_mod, "EXACT_BATCH", 5)

    def run(imap: Any) -> list[Any]:
        exact = ExactDedup(ExactDedupConfig(), imap=imap)
        near = NearDedup(NearDedupConfig(batch_size=4), imap=imap)
        per = PerSource("decontaminate", {"a": Decontaminate(cfg, imap=imap, batch_size=3)})
        out = list(per.run(near.run(exact.run(items))))
        return [(type(x).__name__, x.id if isinstance(x, Conversation) else x.record.get("id"),
                 getattr(x, "step", None), getattr(x, "detail", None)) for x in out]

    backwards = Backwards(3)
    assert run(backwards) == run(map)
    assert backwards.calls > 10
    got = run(map)
    assert sum(1 for g in got if g[2] == "exact_dedup") == len(range(0, 40, 4))
    assert sum(1 for g in got if g[2] == "near_dedup") == len(range(0, 40, 5))  # one of each edited pair
    assert sum(1 for g in got if g[2] == "decontaminate") == len([i for i in range(40) if i % 6 == 0])


def test_per_source_steps_see_runs_and_keep_the_order(tmp_path: Path) -> None:
    (tmp_path / "bench.jsonl").write_text(json.dumps({"text": PROMPTS[1]}) + "\n", encoding="utf-8")
    cfg = DecontaminateConfig(benchmarks=(BenchmarkConfig(name="mini", path=str(tmp_path / "bench.jsonl"),
                                                          fields=("text",)),))
    seen: list[int] = []

    class Counting(Decontaminate):
        def run(self, items: Iterable[Any]) -> Iterator[Any]:
            got = list(items)
            seen.append(len(got))
            return super().run(got)

    items: list[Any] = [conv(PROMPTS[1], "x", cid="a1", source="a"), Rejected("a", "adapter", "bad", "f", 1, {}),
                        conv("fine", "x", cid="a2", source="a"), conv(PROMPTS[1], "x", cid="b1", source="b"),
                        conv(PROMPTS[1], "x", cid="a3", source="a"), conv("fine", "x", cid="a4", source="a")]
    out = list(PerSource("decontaminate", {"a": Counting(cfg)}).run(items))
    assert [x.id if isinstance(x, Conversation) else (x.step, x.record.get("id")) for x in out] == [
        ("decontaminate", "a1"), ("adapter", None), "a2", "b1", ("decontaminate", "a3"), "a4"]
    assert seen == [3, 2]  # two runs of source a (the reject passes inside the first); b has no step


def test_scan_chunks_cover_the_file_at_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * (i % 17)}).encode() + b"\n" for i in range(200)]
    path.write_bytes(b"".join(lines))
    data = path.read_bytes()
    for size in (1, 7, 100, 1_000, 10**9):
        ranges = list(chunks(path, size))
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(data[s - 1 : s] == b"\n" for s, _ in ranges[1:])
        assert b"".join(data[s:e] for s, e in ranges) == data
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert list(chunks(tmp_path / "empty.jsonl")) == []


def test_mix_bytes_do_not_depend_on_the_chunks(tmp_path: Path, manifest: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    m = load_manifest(manifest)
    out = build(m, tmp_path / "out", workers=1).out
    kept = next((out / ".work").glob("global-*")) / "kept.jsonl"
    results = []
    for size, imap in ((None, map), (500, Backwards(2)), (1, map)):
        folder = tmp_path / f"mix{size}"
        folder.mkdir()
        monkeypatch.setattr(mix_mod, "CHUNK_BYTES", size or mix_mod.CHUNK_BYTES)
        stats = run_mix(m, kept, folder, imap=imap)
        stats.pop("seconds")
        results.append((stats, {p.name: p.read_bytes() for p in sorted(folder.iterdir())}))
    assert results[0] == results[1] == results[2]


def test_near_dedup_first_loads_the_stage_files_on_the_workers(
    tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no exact dedup before it, the global stage reads its input through `load_stage_files`: blocks
    parsed on the workers, the same bytes as one process."""
    _small_batches(monkeypatch)
    text = manifest.read_text(encoding="utf-8").replace("  exact_dedup: {}\n", "")
    assert "exact_dedup" not in text
    manifest.write_text(text, encoding="utf-8")
    m = load_manifest(manifest)
    one = _outputs(build(m, tmp_path / "w1", workers=1).out)
    counting = Counting(2)
    assert _outputs(build(m, tmp_path / "w2", executor=counting).out) == one
    assert counting.sent["parse_stage_lines"] > 1 and "exact_block" not in counting.sent
    assert '"near_dedup:near_duplicate"' in json.dumps(json.loads(one["report.json"]))
