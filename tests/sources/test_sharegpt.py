"""ShareGPT adapter: role map, repairs (counted), chunk groups, and rejects for unknown roles."""

from __future__ import annotations

from collections import Counter

import pytest

from crystalmix.core.errors import UserError
from sft_builder.sources.base import make_adapter

from .conftest import turns


def test_sharegpt_v43_repairs_and_rejects(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("sharegpt", "sharegpt/sharegpt_v43.json")
    by_orig = {c.meta["orig_id"]: c for c in convs}
    assert sorted(by_orig) == ["aaa1111_0", "aaa1111_4", "bbb2222_0", "ccc3333"]
    assert turns(by_orig["aaa1111_0"]) == [("user", "What is 2+2?"), ("assistant", "4"),
                                           ("user", "And 3+3?"), ("assistant", "6")]
    # chunks of one conversation share a group; the leading gpt turn is gone; same-role turns merged
    assert by_orig["aaa1111_0"].group == by_orig["aaa1111_4"].group == "sharegpt/aaa1111"
    assert turns(by_orig["bbb2222_0"]) == [("user", "Tell me a joke."),
                                           ("assistant", "Why did the chicken cross the road?")]
    assert turns(by_orig["ccc3333"]) == [("user", "Part one.\n\nPart two."), ("assistant", "Got both parts.")]
    assert "group" not in by_orig["ccc3333"].meta
    assert adapter.stats.fixes == Counter(dropped_leading_assistant=1, merged_turns=1,
                                          dropped_trailing_user=1)
    reasons = {(r.line, r.reason) for r in rejects}
    # lines where each element starts in the file (checked against the file by hand)
    assert reasons == {(19, "unknown_role"), (23, "empty_content"), (26, "no_messages"),
                       (27, "not_an_object"), (28, "misplaced_system"), (32, "no_final_assistant")}
    unknown = next(r for r in rejects if r.reason == "unknown_role")
    assert "function_call" in unknown.detail and unknown.record["id"] == "ddd4444"
    assert all(r.step == "adapter" and r.source == "sharegpt" for r in rejects)
    assert by_orig["aaa1111_0"].meta["line"] == 2 and by_orig["aaa1111_0"].meta["file"].endswith("v43.json")


def test_role_map_option_turns_unknown_roles_into_known_ones(run_adapter) -> None:
    convs, rejects, _ = run_adapter("sharegpt", "sharegpt/sharegpt_v43.json",
                                    role_map="function_call:assistant", group_chunks="false")
    tool = next(c for c in convs if c.meta["orig_id"] == "ddd4444")
    # the function call and the answer are both assistant turns now, so they merge
    assert turns(tool)[1] == ("assistant", '{"name": "x"}\n\ndone')
    assert "unknown_role" not in {r.reason for r in rejects}
    assert all("group" not in c.meta for c in convs)


def test_slimorca_system_turn_and_extra_keys(run_adapter) -> None:
    convs, rejects, _ = run_adapter("sharegpt", "sharegpt/slimorca.jsonl")
    assert not rejects and len(convs) == 3
    assert convs[0].system == "You are an AI assistant. Provide a detailed answer."
    assert [c.meta["line"] for c in convs] == [1, 2, 4]


def test_evol_idx_and_messages_form(run_adapter) -> None:
    convs, _, _ = run_adapter("sharegpt", "sharegpt/evol.json")
    assert [c.meta["orig_id"] for c in convs] == ["NNqk0pj", "x9Y8z7w"]
    convs, rejects, _ = run_adapter("sharegpt", "sharegpt/messages.jsonl")
    assert [turns(c) for c in convs] == [
        [("system", "Be brief."), ("user", "Name a color."), ("assistant", "Blue.")],
        [("user", "Name a fruit."), ("assistant", "Apple.")],
    ]
    assert [(r.line, r.reason) for r in rejects] == [(2, "invalid_json"), (4, "bad_content")]
    assert rejects[0].record.startswith('{"messages"')


def test_top_level_system_field_is_prepended() -> None:
    from sft_builder.sources.base import RawRecord

    adapter = make_adapter("sharegpt", {})
    rec = RawRecord({"system": "Use tools.", "conversations": [{"from": "human", "value": "q"},
                                                               {"from": "gpt", "value": "a"}]}, "f.json", 1)
    (conv,) = adapter.convert_record(rec)
    assert conv.system == "Use tools."


def test_bad_role_map_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown roles"):
        make_adapter("sharegpt", {"role_map": "tool:robot"})
