"""The dry run: recorded answers replayed through the whole loop, no model, no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from sft_builder.webgen.backends.replay import ReplayBackend, load_recording
from sft_builder.webgen.filters import FilterConfig, first_rejection
from sft_builder.webgen.generate import Generator, RunConfig
from sft_builder.webgen.parse import parse_answer
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import load_seeds

CLI = Path(sys.executable).with_name("crystalmix")


def test_the_bundled_recording_reads_and_shows_the_filters_at_work():
    answers = load_recording()
    assert len(answers) >= 10
    reasons = {first_rejection(c, FilterConfig()) for text, finish in answers
               for c in parse_answer(text, 4, finish == "length")}
    # most items are keepable, and the filters each get something to reject
    assert {None, "text_model_cannot_do", "cut_off", "missing_markup", "broken_markup",
            "instruction_too_short", "malformed_block"} <= reasons


def test_a_prompt_always_gets_the_same_answer_with_usage_counted():
    backend = ReplayBackend()
    a = backend.complete(["prompt one", "prompt two"], 0)
    b = backend.complete(["prompt two", "prompt one"], 99)
    assert [c.text for c in a] == [c.text for c in reversed(b)]
    assert all(c.prompt_tokens and c.completion_tokens and c.completion_tokens > c.prompt_tokens for c in a)
    assert backend.model.startswith("replay-")


def test_bad_recordings_are_user_errors(tmp_path):
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"text": "4. Instruction: x"}\n{"finish_reason": "stop"}\n')
    with pytest.raises(UserError, match=r"answers.jsonl:2: .*'text'"):
        ReplayBackend(bad)
    bad.write_text('{"text": "x", "finish_reason": "eos"}\n')
    with pytest.raises(UserError, match="finish_reason"):
        ReplayBackend(bad)
    with pytest.raises(UserError, match="not found"):
        ReplayBackend(tmp_path / "missing.jsonl")


def test_a_replayed_run_is_deterministic_and_resumable(tmp_path):
    def cfg(out: Path, max_prompts: int | None = None) -> RunConfig:
        return RunConfig(out=out, num=30, seed=5, seeds=load_seeds(), prompt=PromptTemplate(),
                         backend_id={"kind": "replay", "model": ReplayBackend().model}, batch_size=3,
                         max_prompts=max_prompts)

    whole = cfg(tmp_path / "a" / "web.jsonl")
    state = Generator(whole, ReplayBackend()).run()
    assert state.kept == 30 and state.rejected["too_similar"] > 0  # answers repeat across prompts
    part = cfg(tmp_path / "b" / "web.jsonl", max_prompts=6)
    stopped = Generator(part, ReplayBackend()).run()
    assert 0 < stopped.kept < 30
    resumed = Generator(cfg(part.out), ReplayBackend()).run()
    assert part.out.read_bytes() == whole.out.read_bytes()
    assert resumed.usage.to_json() == state.usage.to_json()  # the same file cost the same tokens


@pytest.mark.skipif(not CLI.exists(), reason="no installed console script beside this Python")
def test_dry_run_through_the_installed_console_script(tmp_path):
    out = tmp_path / "web.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # no server, no key
    proc = subprocess.run([str(CLI), "webgen", "--dry-run", "--out", str(out), "--num", "20",
                           "--price-in", "0.15", "--price-out", "0.6"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 20 and len({r["instruction"] for r in records}) == 20
    assert {r["meta"]["backend"] for r in records} == {"replay"}
    state = json.loads(out.with_name("web.state.json").read_text())
    usage = state["usage"]
    assert usage["requests"] == state["prompts"] > 0 and usage["unreported"] == 0
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert "webgen summary" in proc.stderr and "webgen tokens" in proc.stderr
    cost = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6
    assert f"{cost:,.4f}" in proc.stderr
    rejects = out.with_name("web.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == sum(state["rejected"].values()) > 0


def test_dry_run_refuses_another_backend(run_cli, tmp_path):
    code, err = run_cli("webgen", "--dry-run", "--backend", "transformers", "--out", str(tmp_path / "w.jsonl"),
                        "--num", "3")
    assert code == 2 and "--dry-run" in err
