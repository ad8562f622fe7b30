"""`allow_empty_final_answer`: LLM360's faithful mode keeps a conversation whose last answer is empty; the
default repairs it away or rejects it with a reason. Also: interchange documents through `conversations`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crystalmix.core.records import Conversation, Rejected
from sft_builder.sources.base import make_adapter

ONE_ROUND = [("user", "Say nothing."), ("assistant", "")]
TWO_ROUNDS = [("user", "Hi"), ("assistant", "Hello!"), ("user", "Now say nothing."), ("assistant", "")]


def _run(adapter: str, path: Path, **options: object) -> tuple[list[Conversation], list[Rejected], object]:
    a = make_adapter(adapter, options)
    out = list(a.stream([str(path)]))
    return [o for o in out if isinstance(o, Conversation)], [o for o in out if isinstance(o, Rejected)], a


def _write(tmp_path: Path, adapter: str, turns: list[tuple[str, str]]) -> Path:
    p = tmp_path / f"{adapter}.jsonl"
    if adapter == "conversations":
        rec = {"id": "x", "source": "s", "messages": [{"role": r, "content": c} for r, c in turns]}
    elif adapter == "sharegpt":
        rec = {"id": "x", "conversations": [{"from": "human" if r == "user" else "gpt", "value": c}
                                            for r, c in turns]}
    else:
        rec = {"instruction": turns[0][1], "output": turns[1][1]}
    p.write_text(json.dumps(rec) + "\n")
    return p


@pytest.mark.parametrize("adapter", ["conversations", "sharegpt", "alpaca"])
def test_default_rejects_a_lone_empty_answer_and_faithful_mode_keeps_it(tmp_path: Path, adapter: str) -> None:
    p = _write(tmp_path, adapter, ONE_ROUND)
    kept, rejects, _ = _run(adapter, p)
    assert not kept and [r.reason for r in rejects] == ["empty_content"]
    kept, rejects, a = _run(adapter, p, allow_empty_final_answer=True)
    assert not rejects
    assert [(m.role, m.content) for m in kept[0].messages] == ONE_ROUND
    assert json.loads(kept[0].to_json_bytes())["messages"][-1] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("adapter", ["conversations", "sharegpt"])
def test_multi_round_keeps_the_empty_last_round_only_when_asked(tmp_path: Path, adapter: str) -> None:
    p = _write(tmp_path, adapter, TWO_ROUNDS)
    kept, _, a = _run(adapter, p)
    assert len(kept[0].messages) == 2 and a.stats.fixes["dropped_unanswered_pair"] == 1  # the default repair
    kept, _, a = _run(adapter, p, allow_empty_final_answer=True)
    assert [(m.role, m.content) for m in kept[0].messages] == TWO_ROUNDS
    assert a.stats.fixes["kept_empty_final_answer"] == 1


def test_only_the_final_answer_may_be_empty(tmp_path: Path) -> None:
    turns = [("user", "a"), ("assistant", ""), ("user", "b"), ("assistant", "ok")]
    kept, _, a = _run("conversations", _write(tmp_path, "conversations", turns), allow_empty_final_answer=True)
    assert [(m.role, m.content) for m in kept[0].messages] == turns[2:]  # an inner empty answer is still repaired
    assert a.stats.fixes["dropped_unanswered_pair"] == 1


def test_interchange_documents_pass_through(tmp_path: Path) -> None:
    p = tmp_path / "mixed.jsonl"
    p.write_text(json.dumps({"id": "d", "source": "books", "text": "# A book", "meta": {"file": "b.md", "line": 4}})
                 + "\n" + json.dumps({"id": "e", "source": "books", "text": ""}) + "\n")
    kept, rejects, _ = _run("conversations", p)
    assert [(k.kind, k.text, k.meta["line"]) for k in kept] == [("document", "# A book", 4)]
    assert [(r.line, r.reason) for r in rejects] == [(2, "empty_content")]
