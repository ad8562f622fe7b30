"""The interchange pass-through: valid conversations come back identical, invalid ones are rejected."""

from __future__ import annotations

import json

from .conftest import FIX


def test_pass_through_is_lossless_and_validated(run_adapter) -> None:
    convs, rejects, _ = run_adapter("conversations", "conversations/interchange.jsonl")
    lines = (FIX / "conversations" / "interchange.jsonl").read_text().splitlines()
    first, second = (json.loads(x) for x in lines[:2])
    assert convs[0].to_dict() == first  # its own provenance is kept as it is
    second["meta"] = {"file": str(FIX / "conversations" / "interchange.jsonl"), "line": 2}
    assert convs[1].to_dict() == second  # a record without provenance gets the file and line
    # line 3 (an assistant turn, then an unanswered question) has no round left after the shared repair
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "no_final_assistant"), (4, "no_messages"), (5, "missing_id"), (6, "unknown_role")]


def test_keep_source_false_relabels(run_adapter) -> None:
    convs, _, _ = run_adapter("conversations", "conversations/interchange.jsonl", keep_source="false")
    assert {c.source for c in convs} == {"conversations"}
    assert {c.meta["orig_source"] for c in convs} == {"mine"}


def test_a_repeated_id_is_rejected_as_a_duplicate(tmp_path) -> None:
    from sft_builder.sources.base import make_adapter

    row = {"id": "c1", "source": "s", "messages": [{"role": "user", "content": "q"},
                                                  {"role": "assistant", "content": "a"}]}
    path = tmp_path / "twice.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    outs = list(make_adapter("conversations", {}).stream([str(path)]))
    assert outs[0].id == "c1"
    assert (outs[1].reason, outs[1].duplicate_of, outs[1].line) == ("duplicate_id", "c1", 2)
