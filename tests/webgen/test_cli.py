"""`crystalmix webgen` from the command line: a full run, a resume, and one-line user errors."""

from __future__ import annotations

import json

import pytest


def test_run_then_resume_with_a_larger_num(run_cli, tmp_path, seeded_server, monkeypatch, capsys):
    srv = seeded_server()
    out = tmp_path / "web.jsonl"
    args = [
        "--out",
        str(out),
        "--seed",
        "3",
        "--backend",
        "openai",
        "--base-url",
        srv.url_for("/v1"),
        "--model",
        "m",
        "--batch-size",
        "2",
        "--concurrency",
        "2",
    ]
    code, err = run_cli("webgen", *args, "--num", "12")
    assert code == 0, err
    assert "webgen summary" in err and "kept" in err and "too_similar" in err
    assert len(out.read_text().splitlines()) == 12
    code, err = run_cli("webgen", *args, "--num", "20")
    assert code == 0, err
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 20 and len({r["instruction"] for r in records}) == 20


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "m"], "needs --base-url"),
        (
            ["--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--seeds", "/nonexistent.jsonl"],
            "not found",
        ),
        (["--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(run_cli, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the default of --base-url
    code, err = run_cli("webgen", "--out", str(tmp_path / "w.jsonl"), "--num", "5", *extra)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_changed_settings_on_an_existing_output_are_refused(run_cli, tmp_path, seeded_server, monkeypatch, capsys):
    srv = seeded_server()
    base = [
        "--out",
        str(tmp_path / "w.jsonl"),
        "--num",
        "3",
        "--base-url",
        srv.url_for("/v1"),
        "--model",
        "m",
    ]
    assert run_cli("webgen", *base)[0] == 0
    code, err = run_cli("webgen", *base, "--similarity", "0.5")
    assert code == 2 and "other settings" in err


def test_max_prompts_ends_normally_but_a_stalled_model_is_an_error(run_cli, tmp_path, server, monkeypatch, capsys):
    from .conftest import block, chat_reply

    answer = block(4, "Create a responsive navigation bar for a bakery using flexbox.", "<nav>Home</nav>")
    server.expect_request("/v1/chat/completions").respond_with_json(chat_reply(answer))
    base = ["--base-url", server.url_for("/v1"), "--model", "m", "--batch-size", "10", "--num", "5"]
    code, err = run_cli("webgen", "--out", str(tmp_path / "a.jsonl"), *base, "--max-prompts", "20")
    assert code == 0 and "--max-prompts 20 reached" in err
    code, err = run_cli("webgen", "--out", str(tmp_path / "b.jsonl"), *base)
    assert code == 2 and "nothing kept from the last 200 prompts" in err
    assert "too_similar" in err  # the reasons table came first
