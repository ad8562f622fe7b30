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
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "bad_alternation"), (4, "no_messages"), (5, "missing_id"), (6, "unknown_role")]


def test_keep_source_false_relabels(run_adapter) -> None:
    convs, _, _ = run_adapter("conversations", "conversations/interchange.jsonl", keep_source="false")
    assert {c.source for c in convs} == {"conversations"}
    assert {c.meta["orig_source"] for c in convs} == {"mine"}
