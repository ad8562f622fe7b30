"""What every adapter makes of every file in ../shared/realdata that it reads: the regression baseline.

`measure(realdata)` runs each (adapter, options, files) case below through `convert_source`, the path
`crystalmix convert` takes, and returns per case: records, read, kept, rejected, the reject reasons, the
repairs (``fixes``) and a digest of the kept conversations' ids and messages (so a change of content shows
too, not only a change of counts). `expected_adapter_counts.json` holds the numbers as checked in, after
reading them (see `NOTES`); `test_adapter_regression.py` compares. To regenerate after an intended change:

    PYTHONPATH=. .venv/bin/python -m tests.realdata.adapter_counts --write

and read the diff before committing it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from crystalmix.cli.convert import convert_source
from sft_builder.sources.base import make_adapter

EXPECTED = Path(__file__).with_name("expected_adapter_counts.json")

# (case name, adapter, options, files relative to realdata)
CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("fastchat_dummy", "sharegpt", {}, ["fastchat/dummy_conversation.json"]),
    ("dialogstudio_sharegpt", "sharegpt", {}, ["sharegpt/dialogstudio_sharegpt_original_example.json"]),
    ("sharegpt_v3_first_turns", "sharegpt", {}, ["sharegpt/ShareGPT_V3_filtered_500.json"]),
    ("glaive_toolcall", "sharegpt", {}, ["llama_factory/glaive_toolcall_en_demo.json"]),
    ("glaive_toolcall_role_map", "sharegpt", {"role_map": "function_call:assistant,observation:user"},
     ["llama_factory/glaive_toolcall_en_demo.json"]),
    ("code_alpaca_2k", "alpaca", {}, ["codealpaca/code_alpaca_2k.json"]),
    ("new_codealpaca", "alpaca", {}, ["codealpaca/new_codealpaca.json"]),
    ("new_codealpaca_response", "alpaca", {"column_map": "output:response"}, ["codealpaca/new_codealpaca.json"]),
    ("evol_codealpaca_2k", "alpaca", {}, ["evol_instruct_code/evol-codealpaca-2k-1.json"]),
    ("evol_seed", "alpaca", {}, ["evol_instruct_code/seed_evol.json"]),
    ("alpaca_en_demo", "alpaca", {}, ["llama_factory/alpaca_en_demo.json"]),
    ("alpaca_zh_demo", "alpaca", {}, ["llama_factory/alpaca_zh_demo.json"]),
    ("stanford_alpaca_200", "alpaca", {}, ["stanford_alpaca/alpaca_data_first200.json"]),
    ("oasst_messages_best", "oasst1", {}, ["open_assistant/en_100_message.jsonl"]),
    ("oasst_messages_all", "oasst1", {"paths": "all"}, ["open_assistant/en_100_message.jsonl"]),
    ("oasst_trees_best", "oasst1", {}, ["open_assistant/en_100_tree.jsonl"]),
    ("oasst_trees_all", "oasst1", {"paths": "all"}, ["open_assistant/en_100_tree.jsonl"]),
    ("oasst_both_exports", "oasst1", {"paths": "all"},
     ["open_assistant/en_100_message.jsonl", "open_assistant/en_100_tree.jsonl"]),
    ("rosettacode_folder", "rosetta", {}, ["rosettacode"]),
]

# Files in realdata that no adapter reads, and why (kept in the data file so the list is complete).
NOT_READ = {
    "fastchat/mt_bench_question.jsonl": "benchmark questions without answers (MT-Bench)",
    "wizardlm/WizardLM_testset.jsonl": "a test set of instructions without answers",
    "codealpaca/seed_tasks.jsonl": "self-instruct seed tasks (instances lists), webgen seeds, not SFT records",
    "stanford_alpaca/seed_tasks.jsonl": "self-instruct seed tasks (instances lists), webgen seeds",
    "llama_factory/c4_demo.jsonl": "pretraining text",
    "llama_factory/wiki_demo.txt": "pretraining text",
    "llm360/*": "packed token ids (LLM360's own outputs), read by the fidelity tests",
    "code_documents/*": "pretraining code documents",
}

NOTES = {
    "sharegpt_v3_first_turns": "each record holds only the first human turn (the file's own filter): no answer "
                               "to keep, so no_final_assistant is right",
    "glaive_toolcall": "the 153 records with function_call/observation turns: these need the record's `tools` "
                       "definitions, which the chat schema has no place for, so by default they are counted "
                       "unknown_role rejects whose detail names the role_map option; with it all 300 are kept "
                       "(next case)",
    "code_alpaca_2k": "two records have an empty output",
    "new_codealpaca": "this file's 'output' equals its 'response' column",
    "oasst_messages_all": "626 leaves; a leaf that is an unanswered prompter message cuts back to the answer "
                          "before it, and when a sibling leaf already gave that conversation it is duplicate_path",
    "oasst_messages_best": "39 best paths end on an unanswered prompter message, cut back (dropped_trailing_user)",
    "oasst_both_exports": "the same 100 trees in both export forms (the tree form lacks some fields): the second "
                          "copy of each is one duplicate_tree, and the kept conversations are those of one copy",
}


def _digest(convs: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for c in convs:
        h.update(json.dumps([c["id"], c["messages"]], ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def measure_case(realdata: Path, adapter_name: str, options: dict[str, Any], files: list[str],
                 work: Path) -> dict[str, Any]:
    adapter = make_adapter(adapter_name, options)
    out = work / "out.jsonl"
    report = convert_source(adapter, [str(realdata / f) for f in files], out)
    convs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = [c["id"] for c in convs]
    assert len(ids) == len(set(ids)), "ids must be unique"
    return {"records": report["records"], "read": report["read"], "kept": report["kept"],
            "rejected": report["rejected"], "reasons": report["reasons"], "fixes": report["fixes"],
            "kept_digest": _digest(convs)}


def measure(realdata: Path) -> dict[str, Any]:
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, adapter_name, options, files in CASES:
            cases[name] = {"adapter": adapter_name, "options": options, "files": files,
                           **measure_case(realdata, adapter_name, options, files, Path(tmp))}
    return cases


def main() -> None:
    from tests.conftest import REALDATA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {EXPECTED.name}")
    args = parser.parse_args()
    doc = {"cases": measure(REALDATA), "not_read": NOT_READ, "notes": NOTES}
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if args.write:
        EXPECTED.write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
