"""Every adapter on the matching real third-party files in ../shared/realdata: counts and contents.

Expected numbers are computed here from the raw files with plain `json` code, not copied from a run.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from crystalmix.cli.convert import convert_source
from crystalmix.core.records import Conversation
from sft_builder.sources.base import Rejected, make_adapter


def _run(name: str, files: list[Path], **options: Any) -> tuple[list[Conversation], list[Rejected]]:
    adapter = make_adapter(name, options)
    outs = list(adapter.stream([str(p) for p in files]))
    assert adapter.stats.candidates == len(outs)
    return ([o for o in outs if isinstance(o, Conversation)], [o for o in outs if isinstance(o, Rejected)])


def test_fastchat_dummy_conversations(realdata: Path) -> None:
    path = realdata / "fastchat" / "dummy_conversation.json"
    raw = json.loads(path.read_text())
    convs, rejects = _run("sharegpt", [path])
    assert not rejects and len(convs) == len(raw) == 500
    for conv, rec in zip(convs, raw, strict=True):
        assert conv.meta["orig_id"] == rec["id"]
        assert [m.content for m in conv.messages] == [t["value"] for t in rec["conversations"]]
        assert [m.role for m in conv.messages] == [{"human": "user", "gpt": "assistant"}[t["from"]]
                                                   for t in rec["conversations"]]


def test_dialogstudio_sharegpt_chunks_share_a_group(realdata: Path) -> None:
    path = realdata / "sharegpt" / "dialogstudio_sharegpt_original_example.json"
    raw = json.loads(path.read_text())
    convs, rejects = _run("sharegpt", [path])
    assert not rejects
    assert [len(c.messages) for c in convs] == [len(r["conversations"]) for r in raw]
    groups = Counter(c.group for c in convs)
    assert groups["sharegpt/hRPPgZT"] == 2 and len(groups) == 4


def test_sharegpt_first_turn_only_file_is_rejected_whole(realdata: Path) -> None:
    convs, rejects = _run("sharegpt", [realdata / "sharegpt" / "ShareGPT_V3_filtered_500.json"])
    assert not convs and Counter(r.reason for r in rejects) == {"no_final_assistant": 500}


def test_glaive_tool_roles_are_rejected_not_dropped(realdata: Path) -> None:
    path = realdata / "llama_factory" / "glaive_toolcall_en_demo.json"
    raw = json.loads(path.read_text())
    with_tools = [r for r in raw if {t["from"] for t in r["conversations"]} - {"human", "gpt"}]
    convs, rejects = _run("sharegpt", [path])
    assert len(rejects) == len(with_tools) == 153 and len(convs) == len(raw) - len(with_tools)
    assert {r.reason for r in rejects} == {"unknown_role"}
    assert {r.detail.split("role ")[1].split(";")[0] for r in rejects} == {"'function_call'"}  # the first one
    assert all("role_map" in r.detail for r in rejects)  # the detail says how to keep them
    assert [r.record for r in rejects] == with_tools
    mapped, rejects = _run("sharegpt", [path], role_map="function_call:assistant,observation:user")
    assert not rejects and len(mapped) == len(raw)


def _walk(msg: dict[str, Any], path: list[dict[str, Any]]):  # noqa: ANN202 - test helper
    path = path + [msg]
    if not msg.get("replies"):
        yield path
    for r in msg.get("replies") or []:
        yield from _walk(r, path)


def test_open_assistant_trees(realdata: Path) -> None:
    msg_file = realdata / "open_assistant" / "en_100_message.jsonl"
    trees = [json.loads(x) for x in msg_file.read_text().splitlines()]
    leaves = [p for t in trees for p in _walk(t, [])]
    assert len(leaves) == 626
    ends = set()
    for p in leaves:  # cut back to the last assistant message; equal cuts are one conversation
        while p and p[-1]["role"] != "assistant":
            p = p[:-1]
        ends.add(p[-1]["message_id"])
    convs, rejects = _run("oasst1", [msg_file], paths="all")
    assert len(convs) + len(rejects) == len(leaves)
    assert {c.meta["orig_id"] for c in convs} == ends and len(convs) == len(ends)
    assert {r.reason for r in rejects} == {"duplicate_path"}
    assert len({c.group for c in convs}) == 100
    # the tree export form gives exactly the same conversations
    tree_convs, _ = _run("oasst1", [realdata / "open_assistant" / "en_100_tree.jsonl"], paths="all")
    assert [c.messages for c in tree_convs] == [c.messages for c in convs]


def test_open_assistant_best_paths_follow_rank_zero(realdata: Path) -> None:
    msg_file = realdata / "open_assistant" / "en_100_message.jsonl"
    trees = [json.loads(x) for x in msg_file.read_text().splitlines()]
    convs, rejects = _run("oasst1", [msg_file])
    assert not rejects and len(convs) == 100
    for conv, tree in zip(convs, trees, strict=True):
        node, texts = tree, [tree["text"]]
        while node["replies"]:
            ranked = [r for r in node["replies"] if r["rank"] is not None]
            node = min(ranked, key=lambda r: r["rank"]) if ranked else node["replies"][0]
            texts.append(node["text"])
        while len(texts) % 2:  # ends on an unanswered prompter message
            texts.pop()
        assert [m.content for m in conv.messages] == texts
    synthetic, rejects = _run("oasst1", [msg_file], include_synthetic="false", lang="en")
    n_synth_roots = sum(1 for t in trees if t["synthetic"])
    assert Counter(r.reason for r in rejects)["filtered_synthetic"] == n_synth_roots > 0


def test_alpaca_files(realdata: Path) -> None:
    path = realdata / "codealpaca" / "code_alpaca_2k.json"
    raw = json.loads(path.read_text())
    convs, rejects = _run("alpaca", [path])
    empty = [r for r in raw if not r["output"].strip()]
    assert len(rejects) == len(empty) == 2 and {r.reason for r in rejects} == {"empty_content"}
    good = [r for r in raw if r["output"].strip()]
    for conv, rec in zip(convs, good, strict=True):
        want = rec["instruction"] + ("\n\n" + rec["input"] if rec["input"].strip() else "")
        assert conv.messages[0].content == want and conv.messages[1].content == rec["output"]
    for rel, n in [("evol_instruct_code/evol-codealpaca-2k-1.json", 1966),
                   ("llama_factory/alpaca_en_demo.json", 999), ("llama_factory/alpaca_zh_demo.json", 1000),
                   ("stanford_alpaca/alpaca_data_first200.json", 200)]:
        convs, rejects = _run("alpaca", [realdata / rel])
        assert (len(convs), len(rejects)) == (n, 0), rel
    convs, _ = _run("alpaca", [realdata / "codealpaca" / "new_codealpaca.json"], column_map="output:response")
    raw = json.loads((realdata / "codealpaca" / "new_codealpaca.json").read_text())
    assert [c.messages[1].content for c in convs] == [r["response"] for r in raw]


def test_rosetta_code_folder(realdata: Path) -> None:
    root = realdata / "rosettacode"
    with open(root / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    solutions = [r["local_path"] for r in rows if r["local_path"].count("/") == 3]
    convs, rejects = _run("rosetta", [root])
    assert not rejects and len(convs) == len(solutions) == 464
    assert Counter(c.meta["language"] for c in convs) == Counter(s.split("/")[2] for s in solutions)
    for conv in convs:
        user, answer = conv.messages[0].content, conv.messages[1].content
        assert "&nbsp;" not in user and "\u00a0" not in user + answer and "'''" not in user
        assert not re.search(r"\[\[[A-Za-z]|\{\{[A-Za-z]|<(?:br|sup|sub|big)\b", user)  # no wiki markup left
        assert answer.startswith("```" + conv.meta["language"].lower() + "\n") and answer.endswith("\n```")
    cid = "rosetta/Levenshtein-distance/Python/levenshtein-distance-1.py"
    levenshtein = next(c for c in convs if c.id == cid)
    code = (root / "Task/Levenshtein-distance/Python/levenshtein-distance-1.py").read_text()
    assert code.strip("\n") in levenshtein.messages[1].content
    assert "the Levenshtein distance is a metric for measuring" in levenshtein.messages[0].content


def test_convert_report_reconciles_on_real_files(realdata: Path, tmp_path: Path) -> None:
    adapter = make_adapter("sharegpt", {})
    inputs = [str(realdata / "llama_factory" / "glaive_toolcall_en_demo.json"),
              str(realdata / "fastchat" / "dummy_conversation.json")]
    report = convert_source(adapter, inputs, tmp_path / "o.jsonl")
    assert report["read"] == report["records"] == 800 == report["kept"] + report["rejected"]
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == report["kept"] == 647
