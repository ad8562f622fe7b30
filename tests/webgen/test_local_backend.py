"""The transformers backend end to end on a tiny randomly initialised model built here (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_builder.webgen.backends.local import LocalConfig, TransformersBackend
from sft_builder.webgen.generate import Generator, RunConfig
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import load_seeds

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model(demo_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny_llama")
    model = LlamaForCausalLM(cfg)
    # A random model may well favour EOS; forbid it so that the length limit is what ends generation.
    model.generation_config.suppress_tokens = [tok.eos_token_id]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_batched_generation_is_seeded_and_reports_the_length_limit(tiny_model):
    backend = TransformersBackend(LocalConfig(model=str(tiny_model), max_new_tokens=12, batch_size=2))
    prompts = ["1. Instruction: Build a page.\n2. Instruction:", "A much longer prompt " * 8]
    first = backend.complete(prompts, seed=3)
    assert len(first) == 2 and all(c.text for c in first)
    assert first == backend.complete(prompts, seed=3)
    assert first != backend.complete(prompts, seed=4)
    # EOS is suppressed in the fixture, so the limit is what stops both.
    assert [c.finish_reason for c in first] == ["length", "length"]
    # The prompt is cut off: only new text comes back, however the batch was padded.
    assert not any(c.text.startswith(p[:20]) for c, p in zip(first, prompts, strict=True))


def test_the_loop_runs_on_a_local_model_and_accounts_for_everything(tiny_model, tmp_path):
    backend = TransformersBackend(LocalConfig(model=str(tiny_model), max_new_tokens=16, batch_size=2))
    cfg = RunConfig(
        out=tmp_path / "web.jsonl",
        num=3,
        seed=1,
        seeds=load_seeds(),
        prompt=PromptTemplate(),
        backend_id={"kind": "transformers", "model": "tiny"},
        batch_size=2,
        max_prompts=4,
    )
    state = Generator(cfg, backend).run()
    assert state.prompts == 4 and "max-prompts" in state.stopped
    assert state.candidates >= 4  # at least one (gibberish) block per answer
    assert state.candidates == state.kept + sum(state.rejected.values())
    rejects = cfg.rejects_path.read_text(encoding="utf-8").splitlines()
    assert len(rejects) == sum(state.rejected.values())
    assert state.rejected["cut_off"] >= 1
