"""The build report's data (histograms, sampled rejects) and report.html: its content, `crystalmix report`,
and a real browser opening it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sft_builder.build import build
from sft_builder.manifest import load_manifest
from sft_builder.report_data import LENGTH_EDGES, RejectSampler, bin_upper, compact_record, length_bin, merge

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo-report")
    result = build(load_manifest(DEMO), out)
    return out, result.report


# -- the data -------------------------------------------------------------------------------------------
def test_length_bins_cover_every_length_once() -> None:
    assert LENGTH_EDGES[:10] == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert len(LENGTH_EDGES) < 330  # bounded whatever the corpus: ~8 bins per doubling up to 2^40
    for n in [*range(0, 3000), 2047, 2048, 2049, 10**6, 2**39]:
        lo = int(length_bin(n))
        assert lo <= n < bin_upper(lo), n
    assert merge({"4": 1, "10": 2}, {"10": 3}) == {"4": 1, "10": 5}
    assert list(merge({"10": 1, "4": 1, "100": 1})) == ["4", "10", "100"]  # numeric order


def _reject(step: str, reason: str, i: int) -> dict:
    return {"step": step, "reason": reason, "source": "s", "file": "f.jsonl", "line": i, "detail": "",
            "record": {"id": f"s/{i}", "messages": [{"role": "user", "content": f"q{i}"}]}}


def test_reject_sampler_is_bounded_uniform_and_deterministic() -> None:
    def run(seed: int, extra: bool = False) -> dict:
        s = RejectSampler(seed)
        for i in range(1, 1001):
            s.offer("rejects/quality.jsonl", i, _reject("quality", "refusal", i))
            if extra:  # another reason interleaved must not change this reason's pick
                s.offer("rejects/quality.jsonl", i, _reject("quality", "too_short", i))
        return s.result()

    a = run(1)
    picked = [x["rejects_line"] for x in a["quality"]["refusal"]]
    assert len(picked) == 3 and picked == sorted(picked)
    assert picked != [1, 2, 3]  # sampled from the whole stream, not the first three
    assert run(1) == a and run(1, extra=True)["quality"]["refusal"] == a["quality"]["refusal"]
    assert run(2) != a
    # over many seeds each position is picked about equally often (a reservoir, not a prefix)
    hits = Counter()
    for seed in range(300):
        s = RejectSampler(seed)
        for i in range(10):
            s.offer("r", i, _reject("a", "b", i))
        hits.update(x["rejects_line"] // 5 for x in s.result()["a"]["b"])
    assert abs(hits[0] - hits[1]) < 0.2 * 450, hits


def test_compact_record_cuts_long_text_and_keeps_raw_records() -> None:
    rec = compact_record({"messages": [{"role": "user", "content": "x" * 5000}]})
    assert rec["messages"][0]["chars"] == 5000 and len(rec["messages"][0]["text"]) < 5000
    assert compact_record('{"id": "broken",') == {"raw": {"text": '{"id": "broken",'}}
    assert "raw" in compact_record({"text": "no markers"})
    lone = compact_record({"messages": [{"role": "user", "content": "a\ud800b"}]})  # as rejects may hold
    assert json.dumps(lone, ensure_ascii=False).encode("utf-8") and "\\ud800" in lone["messages"][0]["text"]


def test_report_json_has_the_histograms_and_samples(demo: tuple[Path, dict]) -> None:
    out, report = demo
    for name, v in report["sources"].items():
        assert sum(v["turns_hist"].values()) == v["kept"], name
        assert sum(int(k) * n for k, n in v["turns_hist"].items()) == v["turns"], name
    for split, st in report["tokenize"].items():
        for name, ps in st["per_source"].items():
            hist = ps["length_hist"]
            assert sum(hist.values()) == ps["conversations"], (split, name)
            assert int(max(hist, key=int)) <= ps["max_tokens"] < bin_upper(int(max(hist, key=int)))
    samples = report["reject_samples"]
    by_reason = Counter()
    for v in report["sources"].values():
        by_reason.update({tuple(k.split(":", 1)): n for k, n in v["dropped"].items()})
    assert {(st, r) for st, rs in samples.items() for r in rs if st != "tokenize"} == set(by_reason)
    for (step, reason), n in by_reason.items():
        got = samples[step][reason]
        assert len(got) == min(n, 3)
        for smp in got:  # each sample points at its own line of the published rejects file
            lines = (out / smp["rejects_file"]).read_text(encoding="utf-8").splitlines()
            line = json.loads(lines[smp["rejects_line"] - 1])
            assert (line["step"], line["reason"], line["line"]) == (step, reason, smp["line"])
            assert smp["rejects_file"] == f"rejects/{step}.jsonl"
