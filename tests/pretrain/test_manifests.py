"""The shipped stage manifests load and carry LLM360's published numbers (FIDELITY.md section 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.config import StageConfig, load_manifest

from .conftest import ROOT

MANIFESTS = ROOT / "manifests" / "pretrain"
# DESIGN.md section 4 and FIDELITY.md section 4, as published (rounded there to the digits given)
STAGE1 = {"arxiv": .04325, "book": .04131, "c4": .26650, "commoncrawl": .53346, "github": .04963,
          "stackexchange": .03168, "wikipedia": .03417}
STAGE2 = {"arxiv": .0160839, "book": .0153586, "c4": .0990998, "commoncrawl": .1983898, "github": .0184546,
          "stackexchange": .0117849, "wikipedia": .0127109, "starcoder": .6281176}
STAGE3 = {"css": .08793, "javascript": .18371, "html": .18537, "python": .34270, "sp_arxiv": .016663,
          "sp_book": .008314, "sp_c4": .016857, "sp_commoncrawl": .058283, "sp_stackexchange": .008380,
          "sp_wikipedia": .058359, "starcoder_fim_replay": .033440}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SLIMPAJAMA_DIR", "STARCODERDATA_DIR", "STAGE1_DIR", "STAGE2_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("CRYSTALCODER_TOKENIZER", "demo")


def _weights(cfg: StageConfig) -> dict[str, float]:
    out = {o.name: o.weight for s in cfg.sources for o in s.outputs()}
    out.update({r.name: r.weight for r in cfg.replay})
    return out


def _digits(x: float) -> int:
    return len(f"{x:.7f}".rstrip("0").split(".")[1])


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_every_manifest_loads(name: str) -> None:
    cfg = load_manifest(MANIFESTS / name)
    assert cfg.sources and cfg.seq_len >= 8


@pytest.mark.parametrize(("twin", "published"), [("stage1", STAGE1), ("stage2", STAGE2), ("stage3", STAGE3)])
def test_weights_are_llm360s(twin: str, published: dict[str, float]) -> None:
    for name in (f"{twin}.yaml", f"{twin}_llm360.yaml"):
        weights = _weights(load_manifest(MANIFESTS / name))
        assert set(weights) == set(published), name
        for key, value in published.items():
            assert round(weights[key], _digits(value)) == value, (name, key, weights[key])
        assert abs(sum(weights.values()) - 1) < 1e-6


def test_stage3_replays_stage2_starcoder_and_slimpajama_first_tenth(tmp_path: Path) -> None:
    cfg = load_manifest(MANIFESTS / "stage3.yaml")
    assert {r.data_subset for r in cfg.replay} == {"0.0-0.1"} and len(cfg.replay) == 7
    starcoder = next(r for r in cfg.replay if r.name == "starcoder_fim_replay")
    assert starcoder.folders == tuple(str(tmp_path / "stage2_dir" / "starcoder" / f"epoch-{e}") for e in (0, 1))
    assert not any("github" in f for r in cfg.replay for f in r.folders)


def test_llm360_twins_use_the_faithful_modes() -> None:
    for stage in ("stage1", "stage2", "stage3"):
        cfg = load_manifest(MANIFESTS / f"{stage}_llm360.yaml")
        assert cfg.tokenization == "cerebras" and cfg.tail == "drop" and cfg.model_vocab_size == 32032
        assert stage == "stage3" or cfg.split_method == "file_parity"
        for src in cfg.sources:
            code = src.name != "slimpajama"
            assert src.ftfy == code and (src.fim.mode == "llm360" or src.fim.rate == 0)
    eval_cfg = load_manifest(MANIFESTS / "eval_arxiv.yaml")
    assert [o.name for o in eval_cfg.sources[0].outputs()] == ["arxiv_val"]
    assert "/validation/" in eval_cfg.sources[0].paths[0] and eval_cfg.tokenization == "cerebras"
