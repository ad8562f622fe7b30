"""The OpenAI-compatible backend against a loopback server: both endpoints, retries, refusals."""

from __future__ import annotations

import json
import socket

import pytest
from werkzeug import Response

from crystalmix.core.errors import UserError
from sft_builder.webgen.backends.openai_compat import HTTPConfig, OpenAICompatBackend

from .conftest import chat_reply, completion_reply


def make(url: str, waits: list[float] | None = None, **kw) -> OpenAICompatBackend:
    cfg = HTTPConfig(base_url=url, model="tiny", backoff=0.01, max_backoff=0.05, **kw)
    return OpenAICompatBackend(cfg, sleep=(waits.append if waits is not None else lambda s: None))


def test_chat_request_shape_and_answer(server):
    server.expect_request(
        "/v1/chat/completions", method="POST", headers={"Authorization": "Bearer sk-test"}
    ).respond_with_json(chat_reply("hello"))
    out = make(server.url_for("/v1"), api_key="sk-test", temperature=0.5, max_tokens=99).complete(
        ["p1", "p2"], 10
    )
    assert [(c.text, c.finish_reason) for c in out] == [("hello", "stop"), ("hello", "stop")]
    bodies = [json.loads(req.data) for req, _ in server.log]
    assert [b["seed"] for b in bodies] == [10, 11]
    assert bodies[0]["messages"] == [{"role": "user", "content": "p1"}]
    assert (bodies[0]["model"], bodies[0]["temperature"], bodies[0]["max_tokens"]) == ("tiny", 0.5, 99)


def test_completions_endpoint_and_length_finish(server):
    server.expect_request("/v1/completions").respond_with_json(completion_reply(" more text", "length"))
    (c,) = make(server.url_for("/v1"), endpoint="completions").complete(["the prompt"], 0)
    assert (c.text, c.finish_reason) == (" more text", "length")
    assert json.loads(server.log[0][0].data)["prompt"] == "the prompt"


def test_429_and_500_are_retried_with_backoff_honouring_retry_after(server):
    url = "/v1/chat/completions"
    server.expect_ordered_request(url).respond_with_response(
        Response("slow down", 429, headers={"Retry-After": "0.04"})
    )
    server.expect_ordered_request(url).respond_with_response(Response("oops", 500))
    server.expect_ordered_request(url).respond_with_response(Response("not json", 200))
    server.expect_ordered_request(url).respond_with_json(chat_reply("finally"))
    waits: list[float] = []
    (c,) = make(server.url_for("/v1"), waits).complete(["p"], 0)
    assert c.text == "finally"
    assert len(waits) == 3 and waits[0] >= 0.04  # the server's Retry-After is respected
    assert all(w <= 0.05 for w in waits)


def test_persistent_failure_and_refusal_are_user_errors(server):
    server.expect_request("/v1/chat/completions").respond_with_response(Response("down", 503))
    with pytest.raises(UserError, match="no answer after 3 attempts"):
        make(server.url_for("/v1"), max_retries=2).complete(["p"], 0)
    server.clear()
    server.expect_request("/v1/chat/completions").respond_with_response(Response('{"error": "bad key"}', 401))
    with pytest.raises(UserError, match="HTTP 401.*bad key"):
        make(server.url_for("/v1")).complete(["p"], 0)
    assert len(server.log) == 1  # a refusal is not retried


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    with pytest.raises(UserError, match="ConnectError"):
        make(f"http://127.0.0.1:{port}/v1", waits, max_retries=2, timeout=2).complete(["p"], 0)
    assert len(waits) == 2


def test_a_slow_server_times_out_and_is_retried(server):
    import time

    def slow(request):
        time.sleep(0.5)
        return Response(json.dumps(chat_reply("late")), content_type="application/json")

    server.expect_request("/v1/chat/completions").respond_with_handler(slow)
    waits: list[float] = []
    with pytest.raises(UserError, match="ReadTimeout"):
        make(server.url_for("/v1"), waits, timeout=0.1, max_retries=1).complete(["p"], 0)
    assert len(waits) == 1  # one retry after the first timeout, then the error
