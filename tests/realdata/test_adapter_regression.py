"""The real-data regression suite: every adapter on every real file it reads, against checked-in counts.

A change that loses records, changes a reject reason or a repair count, or changes kept content shows here as
a diff against `expected_adapter_counts.json` (regenerate it with `adapter_counts.py --write`, then read the
diff). Also here: the issue-10 points on real records (an emptied answer in a real ShareGPT conversation,
real OASST conversations as Guanaco text ending in an empty answer, a real tree repeated).
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from pathlib import Path

from crystalmix.cli.convert import convert_source
from crystalmix.core.records import Conversation
from sft_builder.sources.base import RawRecord, Rejected, make_adapter

from .adapter_counts import CASES, EXPECTED, NOT_READ, measure, measure_case


def test_counts_match_the_checked_in_baseline(realdata: Path) -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))["cases"]
    got = measure(realdata)
    assert sorted(got) == sorted(expected)
    diffs = {name: {k: (expected[name][k], got[name][k]) for k in got[name] if got[name][k] != expected[name][k]}
             for name in got}
    assert not {name: d for name, d in diffs.items() if d}, "adapter output changed (expected, got)"
    for case in got.values():
        assert case["read"] == case["kept"] + case["rejected"] == sum(case["reasons"].values()) + case["kept"]


def test_every_real_data_file_is_read_by_a_case_or_listed_as_not_read(realdata: Path) -> None:
    covered = {f for _, _, _, files in CASES for f in files}
    skip = ("README.md", "tokenizers/*", "chat_templates/*", "*/prompt.txt", "rosettacode/*")
    for path in sorted(p for p in realdata.rglob("*") if p.is_file()):
        rel = path.relative_to(realdata).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in (*skip, *NOT_READ)):
            continue
        assert rel in covered, f"{rel}: add an adapter case to adapter_counts.py or list it in NOT_READ"


def test_interchange_round_trip_of_every_case(realdata: Path, tmp_path: Path) -> None:
    """What any adapter wrote, the `conversations` adapter reads back unchanged, with no repair and no reject."""
    for name, adapter_name, options, files in CASES:
        out = tmp_path / f"{name}.jsonl"
        first = convert_source(make_adapter(adapter_name, options), [str(realdata / f) for f in files], out)
        work = tmp_path / f"back_{name}"
        work.mkdir()
        back = measure_case(tmp_path, "conversations", {}, [out.name], work)
        assert (back["read"], back["kept"], back["rejected"], back["fixes"]) == (first["kept"], first["kept"], 0, {})
        original = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        assert [c.to_dict() for c in make_adapter("conversations", {}).stream([str(out)])] == original, name


def test_real_sharegpt_conversation_with_an_emptied_answer_keeps_its_other_rounds(realdata: Path,
                                                                                   tmp_path: Path) -> None:
    """Issue 10, point 1, on the longest real ShareGPT conversation here (10 turns) with its 2nd answer blanked:
    the four other rounds are kept, one repair is counted. (No real file here holds an empty answer.)"""
    raw = json.loads((realdata / "sharegpt" / "dialogstudio_sharegpt_original_example.json").read_text())
    rec = max(raw, key=lambda r: len(r["conversations"]))
    assert len(rec["conversations"]) == 10
    rec["conversations"][3]["value"] = ""
    path = tmp_path / "one.json"
    path.write_text(json.dumps([rec]))
    adapter = make_adapter("sharegpt", {})
    (conv,) = adapter.stream([str(path)])
    assert isinstance(conv, Conversation) and len(conv.messages) == 8
    kept = rec["conversations"][:2] + rec["conversations"][4:]
    assert [m.content for m in conv.messages] == [t["value"] for t in kept]
    assert adapter.stats.fixes == {"dropped_unanswered_pair": 1}


def _guanaco_text(conv: Conversation) -> str:
    names = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"### {names[m.role]}: {m.content}" for m in conv.messages)


def test_real_oasst_conversations_as_guanaco_text_ending_in_an_empty_answer(realdata: Path,
                                                                             tmp_path: Path) -> None:
    """Issue 10, point 2: OASST best paths written the way openassistant-guanaco was made, each with an extra
    unanswered final round (an empty ``### Assistant:``, the export's prompt shape): every complete round is
    kept and each trim is counted."""
    convs = [o for o in make_adapter("oasst1", {}).stream([str(realdata / "open_assistant" / "en_100_message.jsonl")])
             if isinstance(o, Conversation)]
    convs = [c for c in convs if "### " not in "".join(m.content for m in c.messages)]  # markers inside text
    path = tmp_path / "guanaco.jsonl"
    path.write_text("".join(json.dumps({"text": _guanaco_text(c) + "### Human: And then?### Assistant: "}) + "\n"
                            for c in convs))
    adapter = make_adapter("guanaco", {})
    out = list(adapter.stream([str(path)]))
    assert len(convs) >= 90 and len(out) == len(convs) and not [o for o in out if isinstance(o, Rejected)]
    for got, conv in zip(out, convs, strict=True):
        assert [(m.role, m.content) for m in got.messages] == [(m.role, m.content.strip()) for m in conv.messages]
    assert adapter.stats.fixes == {"dropped_unanswered_pair": len(convs)}


def test_a_real_tree_repeated_in_one_file_is_one_duplicate(realdata: Path, tmp_path: Path) -> None:
    """Issue 10, point 7: a real export concatenated with itself; conversation ids stay unique."""
    text = (realdata / "open_assistant" / "en_100_message.jsonl").read_text(encoding="utf-8")
    path = tmp_path / "twice.jsonl"
    path.write_text(text + text, encoding="utf-8")
    for paths in ("best", "all"):
        adapter = make_adapter("oasst1", {"paths": paths})
        outs = list(adapter.stream([str(path)]))
        convs = [o for o in outs if isinstance(o, Conversation)]
        dups = [o for o in outs if isinstance(o, Rejected) and o.reason == "duplicate_tree"]
        assert len(dups) == 100 and len({c.id for c in convs}) == len(convs)
        assert {d.duplicate_of for d in dups} <= {c.id for c in convs}
        assert len(convs) == (100 if paths == "best" else 564)
        assert adapter.stats.candidates == len(outs)


def test_real_records_one_by_one_give_the_same_as_the_stream(realdata: Path) -> None:
    """A record adapter's answer for a record does not depend on the records before it (the fast path of
    the first record of a file and of the others agree)."""
    raw = json.loads((realdata / "fastchat" / "dummy_conversation.json").read_text())
    streamed = list(make_adapter("sharegpt", {}).run(RawRecord(r, "f.json", i + 1) for i, r in enumerate(raw)))
    for i, rec in enumerate(raw[:50]):
        (alone,) = make_adapter("sharegpt", {}).run([RawRecord(rec, "f.json", i + 1)])
        assert alone == streamed[i]
    assert Counter(type(o).__name__ for o in streamed) == {"Conversation": 500}
