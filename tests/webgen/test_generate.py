"""The self-instruct loop against a loopback OpenAI-compatible server: accounting, determinism and resume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from crystalmix.core.errors import UserError
from sft_builder.webgen.backends import Completion
from sft_builder.webgen.backends.openai_compat import HTTPConfig, OpenAICompatBackend
from sft_builder.webgen.generate import Generator, RunConfig
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import load_seeds

from .conftest import block, chat_reply, json_response

SEEDS = load_seeds()
PROMPT = PromptTemplate()


def config(out: Path, num: int, **kw) -> RunConfig:
    base = {"seed": 7, "batch_size": 2, "concurrency": 1}
    base.update(kw)
    return RunConfig(
        out=out, num=num, seeds=SEEDS, prompt=PROMPT, backend_id={"kind": "openai", "model": "m"}, **base
    )


def backend(server, concurrency: int = 1) -> OpenAICompatBackend:
    return OpenAICompatBackend(
        HTTPConfig(base_url=server.url_for("/v1"), model="m", backoff=0.001, concurrency=concurrency),
        sleep=lambda s: None,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


class Crashing:
    """Wraps a backend and dies on its n-th call, like a killed process."""

    def __init__(self, inner: OpenAICompatBackend, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0
        self.model, self.parallel = inner.model, inner.parallel

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner.complete(prompts, seed)

    def close(self) -> None:
        self.inner.close()


def test_every_candidate_accounted_and_kept_ones_are_dissimilar(tmp_path, seeded_server):
    srv = seeded_server()
    cfg = config(tmp_path / "web.jsonl", num=25)
    state = Generator(cfg, backend(srv)).run()
    kept = lines(cfg.out)
    rejects = lines(cfg.rejects_path)
    assert state.kept == len(kept) == 25
    assert state.candidates == state.kept + sum(state.rejected.values())
    assert sum(state.rejected.values()) == len(rejects)
    assert state.rejected["too_similar"] > 0  # the scripted model repeats itself
    for r in kept:
        assert set(r) == {"instruction", "input", "output", "meta"}
        assert r["input"] == ""  # <noinput>
        assert len(r["meta"]["seed_tasks"]) == 3 and r["meta"]["model"] == "m"
        assert len(r["meta"]["most_similar"]) == 10
    # Checked with rouge_score itself: nothing kept is above the threshold vs seeds or earlier keeps.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = [t.instruction for t in SEEDS]
    for r in kept:
        best = max(scorer.score(r["instruction"], p)["rougeL"].fmeasure for p in pool)
        assert best <= 0.7
        assert best == pytest.approx(r["meta"]["max_similarity"])
        pool.append(r["instruction"])


def test_same_file_with_or_without_concurrency(tmp_path, seeded_server):
    srv = seeded_server(delay=True)
    a = config(tmp_path / "a" / "web.jsonl", num=30, concurrency=1)
    b = config(tmp_path / "b" / "web.jsonl", num=30, concurrency=4)
    Generator(a, backend(srv)).run()
    Generator(b, backend(srv, 4)).run()
    assert a.out.read_bytes() == b.out.read_bytes()
    assert a.rejects_path.read_bytes() == b.rejects_path.read_bytes()


def test_resume_after_a_crash_gives_the_uninterrupted_file(tmp_path, seeded_server):
    srv = seeded_server()
    whole = config(tmp_path / "whole" / "web.jsonl", num=40)
    Generator(whole, backend(srv)).run()

    part = config(tmp_path / "part" / "web.jsonl", num=40)
    with pytest.raises(KeyboardInterrupt):
        Generator(part, Crashing(backend(srv), after=1)).run()
    assert 0 < len(lines(part.out)) < 40
    with open(part.out, "ab") as fh:  # a batch that was being written when the process died
        fh.write(b'{"instruction": "half a line')
    Generator(part, backend(srv)).run()
    assert part.out.read_bytes() == whole.out.read_bytes()
    assert part.rejects_path.read_bytes() == whole.rejects_path.read_bytes()


def test_num_counts_what_is_there_and_resume_rebuilds_the_pool(tmp_path, seeded_server):
    srv = seeded_server()
    cfg = config(tmp_path / "web.jsonl", num=10)
    Generator(cfg, backend(srv)).run()
    first = cfg.out.read_text(encoding="utf-8")
    assert len(first.splitlines()) == 10
    cfg.state_path.unlink()  # rebuild from the records alone
    more = config(tmp_path / "web.jsonl", num=24)
    state = Generator(more, backend(srv)).run()
    text = more.out.read_text(encoding="utf-8")
    assert text.startswith(first) and len(text.splitlines()) == 24 == state.kept
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    old = [r["instruction"] for r in lines(more.out)[:10]]
    for r in lines(more.out)[10:]:  # the rebuilt pool still kept later items away from the earlier ones
        assert max(scorer.score(r["instruction"], o)["rougeL"].fmeasure for o in old) <= 0.7
    # Nothing left to do: a rerun is a no-op.
    again = Generator(more, backend(srv)).run()
    assert again.kept == 24 and more.out.read_text(encoding="utf-8") == text


def test_other_settings_on_an_existing_file_are_refused(tmp_path, seeded_server):
    srv = seeded_server()
    Generator(config(tmp_path / "web.jsonl", num=5), backend(srv)).run()
    with pytest.raises(UserError, match="other settings"):
        Generator(config(tmp_path / "web.jsonl", num=10, seed=8), backend(srv))


def test_cut_off_malformed_and_filtered_items_are_counted_by_reason(tmp_path, server):
    good = [
        block(
            4,
            "Create a responsive pricing table for a bakery website using HTML and CSS.",
            "<table><tr><td>Bread</td><td>3</td></tr></table>",
        ),
        block(
            5,
            "Build an accessible signup form with labels for name and email fields.",
            "Use a form element with two inputs and labels.",
        ),
        "6. Instruction: Create a sticky footer for a museum site.\n6. Output:\n<footer>Hi</footer>\n###\n",
        "7. Instruction: Draw a logo for a coffee shop landing page.\n7. Input:\n<noinput>\n7. Output:\n"
        "<svg></svg>\n###\n",
        "8. Instruction: Fix the unclosed tags in this snippet please.\n8. Input:\n<noinput>\n8. Output:\n"
        "<div><span>oops</div>\n###\n",
        "9. Instruction: Write HTML.\n9. Input:\n<noinput>\n9. Output:\n<p>x</p>\n###\n",
        "10. Input:\n<noinput>\n10. Output:\n<p>no instruction</p>\n###\n",
        "11. Instruction: Create a modal dialog that opens from a button with the dialog element.\n"
        "11. Input:\n<noinput>\n11. Output:\n<dialog><p>Hel",
    ]
    answers = ["".join(good)]
    server.expect_request("/v1/chat/completions").respond_with_json(chat_reply(answers[0], "length"))
    cfg = config(tmp_path / "web.jsonl", num=100, batch_size=1, max_prompts=1)
    state = Generator(cfg, backend(server)).run()
    assert state.stopped and state.prompts == 1
    assert state.kept == 2  # items 4 and 6 (a missing Input line is tolerated)
    assert dict(state.rejected) == {
        "missing_markup": 1,
        "text_model_cannot_do": 1,
        "broken_markup": 1,
        "instruction_too_short": 1,
        "malformed_block": 1,
        "cut_off": 1,
    }
    assert state.candidates == 8
    rejects = lines(cfg.rejects_path)
    assert {(r["source"], r["step"]) for r in rejects} == {("webgen", "webgen")}  # the one reject type
    reasons = {r["record"]["meta"]["item"]: r["reason"] for r in rejects}
    assert reasons == {
        5: "missing_markup",
        7: "text_model_cannot_do",
        8: "broken_markup",
        9: "instruction_too_short",
        10: "malformed_block",
        11: "cut_off",
    }


def test_a_model_that_repeats_itself_stops_with_a_reason(tmp_path, server):
    reply = json_response(
        chat_reply(
            block(
                4,
                "Create a responsive navigation bar for a bakery using flexbox.",
                "<nav><a href='/'>Home</a></nav>",
            )
        )
    )
    server.expect_request("/v1/chat/completions").respond_with_response(reply)
    cfg = config(tmp_path / "web.jsonl", num=10, stall_prompts=6)
    state = Generator(cfg, backend(server)).run()
    assert state.kept == 1
    assert state.rejected == {"too_similar": 7}
    assert "nothing kept" in state.stopped


def test_the_alpaca_adapter_reads_the_output(tmp_path, seeded_server):
    from crystalmix.core.records import Conversation
    from sft_builder.sources.base import make_adapter

    srv = seeded_server()
    cfg = config(tmp_path / "web.jsonl", num=6)
    Generator(cfg, backend(srv)).run()
    convs = list(make_adapter("alpaca", source="webalpaca").stream(str(cfg.out)))
    assert len(convs) == 6 and all(isinstance(c, Conversation) for c in convs)
    first = lines(cfg.out)[0]
    assert convs[0].messages[0].content == first["instruction"]
    assert convs[0].messages[1].content == first["output"]
    assert convs[0].meta["record_meta"]["seed_tasks"] == first["meta"]["seed_tasks"]
