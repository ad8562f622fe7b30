"""LLaMA-Factory's side of bench/encode.py, run by LLaMA-Factory's own interpreter (its own venv: its pins of
transformers and torch would break crystalmix's), started and driven by bench/encode.py.

It times what LLaMA-Factory runs to prepare SFT data: its registered template (``get_template_and_fix_tokenizer``)
and ``SupervisedDatasetProcessor.preprocess_dataset`` over the converted examples (``_prompt``, ``_response``,
``_system``, ...), in batches of 1,000 as its ``preprocessing_batch_size`` does, without the ``datasets.map``
around it. LLaMA-Factory has no CrystalChat template: ``crystalchat`` is registered here through its
``register_template``, the way its docs tell users to add one (``efficient_eos``: one ``</s>`` at the end).
One command a line on stdin, one JSON answer a line on stdout:

  {"op": "time", "template": "chatml"}             -> {"wall": s, "cpu": s, "tokens": n, "dropped": n}
  {"op": "dump", "template": "chatml", "out": P}   -> writes [input_ids, labels] per conversation to P

A command may carry ``default_system`` (the system prompt of a conversation without one; crystalchat's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # crystalmix.core.tokenizer: the tokenizer the other sides load, loaded the same way

BATCH = 1000  # LLaMA-Factory's default preprocessing_batch_size


def examples(path: Path) -> dict[str, list[Any]]:
    """Conversations (one JSON list of {role, content} a line) as LLaMA-Factory's converters leave them."""
    out: dict[str, list[Any]] = {k: [] for k in ("_prompt", "_response", "_system", "_tools", "_images",
                                                  "_videos", "_audios")}
    for line in path.read_text(encoding="utf-8").splitlines():
        msgs = json.loads(line)
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        turns = msgs[1:] if system else msgs
        out["_prompt"].append(turns[:-1])
        out["_response"].append(turns[-1:])
        out["_system"].append(system)
        out["_tools"].append("")
        for k in ("_images", "_videos", "_audios"):
            out[k].append(None)
    return out


def register_crystalchat(default_system: str) -> None:
    """``<s><|sys_start|>{system}<|sys_end|><|im_start|>{user}<|im_end|>{assistant}...</s>``"""
    from llamafactory.data.formatter import EmptyFormatter, StringFormatter
    from llamafactory.data.template import TEMPLATES, register_template

    if "crystalchat" not in TEMPLATES:
        register_template(name="crystalchat", format_prefix=EmptyFormatter(slots=[{"bos_token"}]),
                          format_system=StringFormatter(slots=["<|sys_start|>{{content}}<|sys_end|>"]),
                          format_user=StringFormatter(slots=["<|im_start|>{{content}}<|im_end|>"]),
                          format_assistant=StringFormatter(slots=["{{content}}"]), default_system=default_system,
                          efficient_eos=True)


def processor(tokenizer: str, template: str) -> Any:
    """LLaMA-Factory's supervised processor for `template`, on a fresh tokenizer (its templates change the
    tokenizer's EOS and pad tokens)."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    from crystalmix.core.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    args = DataArguments(template=template, cutoff_len=1 << 30)  # no truncation: every side encodes it all
    return SupervisedDatasetProcessor(template=get_template_and_fix_tokenizer(tok, args), tokenizer=tok,
                                      processor=None, data_args=args)


def run(proc: Any, data: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"input_ids": [], "labels": []}
    n = len(data["_prompt"])
    for start in range(0, n, BATCH):
        done = proc.preprocess_dataset({k: v[start:start + BATCH] for k, v in data.items()})
        out["input_ids"] += done["input_ids"]
        out["labels"] += done["labels"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--conversations", required=True, type=Path)
    a = ap.parse_args()
    data = examples(a.conversations)
    procs: dict[str, Any] = {}
    print(json.dumps({"ready": True, "version": __import__("llamafactory").__version__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        proc = procs.get(cmd["template"])
        if cmd["template"] == "crystalchat":
            register_crystalchat(cmd["default_system"])
        if proc is None:
            proc = procs[cmd["template"]] = processor(a.tokenizer, cmd["template"])
        if cmd["op"] == "time":
            w0, c0 = time.perf_counter(), time.process_time()
            done = run(proc, data)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            answer = {"wall": wall, "cpu": cpu, "tokens": sum(map(len, done["input_ids"])),
                      "dropped": len(data["_prompt"]) - len(done["input_ids"])}
        else:
            done = run(proc, data)
            with open(cmd["out"], "w", encoding="utf-8") as fh:
                for ids, labels in zip(done["input_ids"], done["labels"], strict=True):
                    fh.write(json.dumps([ids, labels]) + "\n")
            answer = {"written": len(done["input_ids"])}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
