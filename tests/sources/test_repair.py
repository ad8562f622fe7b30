"""The shared turn repair: one empty turn costs one round, not the conversation, in every multi-turn adapter."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from crystalmix.core.records import Conversation, InvalidRecordError
from sft_builder.sources.base import RawRecord, make_adapter
from sft_builder.sources.common import repair_turns

from .conftest import turns

U, A, S = "user", "assistant", "system"


@pytest.mark.parametrize(("given", "kept", "fixes"), [
    # the 2nd answer of four rounds is empty: that round goes, the other three stay
    ([(U, "q1"), (A, "a1"), (U, "q2"), (A, ""), (U, "q3"), (A, "a3"), (U, "q4"), (A, "a4")],
     [(U, "q1"), (A, "a1"), (U, "q3"), (A, "a3"), (U, "q4"), (A, "a4")], ["dropped_unanswered_pair"]),
    # an empty question with an answer: the pair goes too (an answer to nothing)
    ([(U, " "), (A, "a1"), (U, "q2"), (A, "a2")], [(U, "q2"), (A, "a2")], ["dropped_unprompted_pair"]),
    ([(U, "q1"), (A, "a1"), (U, ""), (A, "\n")], [(U, "q1"), (A, "a1")], ["dropped_empty_pair"]),
    # the final round unanswered (a Guanaco export ending in an empty "### Assistant:")
    ([(U, "q1"), (A, "a1"), (U, "q2"), (A, "")], [(U, "q1"), (A, "a1")], ["dropped_unanswered_pair"]),
    # blank turns inside a run of one role add nothing
    ([(U, "q"), (U, ""), (A, "a"), (A, "  ")], [(U, "q"), (A, "a")], ["dropped_empty_turn"] * 2),
    ([(U, ""), (U, "q"), (A, "a")], [(U, "q"), (A, "a")], ["dropped_empty_turn"]),
    ([(S, ""), (U, "q"), (A, "a")], [(U, "q"), (A, "a")], ["dropped_empty_system"]),
    ([(S, "s"), (A, "hi"), (U, "q"), (A, "a"), (U, "more?")], [(S, "s"), (U, "q"), (A, "a")],
     ["dropped_leading_assistant", "dropped_trailing_user"]),
    ([(U, "a"), (U, "b"), (A, "c")], [(U, "a\n\nb"), (A, "c")], ["merged_turns"]),
    # an empty round between two rounds of one role does not merge them: each keeps its place
    ([(U, "q1"), (A, "a1"), (U, "q2"), (A, ""), (U, "q3"), (A, "a3")],
     [(U, "q1"), (A, "a1"), (U, "q3"), (A, "a3")], ["dropped_unanswered_pair"]),
])
def test_repairs(given: list[tuple[str, str]], kept: list[tuple[str, str]], fixes: list[str]) -> None:
    rep = repair_turns(given)
    assert [(m.role, m.content) for m in rep.messages] == kept
    assert rep.fixes == fixes
    assert given[rep.end][1] == kept[-1][1]  # `end` points at the turn the conversation ends on


def test_valid_turns_pass_unchanged_and_unrepairable_ones_keep_their_reason() -> None:
    rep = repair_turns([(S, "s"), (U, "q"), (A, "a")])
    assert [m.content for m in rep.messages] == ["s", "q", "a"] and rep.fixes == [] and rep.end == 2
    with pytest.raises(InvalidRecordError, match="empty_content"):  # no complete round remains
        repair_turns([(U, "q1"), (A, ""), (U, "q2"), (A, " ")])
    with pytest.raises(InvalidRecordError, match="empty_content"):
        repair_turns([(U, "q1"), (A, ""), (U, "q2")])
    with pytest.raises(InvalidRecordError, match="bad_content"):
        repair_turns([(U, "q"), (A, None)])
    with pytest.raises(InvalidRecordError, match="unknown_role"):
        repair_turns([(U, "q"), ("robot", "a")])
    # a system turn later on is not repaired around: Conversation rejects it
    with pytest.raises(InvalidRecordError, match="misplaced_system"):
        Conversation("c", "s", repair_turns([(U, "q"), (A, "a"), (S, "s"), (U, "q"), (A, "a")]).messages)


def test_trim_trailing_user_false_keeps_an_unanswered_last_round_and_so_rejects_it() -> None:
    with pytest.raises(InvalidRecordError, match="empty_content"):
        repair_turns([(U, "q1"), (A, "a1"), (U, "q2"), (A, "")], trim_trailing_user=False)
    with pytest.raises(InvalidRecordError, match="no_final_assistant"):
        Conversation("c", "s", repair_turns([(U, "q1"), (A, "a1"), (U, "q2")], trim_trailing_user=False).messages)
    # an empty round in the middle is repaired whatever the option says
    rep = repair_turns([(U, "q1"), (A, ""), (U, "q2"), (A, "a2")], trim_trailing_user=False)
    assert [m.content for m in rep.messages] == ["q2", "a2"]


def test_sharegpt_twelve_turns_with_an_empty_second_answer(run_adapter) -> None:
    """Issue 10, point 1: the conversation is kept without its unanswered round, and the repair is counted."""
    convs, rejects, adapter = run_adapter("sharegpt", "repair/sharegpt_empty_turns.json")
    by_id = {c.meta["orig_id"]: c for c in convs}
    twelve = by_id["twelve_0"]
    assert len(twelve.messages) == 10 and [m.content for m in twelve.messages[:4]] == [
        "Question 0", "Answer 1", "Question 4", "Answer 3"]
    assert turns(by_id["unprompted"]) == [(U, "Real question"), (A, "Real answer")]
    assert turns(by_id["empty_system"]) == [(U, "q"), (A, "a")]
    assert turns(by_id["empty_in_run"]) == [(U, "Part one."), (A, "Done.")]
    assert turns(by_id["last_unanswered"]) == [(U, "q1"), (A, "a1")]
    assert [(r.record["id"], r.reason) for r in rejects] == [("all_empty", "empty_content")]
    assert adapter.stats.fixes == Counter(dropped_unanswered_pair=2, dropped_unprompted_pair=1,
                                          dropped_empty_system=1, dropped_empty_turn=2)


def test_sharegpt_option_keeps_the_unanswered_last_round_out(run_adapter) -> None:
    convs, rejects, _ = run_adapter("sharegpt", "repair/sharegpt_empty_turns.json", trim_trailing_user="false")
    assert "last_unanswered" not in {c.meta["orig_id"] for c in convs}
    assert ("last_unanswered", "empty_content") in {(r.record["id"], r.reason) for r in rejects}


def test_guanaco_text_ending_in_an_empty_assistant_marker(run_adapter) -> None:
    """Issue 10, point 2: the unanswered final round is trimmed, every complete round before it is kept."""
    convs, rejects, adapter = run_adapter("guanaco", "repair/guanaco_empty_answers.jsonl")
    assert [turns(c) for c in convs] == [
        [(U, "What is 2+2?"), (A, "4")],
        [(U, "q2"), (A, "a2")],
    ]
    assert [(r.line, r.reason) for r in rejects] == [(2, "empty_content")]  # no complete round at all
    assert adapter.stats.fixes == Counter(dropped_unanswered_pair=2)


def test_oasst_empty_reply_costs_one_round(tmp_path: Path) -> None:
    """An empty assistant reply inside a tree path: the path keeps its other rounds."""
    def msg(mid: str, role: str, text: str, *replies: dict) -> dict:
        return {"message_id": mid, "role": role, "text": text, "replies": list(replies)}

    tree = msg("p1", "prompter", "q1", msg("a1", "assistant", "", msg(
        "p2", "prompter", "q2", msg("a2", "assistant", "a2"))), msg("a1b", "assistant", "  "))
    adapter = make_adapter("oasst1", {"paths": "all"})
    outs = list(adapter.run([RawRecord(tree, "t.jsonl", 1)]))
    (conv,) = [o for o in outs if not hasattr(o, "reason")]
    assert turns(conv) == [(U, "q2"), (A, "a2")] and conv.id == "oasst1/a2"
    assert [(o.reason) for o in outs if hasattr(o, "reason")] == ["empty_content"]  # the "  " leaf: nothing
    assert adapter.stats.fixes == Counter(dropped_unanswered_pair=1)


def test_interchange_records_get_the_same_repair(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"id": "c1", "source": "s", "messages": [
        {"role": U, "content": "q1"}, {"role": A, "content": ""},
        {"role": U, "content": "q2"}, {"role": A, "content": "a2"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = make_adapter("conversations", {})
    (conv,) = adapter.stream([str(path)])
    assert turns(conv) == [(U, "q2"), (A, "a2")]
    assert adapter.stats.fixes == Counter(dropped_unanswered_pair=1)


def test_build_counts_the_repairs_in_its_report(tmp_path: Path) -> None:
    """The build runs the same repair, and the report (json and markdown) shows each fix."""
    from sft_builder.build import build
    from sft_builder.manifest import load_manifest

    from .conftest import FIX

    sg_file, gu_file = FIX / "repair" / "sharegpt_empty_turns.json", FIX / "repair" / "guanaco_empty_answers.jsonl"
    (tmp_path / "m.yaml").write_text(f"seed: 1\nsources:\n  - {{name: sg, adapter: sharegpt, inputs: {sg_file}}}\n"
                                     f"  - {{name: gu, adapter: guanaco, inputs: {gu_file}}}\n")
    report = build(load_manifest(tmp_path / "m.yaml"), tmp_path / "out").report
    sg, gu = report["sources"]["sg"], report["sources"]["gu"]
    assert (sg["read"], sg["kept"], gu["read"], gu["kept"]) == (6, 5, 3, 2)
    assert sg["adapter_fixes"] == {"dropped_empty_system": 1, "dropped_empty_turn": 2,
                                   "dropped_unanswered_pair": 2, "dropped_unprompted_pair": 1}
    assert gu["adapter_fixes"] == {"dropped_unanswered_pair": 2}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "- `adapter:dropped_unanswered_pair`: 4" in md and "- `adapter:dropped_unprompted_pair`: 1" in md
