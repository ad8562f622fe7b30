"""Hostile servers and prompts (issue 13): no command execution from a prompt template, no secret in any
message, no unbounded answer in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from werkzeug import Request, Response

from crystalmix.core.errors import UserError
from crystalmix.core.redact import MASK, redact
from sft_builder.webgen.backends.openai_compat import HTTPConfig, OpenAICompatBackend
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import SeedTask

from .conftest import chat_reply

KEY = "sk-live-0123456789abcdefSECRET"


def echo_headers(request: Request) -> Response:
    """What a careless proxy does: the request's headers back in the error body."""
    return Response(json.dumps({"error": "unauthorized", "headers": dict(request.headers)}), 401,
                    content_type="application/json")


def backend(url: str, **kw) -> OpenAICompatBackend:
    cfg = HTTPConfig(base_url=url, model="m", backoff=0.0, max_backoff=0.0, **kw)
    return OpenAICompatBackend(cfg, sleep=lambda s: None)


# -- the prompt template ------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",  # the immutable sandbox: no mutation at all
])
def test_the_prompt_template_runs_in_a_sandbox(tmp_path: Path, payload: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "prompt.txt"
    p.write_text("List tasks.\n" + payload + "\n")
    seeds = [SeedTask("s1", "Make a page", "", "<html></html>")]
    with pytest.raises(UserError, match=r"prompt\.txt: prompt template: .*(unsafe|not safely|immutable|access)"):
        PromptTemplate(p).render(tuple(seeds))
    assert not (tmp_path / "MARKER").exists()


def test_the_bundled_prompt_still_renders_in_the_sandbox() -> None:
    text = PromptTemplate(num_tasks=5).render((SeedTask("s1", "Make a navbar", "", "<nav></nav>"),))
    assert "Make a navbar" in text


def test_prompt_injection_through_the_cli_is_one_line(run_cli, tmp_path: Path, seeded_server,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.txt"
    p.write_text("{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}")
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "2", "--prompt", str(p),
                        "--base-url", seeded_server().url_for("/v1"), "--model", "m")
    assert code == 2 and "evil.txt: prompt template" in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


# -- secrets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "gone"), [
    (f"HTTP 401: {{'Authorization': 'Bearer {KEY}'}}", KEY),
    ('{"authorization": "Bearer abc.def-123456"}', "abc.def-123456"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("https://alice:hunter2@llm.example.com/v1/chat", "hunter2"),
    ("https://tok3n@llm.example.com/v1", "tok3n"),
    ("http://h/v1/chat?api_key=abcd1234&x=1", "abcd1234"),
    ("http://h/v1?key=zzzz9999", "zzzz9999"),
    ('X-Api-Key: 5f2b7c9d1e3a', "5f2b7c9d1e3a"),
    ('"api_key": "qwertyuiop123"', "qwertyuiop123"),
    ("token hf_abcdefghijklmnopqrstuvwxyz01", "hf_abcdefghijklmnopqrstuvwxyz01"),
])
def test_redact_masks_credentials(text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out and MASK in out


@pytest.mark.parametrize("text", [
    "m.yaml:3: sources[0].weight: must be >= 0",
    "tokenizer 'demo': not a tokenizer folder",
    "/data/user@host/file.jsonl: not found",
    "git@github.com:org/repo.git",
    "api_key: must be a string",
])
def test_redact_leaves_ordinary_messages_alone(text: str) -> None:
    assert redact(text) == text


def test_a_given_secret_is_masked_anywhere() -> None:
    assert redact(f"x{KEY}y and {KEY}", secrets=(KEY, None, "ab")) == f"x{MASK}y and {MASK}"


def test_a_server_echoing_headers_never_gets_the_key_printed(server) -> None:
    server.expect_request("/v1/chat/completions").respond_with_handler(echo_headers)
    with pytest.raises(UserError) as info:
        backend(server.url_for("/v1"), api_key=KEY).complete(["p"], 0)
    message = str(info.value)
    assert "HTTP 401" in message and "unauthorized" in message
    assert KEY not in message and "SECRET" not in message
    req, _ = server.log[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"  # it was sent, only never shown


def test_credentials_in_the_base_url_are_not_printed(server) -> None:
    server.expect_request("/v1/chat/completions").respond_with_response(Response("down", 503))
    url = server.url_for("/v1").replace("http://", "http://alice:hunter2@") + "?api_key=qs-secret-99"
    with pytest.raises(UserError) as info:
        backend(url, max_retries=1).complete(["p"], 0)
    message = str(info.value)
    assert "no answer after 2 attempts" in message
    assert "hunter2" not in message and "qs-secret-99" not in message and "alice" not in message


def test_the_cli_prints_no_secret(run_cli, tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.expect_request("/v1/chat/completions").respond_with_handler(echo_headers)
    monkeypatch.setenv("MY_KEY", KEY)
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "2", "--model", "m",
                        "--base-url", server.url_for("/v1"), "--api-key-env", "MY_KEY")
    assert code == 2 and "HTTP 401" in err and "Traceback" not in err and KEY not in err
    assert server.log[0][0].headers["Authorization"] == f"Bearer {KEY}"  # sent, never shown
    # credentials in the URL: httpx sends them as Basic auth, which the server echoes back encoded
    url = server.url_for("/v1").replace("http://", "http://bob:s3cr3tpw@")
    code, err = run_cli("webgen", "--out", str(tmp_path / "w2.jsonl"), "--num", "2", "--model", "m",
                        "--base-url", url)
    encoded = server.log[-1][0].headers["Authorization"].split()[-1]
    assert code == 2 and "HTTP 401" in err and "Traceback" not in err
    assert "s3cr3tpw" not in err and encoded not in err and "bob" not in err


# -- caps ------------------------------------------------------------------------------------------------------
def test_a_huge_answer_is_refused_without_reading_it_whole(server) -> None:
    sent = {"bytes": 0}

    def huge(request: Request) -> Response:
        def body():  # 100 MB of a JSON string, streamed with no Content-Length
            yield b'{"choices": [{"message": {"content": "'
            chunk = b"x" * (1 << 20)
            for _ in range(100):
                sent["bytes"] += len(chunk)
                yield chunk
            yield b'"}}]}'
        return Response(body(), 200, content_type="application/json")

    server.expect_request("/v1/chat/completions").respond_with_handler(huge)
    with pytest.raises(UserError, match=r"larger than 2,097,152 bytes"):
        backend(server.url_for("/v1"), max_response_bytes=2 << 20).complete(["p"], 0)
    assert len(server.log) == 1  # not retried: the same server would send it again


def test_a_declared_huge_answer_is_refused_before_reading(server) -> None:
    body = json.dumps(chat_reply("y" * 300_000))
    server.expect_request("/v1/chat/completions").respond_with_data(body, content_type="application/json")
    with pytest.raises(UserError, match="larger than 100,000 bytes"):
        backend(server.url_for("/v1"), max_response_bytes=100_000).complete(["p"], 0)
    (ok,) = backend(server.url_for("/v1")).complete(["p"], 0)  # the default cap takes a normal answer
    assert ok.text == "y" * 300_000


def test_a_huge_error_body_is_cut(server) -> None:
    server.expect_request("/v1/chat/completions").respond_with_response(Response("e" * (5 << 20), 400))
    with pytest.raises(UserError, match=r"HTTP 400\): e{300}$"):
        backend(server.url_for("/v1")).complete(["p"], 0)
