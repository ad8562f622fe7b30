"""Token accounting: the server's `usage` per request, totals committed with the output, cost at a price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from werkzeug import Request, Response

from sft_builder.webgen.backends import Completion, Usage
from sft_builder.webgen.backends.openai_compat import HTTPConfig, OpenAICompatBackend
from sft_builder.webgen.generate import Generator, RunConfig
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import load_seeds

from .conftest import chat_reply, completion_reply, fake_answer, json_response


def with_usage(reply: dict, prompt_tokens: int, completion_tokens: int) -> dict:
    return {**reply, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}}


def metered(request: Request) -> Response:
    """A deterministic model that bills len(prompt) // 4 prompt tokens and 100 + seed % 7 completion tokens."""
    body = request.get_json()
    prompt = body["messages"][0]["content"]
    return json_response(with_usage(chat_reply(fake_answer(body["seed"])), len(prompt) // 4, 100 + body["seed"] % 7))


def expected(bodies: list[dict]) -> tuple[int, int]:
    return (sum(len(b["messages"][0]["content"]) // 4 for b in bodies), sum(100 + b["seed"] % 7 for b in bodies))


def make(url: str) -> OpenAICompatBackend:
    return OpenAICompatBackend(HTTPConfig(base_url=url, model="m", backoff=0.001), sleep=lambda s: None)


def config(out: Path, num: int) -> RunConfig:
    return RunConfig(out=out, num=num, seed=3, seeds=load_seeds(), prompt=PromptTemplate(),
                     backend_id={"kind": "openai", "model": "m"}, batch_size=2)


def test_the_backend_reads_usage_from_both_endpoints_and_none_when_absent(server):
    server.expect_ordered_request("/v1/chat/completions").respond_with_json(with_usage(chat_reply("a"), 12, 3))
    server.expect_ordered_request("/v1/chat/completions").respond_with_json(chat_reply("b"))  # no usage
    server.expect_ordered_request("/v1/chat/completions").respond_with_json(
        {**chat_reply("c"), "usage": {"prompt_tokens": "many", "completion_tokens": -1}})  # nonsense: not counted
    out = make(server.url_for("/v1")).complete(["p1", "p2", "p3"], 0)
    assert [(c.prompt_tokens, c.completion_tokens) for c in out] == [(12, 3), (None, None), (None, None)]
    server.clear()
    server.expect_request("/v1/completions").respond_with_json(with_usage(completion_reply("d"), 7, 9))
    backend = OpenAICompatBackend(HTTPConfig(base_url=server.url_for("/v1"), model="m", endpoint="completions"))
    (c,) = backend.complete(["p"], 0)
    assert (c.text, c.prompt_tokens, c.completion_tokens) == ("d", 7, 9)


def test_usage_sums_counts_unreported_requests_and_prices_per_million():
    u = Usage()
    u.add([Completion("x", "stop", 1_000, 250), Completion("y", "stop"), Completion("z", "length", 500, 50)])
    assert u.to_json() == {"requests": 3, "prompt_tokens": 1_500, "completion_tokens": 300, "unreported": 1}
    assert u.cost(price_in=2.0, price_out=8.0) == pytest.approx((1_500 * 2.0 + 300 * 8.0) / 1e6)
    assert Usage.from_json(u.to_json(), 99).to_json() == u.to_json()
    # a state file from before usage was counted: every request it holds is unreported
    assert Usage.from_json(None, 4).to_json() == {"requests": 4, "prompt_tokens": 0, "completion_tokens": 0,
                                                  "unreported": 4}


def test_the_output_records_what_its_batches_cost(tmp_path, server):
    server.expect_request("/v1/chat/completions").respond_with_handler(metered)
    cfg = config(tmp_path / "web.jsonl", num=15)
    gen = Generator(cfg, make(server.url_for("/v1")))
    state = gen.run()
    bodies = [json.loads(req.data) for req, _ in server.log]
    prompt_tokens, completion_tokens = expected(bodies)
    assert state.usage.requests == state.prompts == len(bodies)
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert gen.spent.to_json() == state.usage.to_json()  # one thread, nothing discarded
    saved = json.loads(cfg.state_path.read_text())["usage"]
    assert saved == {"requests": len(bodies), "prompt_tokens": prompt_tokens,
                     "completion_tokens": completion_tokens, "unreported": 0}


def test_resume_adds_to_the_totals_and_a_lost_batch_is_spent_but_not_in_the_output(tmp_path, server):
    server.expect_request("/v1/chat/completions").respond_with_handler(metered)
    cfg = config(tmp_path / "web.jsonl", num=40)
    first = Generator(cfg, make(server.url_for("/v1")))
    real_commit = first._commit

    def commit(batch, shown, completions):  # the process dies after batch 1's answers came, before its commit
        if batch == 1:
            raise KeyboardInterrupt
        real_commit(batch, shown, completions)

    first._commit = commit  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert first.spent.requests == 4 and first.state.usage.requests == 2  # spent on 2 batches, committed 1
    resumed = Generator(cfg, make(server.url_for("/v1")))
    assert resumed.state.usage.to_json() == first.state.usage.to_json()  # read back from the state file
    state = resumed.run()
    # the output's total: the committed requests of both runs (batch 1 was asked again by the second run)
    committed = [json.loads(req.data) for req, _ in server.log]
    del committed[2:4]  # the answers of the batch that died with the first process
    assert state.usage.requests == state.prompts == len(committed) > 4
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == expected(committed)


def test_cli_prints_tokens_and_cost_and_reads_the_openai_variables(run_cli, tmp_path, server, monkeypatch):
    def fixed(request: Request) -> Response:
        assert request.headers.get("Authorization") == "Bearer sk-from-env"
        return json_response(with_usage(chat_reply(fake_answer(request.get_json()["seed"])), 1_000, 500))

    server.expect_request("/v1/chat/completions").respond_with_handler(fixed)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url_for("/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    out = tmp_path / "web.jsonl"
    code, err = run_cli("webgen", "--out", str(out), "--num", "8", "--model", "m", "--batch-size", "2",
                        "--price-in", "2.5", "--price-out", "10")
    assert code == 0, err
    usage = json.loads(out.with_name("web.state.json").read_text())["usage"]
    n = usage["requests"]
    assert n > 0 and usage == {"requests": n, "prompt_tokens": 1_000 * n, "completion_tokens": 500 * n,
                               "unreported": 0}
    assert "webgen tokens" in err and f"{1_000 * n:,}" in err and f"{500 * n:,}" in err
    assert f"{n * (1_000 * 2.5 + 500 * 10) / 1e6:,.4f}" in err  # the cost at those prices


def test_a_server_without_usage_is_flagged_as_a_minimum(run_cli, tmp_path, seeded_server, monkeypatch):
    srv = seeded_server()  # answers carry no usage
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "3", "--model", "m",
                        "--base-url", srv.url_for("/v1"), "--price-in", "1", "--price-out", "1")
    assert code == 0, err
    assert "without usage" in err and "minimum" in err


def test_model_and_base_url_are_asked_for(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "3", "--base-url", "http://x/v1")
    assert code == 2 and "needs --model" in err
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "3", "--model", "m")
    assert code == 2 and "OPENAI_BASE_URL" in err
