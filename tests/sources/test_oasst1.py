"""OASST1: best and all paths over flat rows and nested trees, filters, and how candidates are counted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sft_builder.sources.base import make_adapter

from .conftest import FIX, turns

Q, SNAKE, LANG = "What is Python?", "A snake.", "A programming language."


def test_best_path_follows_rank_zero_in_flat_rows(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("oasst1", "oasst1/flat.jsonl")
    assert [turns(c) for c in convs] == [
        [("user", Q), ("assistant", LANG), ("user", "Who made it?"), ("assistant", "Guido van Rossum.")],
        [("user", "Wie geht's?"), ("assistant", "Sehr gut, danke.")],
    ]
    assert convs[0].id == "oasst1/m5" and convs[0].group == "oasst1/T1" and convs[0].meta["line"] == 1
    # the orphan row, the unparsable line and the row of T1 that comes after T2
    assert [(r.line, r.reason) for r in rejects] == [
        (9, "invalid_json"), (8, "orphan_message"), (13, "tree_not_contiguous")]
    assert adapter.stats.records == 13 and adapter.stats.candidates == 5


def test_all_paths_count_leaves_and_filtered_subtrees(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("oasst1", "oasst1/flat.jsonl", paths="all")
    assert sorted(tuple(m.content for m in c.messages) for c in convs) == sorted([
        (Q, SNAKE),
        (Q, LANG, "Who made it?", "Guido van Rossum."),
        (Q, LANG),  # from the unanswered "Thanks" leaf, cut back to its last answer
        ("Wie geht's?", "Sehr gut, danke."),
    ])
    assert Counter(r.reason for r in rejects) == Counter(
        filtered_deleted=1, filtered_review=1, invalid_json=1, orphan_message=1, tree_not_contiguous=1)
    deleted = next(r for r in rejects if r.reason == "filtered_deleted")
    assert [m["message_id"] for m in deleted.record] == ["m1", "m7"]
    assert adapter.stats.fixes == {"dropped_trailing_user": 1}  # the shared repair names it
    assert adapter.stats.candidates == len(convs) + len(rejects) == 9


def test_filters_lang_deleted_review_synthetic(run_adapter) -> None:
    convs, rejects, _ = run_adapter("oasst1", "oasst1/flat.jsonl", lang="en")
    assert len(convs) == 1 and "filtered_lang" in {r.reason for r in rejects}
    convs, _, _ = run_adapter("oasst1", "oasst1/flat.jsonl", paths="all", include_deleted="true",
                              include_failed_review="yes")
    texts = {c.messages[-1].content for c in convs}
    assert {"spam spam", "Gut."} <= texts
    # synthetic: mark the root of T2 as synthetic and drop it
    adapter = make_adapter("oasst1", {"include_synthetic": "false"})
    rows = [json.loads(x) for x in (FIX / "oasst1" / "flat.jsonl").read_text().splitlines()[9:12]]
    rows[0]["synthetic"] = True
    from sft_builder.sources.base import RawRecord

    outs = list(adapter.run(RawRecord(r, "t.jsonl", i + 1) for i, r in enumerate(rows)))
    assert [o.reason for o in outs] == ["filtered_synthetic"]


def test_nested_trees_match_the_flat_rows(run_adapter) -> None:
    flat, _, _ = run_adapter("oasst1", "oasst1/flat.jsonl", paths="all")
    nested, rejects, _ = run_adapter("oasst1", "oasst1/nested.jsonl", paths="all")
    assert sorted(turns(c) for c in nested) == sorted(turns(c) for c in flat)
    assert {c.group for c in nested} == {"oasst1/T1", "oasst1/T2"}
    assert [(r.line, r.reason) for r in rejects if not r.reason.startswith("filtered")] == [(3, "bad_tree")]


def test_flat_parquet_rows(run_adapter, tmp_path: Path) -> None:
    lines = (FIX / "oasst1" / "flat.jsonl").read_text().splitlines()
    rows = [json.loads(x) for i, x in enumerate(lines) if i != 8]  # parquet has no unparsable line
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "oasst.parquet")
    adapter = make_adapter("oasst1", {})
    outs = list(adapter.stream([str(tmp_path / "oasst.parquet")]))
    assert [o.messages[-1].content for o in outs if hasattr(o, "messages")] == [
        "Guido van Rossum.", "Sehr gut, danke."]


def test_unranked_siblings_pick_the_first(run_adapter) -> None:
    from sft_builder.sources.base import RawRecord

    tree = {"message_id": "r", "parent_id": None, "role": "prompter", "text": "q", "replies": [
        {"message_id": "a1", "role": "assistant", "text": "first", "rank": None, "replies": []},
        {"message_id": "a2", "role": "assistant", "text": "second", "rank": None, "replies": []}]}
    (conv,) = make_adapter("oasst1", {}).run([RawRecord(tree, "t.jsonl", 1)])
    assert conv.messages[-1].content == "first"


def test_a_tree_repeated_in_one_file_is_a_duplicate(tmp_path: Path) -> None:
    """Concatenated exports: the second copy of a tree is one ``duplicate_tree`` reject, ids stay unique."""
    lines = (FIX / "oasst1" / "nested.jsonl").read_text().splitlines()
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join(lines[:2] + lines[:2]) + "\n")
    for paths in ("best", "all"):
        adapter = make_adapter("oasst1", {"paths": paths})
        outs = list(adapter.stream([str(path)]))
        convs = [o for o in outs if hasattr(o, "messages")]
        dups = [o for o in outs if getattr(o, "reason", "") == "duplicate_tree"]
        assert len({c.id for c in convs}) == len(convs) > 0
        assert [d.line for d in dups] == [3, 4]
        assert dups[0].duplicate_of in {c.id for c in convs} and "already read at" in dups[0].detail
        assert dups[0].record == json.loads(lines[0])
        assert adapter.stats.candidates == len(outs)


def test_flat_rows_repeated_are_a_duplicate_tree_and_a_changed_copy_keeps_its_new_paths(tmp_path: Path) -> None:
    lines = (FIX / "oasst1" / "flat.jsonl").read_text().splitlines()
    t1, t2 = [json.loads(x) for x in lines[:7]], [json.loads(x) for x in lines[9:12]]
    path = tmp_path / "flat_twice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in t1 + t2 + t1))  # two exports, concatenated
    adapter = make_adapter("oasst1", {"paths": "all"})
    outs = list(adapter.stream([str(path)]))
    (dup,) = [o for o in outs if getattr(o, "reason", "") == "duplicate_tree"]
    assert dup.line == 11 and dup.record == t1 and dup.duplicate_of.startswith("oasst1/m")
    convs = [o for o in outs if hasattr(o, "messages")]
    assert len({c.id for c in convs}) == len(convs) == 4 and adapter.stats.candidates == len(outs)
    # a later export of tree T1 with one more reply: its new path is kept, the known ones are duplicates
    extra = [{**t1[4], "message_id": "m99", "parent_id": "m5", "role": "prompter", "text": "And then?"},
             {**t1[4], "message_id": "m100", "parent_id": "m99", "role": "assistant", "text": "Then this."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in t1 + t2 + t1 + extra))
    outs = list(make_adapter("oasst1", {"paths": "all"}).stream([str(path)]))
    convs = [o for o in outs if hasattr(o, "messages")]
    assert len({c.id for c in convs}) == len(convs) == 5 and convs[-1].messages[-1].content == "Then this."
    second = Counter(o.reason for o in outs if hasattr(o, "reason") and o.line > 10)
    assert second == Counter(duplicate_id=2, filtered_deleted=1)  # m2, m3 again (m5 now leads on); m7 again


def test_conversation_ids_are_unique_even_when_message_ids_repeat() -> None:
    from sft_builder.sources.base import RawRecord

    def tree(tid: str, text: str) -> dict:
        return {"message_tree_id": tid, "prompt": {"message_id": "p", "role": "prompter", "text": "q", "replies": [
            {"message_id": "same", "role": "assistant", "text": text, "replies": []}]}}

    adapter = make_adapter("oasst1", {})
    outs = list(adapter.run([RawRecord(tree("T1", "a"), "f.jsonl", 1), RawRecord(tree("T2", "b"), "f.jsonl", 2)]))
    assert outs[0].id == "oasst1/same"
    assert (outs[1].reason, outs[1].duplicate_of) == ("duplicate_id", "oasst1/same")
