"""manifests/stage3a.yaml (the whole CrystalChat mix, crystalmix's defaults) and its LLM360-faithful twin."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sft_builder.build import build
from sft_builder.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
STAGE3A = ROOT / "manifests" / "stage3a.yaml"
TWIN = ROOT / "manifests" / "stage3a_llm360.yaml"
NAMES = ["oasst1_guanaco", "sharegpt_v4_3", "slimorca", "evol_sharegpt", "chatlogs", "codealpaca", "rosetta",
         "evol_codealpaca_v1", "evol_codealpaca_v2", "webalpaca", "textbooks", "programming_books"]
CARD_HUB_IDS = {"chatlogs": "winglian/chatlogs-en-cleaned", "textbooks": "open-phi/textbooks",
                "programming_books": "open-phi/programming_books_llama"}


def _tokens(path: Path) -> dict[str, float]:
    """The "<millions>M tokens" comment of every source (the card's DataMix table)."""
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"- name: (\w+)\s+# ([\d.]+)M tokens", path.read_text(encoding="utf-8"))}


def _all_sources(path: Path) -> dict[str, dict]:
    return {s["name"]: s for s in yaml.safe_load(path.read_text(encoding="utf-8"))["sources"]}


@pytest.mark.parametrize("path", [STAGE3A, TWIN])
def test_the_twelve_subsets_with_the_cards_token_counts(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources = _all_sources(path)
    assert list(sources) == NAMES
    tokens = _tokens(path)
    assert list(tokens) == NAMES
    assert round(sum(tokens.values()), 2) == 1102.50  # the card's total row says 1,102.52 (its rounding)
    books = (tokens["textbooks"] + tokens["programming_books"]) / sum(tokens.values())
    assert round(books, 2) == 0.44
    for name, hub in CARD_HUB_IDS.items():
        assert sources[name]["inputs"] == hub
    m = load_manifest(path)  # offline: hub ids are checked for form, optional local files may be missing
    assert [s.name for s in m.sources] + [n for n, _ in m.skipped] == [n for n in NAMES
                                                                      if n not in ("rosetta", "webalpaca")] + [
        "rosetta", "webalpaca"]
    assert m.tokenize.tokenizer == "LLM360/CrystalChat" and m.tokenize.template == "crystalchat"
    assert m.tokenize.seq_len == 2048
    books_src = [s for s in m.sources if s.adapter == "text"]
    assert [s.name for s in books_src] == ["textbooks", "programming_books"]
    assert all(s.options.column == "markdown" for s in books_src)


def test_default_and_faithful_settings() -> None:
    m = load_manifest(STAGE3A)
    assert m.order == ("clean", "language", "quality", "exact_dedup", "near_dedup", "decontaminate")
    assert (m.tokenize.packing, m.tokenize.output, m.split.test_fraction) == ("bfd", "hdf5", 0.01)
    assert m.source("textbooks").steps["quality"].max_chars >= 10_000_000, "a book is one record"
    twin = load_manifest(TWIN)
    assert twin.order == () and twin.mix.shuffle, "no step LLM360 did not run; records interleaved"
    assert (twin.tokenize.packing, twin.tokenize.output, twin.split.test_fraction) == ("llm360", "megatron-jsonl",
                                                                                       0.0)
    assert all(s.options.allow_empty_final_answer for s in twin.sources if s.adapter != "text")
    assert not any(getattr(s.options, "allow_empty_final_answer", False) for s in m.sources)
    # the same data: every source of the twin reads what stage3a reads
    for s in twin.sources:
        mine = m.source(s.name)
        assert (s.inputs, s.data_files, s.weight, s.epochs, s.max_samples) == (
            mine.inputs, mine.data_files, mine.weight, mine.epochs, mine.max_samples)


def test_the_twin_builds_llm360_rows(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    """The twin's own settings on small local stand-ins for its hub sources: LLM360's JSONL rows, documents and
    conversations interleaved in the stream, every record of every source kept, no test split."""
    demo = ROOT / "manifests" / "demo_data"
    local = {"sharegpt": demo / "sharegpt.json", "alpaca": demo / "code_alpaca.json", "text": demo / "documents"}
    raw = yaml.safe_load(TWIN.read_text(encoding="utf-8"))
    for s in raw["sources"]:
        s["inputs"] = str(local[s["adapter"]])
        s.pop("data_files", None)
        s.pop("optional", None)
        if s["adapter"] == "text":
            s["options"] = {}
    raw["sources"] = [s for s in raw["sources"] if s["name"] in ("slimorca", "codealpaca", "textbooks")]
    raw["tokenize"]["tokenizer"] = str(demo_tokenizer_dir)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    report = build(load_manifest(tmp_path / "m.yaml"), out).report
    assert set(report["steps"]["mix"]["dropped"]) == set() and report["totals"]["test"] == 0
    assert not (out / "tokenized" / "test").exists() or not list((out / "tokenized" / "test").glob("data-*"))
    files = sorted((out / "tokenized" / "train").glob("data-*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert rows
    first = files[0].read_text().split("\n", 1)[0]
    assert first.startswith('{"token_ids": [') and list(json.loads(first)) == ["token_ids", "loss_mask",
                                                                                "label_ids"]
    for r in rows:
        assert len(r["token_ids"]) == len(r["label_ids"]) == len(r["loss_mask"]) == 2048
        assert r["label_ids"][:-1] == r["token_ids"][1:] and any(r["loss_mask"])
    from crystalmix.core.tokenizer import load_tokenizer

    tok = load_tokenizer(demo_tokenizer_dir)
    bos, sys_start = tok.bos_token_id, tok.convert_tokens_to_ids("<|sys_start|>")
    starts = [(r["loss_mask"][k], r["label_ids"][k + 1] == sys_start) for r in rows
              for k in range(2047) if r["label_ids"][k] == bos]
    assert (1, False) in starts, "a document starts inside a row, its <s> label trained, as in LLM360's rows"
    assert (0, True) in starts and all(m == (not chat) for m, chat in starts)
    meta = json.loads((out / "tokenized" / "train" / "metadata.json").read_text())
    assert meta["per_source"]["textbooks"]["documents"] == 3
    assert meta["report"]["packing"] == "llm360"
