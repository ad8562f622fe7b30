"""Benchmark: SFT encode (chat template, ids, loss masks) against bare `tokenizers` on the same text; one JSON line.

Every side runs on one core (the process is pinned to one CPU, TOKENIZERS_PARALLELISM=false; a child process
inherits the pin), in rounds that interleave all sides of all templates (their order rotates each round); each
ratio is taken within a round, then the median over rounds is printed. The sides, per bundled template
(crystalchat, chatml, llama-2-chat), all on the same conversations:

  crystalmix    `encode_stream` with one worker: what the tokenize stage and `crystalmix encode` run per batch
                (render with the template, tokenize, masks, turn starts), without reading or writing files
  bare          the tokenizer's ``encode_batch`` (and ``encode_batch_fast``) on exactly the strings the template
                renders, in the same batches, the template's control tokens read as control tokens: the floor
  plain         the loop a user writes: ``apply_chat_template(..., tokenize=True,
                return_assistant_tokens_mask=True)`` per conversation
  trl           TRL's SFT data preparation (``SFTTrainer._prepare_dataset``, assistant_only_loss) when trl is
                installed (the ``bench`` extra)
  llamafactory  LLaMA-Factory's own SFT preprocessing (its registered ``chatml`` / ``llama2`` template and
                ``SupervisedDatasetProcessor``, bench/llamafactory_side.py) in a child process run by
                LLaMA-Factory's interpreter, when ``--llamafactory-python`` (or CRYSTALMIX_LLAMAFACTORY_PYTHON)
                names one; it times itself, so starting it and talking to it are not counted. It has no
                CrystalChat template: the side registers one through its ``register_template`` (one ``</s>`` at
                the end, ``efficient_eos``). Its formats are its own (each piece of a turn tokenized apart,
                ChatML's newline after ``<|im_end|>`` trained, no spaces around a Llama-2 answer, CrystalChat's
                ``<|im_start|>`` after an answer labelled ``</s>``), so its ids and labels are compared and the
                differences counted, not required to be equal.

Keys: ``vs_bare_encode_batch`` (per template; target >= 0.8, and ``vs_bare_encode_batch_min`` over templates),
``vs_bare_encode_batch_fast``, ``vs_plain_loop``, ``vs_trl``, ``vs_llama_factory`` (crystalmix's tokens/s over
the other side's; for LLaMA-Factory, whose token counts differ, its seconds over ours on the same
conversations); ``*_cpu`` variants divide CPU seconds instead of wall time (steadier on a shared machine).
``equal_to_plain_loop`` / ``equal_to_trl``: every conversation's ids and mask compared in this run;
``llama_factory_differs``: conversations whose ids or trained labels differ from ours (``llama_factory_same_ids``:
those whose ids alone are the same).

LLaMA-Factory pins versions of transformers and torch that would break crystalmix's environment, so it gets a
venv of its own (kept out of the repository):

  python -m venv /work/lf-venv
  /work/lf-venv/bin/pip install torch==2.13.0      # the CPU wheel on disk; else pip may fetch a CUDA build
  /work/lf-venv/bin/pip install llamafactory       # 0.9.5 here; its pins may replace that torch
  python bench/encode.py --llamafactory-python /work/lf-venv/bin/python

Input: real conversations of ../shared/realdata (Alpaca, CodeAlpaca, Evol-Instruct-Code, ShareGPT, FastChat)
through the build's adapters, repeated to ``--n``; synthetic chats when realdata is absent. Conversations
whose text holds control-token text are left out (the plain loop would read those as control tokens).
``--memory`` adds peak RSS of a child streaming SMALL and LARGE synthetic conversations through encode + pack.

Usage: python bench/encode.py [--n 3000] [--rounds 5] [--templates crystalchat,chatml,llama-2-chat]
       [--tokenizer PATH|demo] [--llamafactory-python PATH]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parent.parent
REALDATA = ROOT.parent / "shared" / "realdata"
sys.path.insert(0, str(ROOT))

from procstat import status_kb  # noqa: E402

from crystalmix.core.records import Conversation, Message, Rejected  # noqa: E402
from sft_builder.chat import ChatEncoder, Encoded  # noqa: E402
from sft_builder.encode import BATCH, TokenizeConfig, batches, encode_stream, make_encoder  # noqa: E402
from sft_builder.pack import PackStats, pack  # noqa: E402

REAL_FILES = {
    "alpaca": ["llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
               "codealpaca/code_alpaca_2k.json", "evol_instruct_code/evol-codealpaca-2k-1.json"],
    "sharegpt": ["fastchat/dummy_conversation.json", "sharegpt/dialogstudio_sharegpt_original_example.json"],
}
WORDS = ("the of and to in is that for it with as was on are be by this from or have an they which one you "
         "function return value list python code data file error user print loop class method string number "
         "import def self if else while true false none result input output test case index array map key").split()
# its own registered templates; it has no CrystalChat one: bench/llamafactory_side.py registers one as users do
LLAMA_FACTORY_TEMPLATES = {"chatml": "chatml", "llama-2-chat": "llama2", "crystalchat": "crystalchat"}
LLAMA_FACTORY_ENV = "CRYSTALMIX_LLAMAFACTORY_PYTHON"


def synthetic(n: int, seed: int = 0, scale: int = 1) -> Iterator[Conversation]:
    """Synthetic chats with a long-tailed length mix (system prompts, 1-3 turns, code-like answers)."""
    rng = random.Random(seed)
    for i in range(n):
        msgs = [Message("system", "You are a helpful assistant.")] if rng.random() < 0.4 else []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            msgs.append(Message("user", " ".join(rng.choices(WORDS, k=rng.randint(5, 60) // scale + 2))))
            k = int(rng.lognormvariate(4.8, 0.9)) // scale + 3
            msgs.append(Message("assistant", " ".join(rng.choices(WORDS, k=k))))
        yield Conversation(f"b{i}", "bench", tuple(msgs))


def real_conversations() -> list[Conversation]:
    """The realdata files read by the build's own adapters (their rejects left out)."""
    from sft_builder.sources.base import make_adapter

    out: list[Conversation] = []
    for adapter, names in REAL_FILES.items():
        paths = [str(REALDATA / n) for n in names if (REALDATA / n).is_file()]
        out += [c for c in make_adapter(adapter, {}).stream(paths) if isinstance(c, Conversation)]
    return out


def corpus(n: int, encoder: ChatEncoder) -> tuple[list[Conversation], int, str]:
    """`n` conversations (real ones repeated in order, else synthetic), and how many were left out."""
    base = real_conversations() if REALDATA.is_dir() else []
    kind = "realdata" if base else "synthetic"
    base = base or list(synthetic(max(n, 1)))
    clean = [c for c in base if not any(t in m.content for m in c.messages for t in encoder.special_by_text)]
    return (clean * -(-n // len(clean)))[:n], len(base) - len(clean), kind


def default_tokenizer() -> str:
    real = REALDATA / "tokenizers" / "crystalcoder"
    return str(real) if real.is_dir() else "demo"


# -- the sides: each returns the tokens it produced ------------------------------------------------------
def side_crystalmix(convs: list[Conversation], cfg: TokenizeConfig, encoder: ChatEncoder,
                    keep: list[Encoded] | None = None) -> int:
    tokens = 0
    for item in encode_stream(convs, cfg, encoder):
        if isinstance(item, Rejected):
            raise RuntimeError(f"bench conversation rejected: {item}")
        tokens += len(item.input_ids)
        if keep is not None:
            keep.append(item)
    return tokens


def side_bare(texts: list[list[str]], tok: Any, fast: bool) -> int:
    call = tok.encode_batch_fast if fast else tok.encode_batch
    return sum(len(e) for batch in texts for e in call(batch, add_special_tokens=False))


def side_plain(convs: list[Conversation], hf: Any, template: str,
               keep: list[tuple[list[int], list[int]]] | None = None) -> int:
    tokens = 0
    for c in convs:
        out = hf.apply_chat_template([m.to_dict() for m in c.messages], chat_template=template, tokenize=True,
                                     return_dict=True, return_assistant_tokens_mask=True)
        tokens += len(out["input_ids"])
        if keep is not None:
            keep.append((list(out["input_ids"]), list(out["assistant_masks"])))
    return tokens


def trl_side(hf: Any, template: str) -> Callable[..., int] | None:
    """TRL's own SFT preparation, called on a stand-in trainer (it reads three attributes), or None."""
    try:
        from datasets import Dataset, disable_progress_bars
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        return None
    disable_progress_bars()
    out_dir = tempfile.mkdtemp(prefix="bench-trl-")  # TRL's config wants one; nothing is written to it
    atexit.register(shutil.rmtree, out_dir, True)
    with warnings.catch_warnings():  # TrainingArguments' deprecation notices, about training settings
        warnings.simplefilter("ignore")
        args = SFTConfig(output_dir=out_dir, assistant_only_loss=True, max_length=None, report_to=[], use_cpu=True,
                         bf16=False)
    trainer = argparse.Namespace(_tokenizer=hf, chat_template=template, completion_only_loss=False)

    def run(convs: list[Conversation], keep: list[tuple[list[int], list[int]]] | None = None) -> int:
        data = Dataset.from_list([{"messages": [m.to_dict() for m in c.messages]} for c in convs])
        done = SFTTrainer._prepare_dataset(trainer, data, hf, args, False, None, "bench")  # type: ignore[arg-type]
        tokens = 0
        for row in done:
            tokens += len(row["input_ids"])
            if keep is not None:
                keep.append((row["input_ids"], [int(label != -100) for label in row["labels"]]))
        return tokens

    return run


class LlamaFactory:
    """bench/llamafactory_side.py in a child run by LLaMA-Factory's interpreter, on the same conversations."""

    def __init__(self, python: str, tokenizer: str, convs: list[Conversation], default_system: str) -> None:
        self.default_system = default_system  # crystalchat's, for the template registered there
        self.dir = Path(tempfile.mkdtemp(prefix="bench-llamafactory-"))
        data = self.dir / "conversations.jsonl"
        data.write_text("".join(json.dumps([m.to_dict() for m in c.messages]) + "\n" for c in convs),
                        encoding="utf-8")
        self.log = open(self.dir / "stderr.txt", "w+", encoding="utf-8")  # noqa: SIM115 - closed in `close`
        self.proc = subprocess.Popen([python, str(ROOT / "bench" / "llamafactory_side.py"), "--tokenizer", tokenizer,
                                      "--conversations", str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.version = str(self._read()["version"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-5:]
            raise RuntimeError("the LLaMA-Factory side stopped: " + " | ".join(tail))
        return dict(json.loads(line))

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def time(self, template: str) -> tuple[float, float]:
        """(wall, CPU) seconds of one pass, measured by the child around LLaMA-Factory's calls."""
        got = self.ask(op="time", template=LLAMA_FACTORY_TEMPLATES[template], default_system=self.default_system)
        return float(got["wall"]), float(got["cpu"])

    def results(self, template: str) -> list[tuple[list[int], list[int]]]:
        out = self.dir / f"{template}.jsonl"
        self.ask(op="dump", template=LLAMA_FACTORY_TEMPLATES[template], out=str(out),
                 default_system=self.default_system)
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        return [(ids, [int(label != -100) for label in labels]) for ids, labels in rows]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def crystalchat_system(tok_spec: str) -> str:
    """The system prompt our CrystalChat template writes for a conversation without one."""
    enc = make_encoder(TokenizeConfig.from_mapping({"tokenizer": tok_spec, "template": "crystalchat"}))
    text = enc.render([Conversation("probe", "bench", (Message("user", "q"), Message("assistant", "a")))])[0][0]
    return text.split("<|sys_start|>", 1)[1].split("<|sys_end|>", 1)[0]


def llama_factory_python(arg: str | None) -> str | None:
    return arg or os.environ.get(LLAMA_FACTORY_ENV) or None


def mismatches(ours: list[Encoded], other: list[tuple[list[int], list[int]]]) -> int:
    if len(ours) != len(other):
        return max(len(ours), len(other))
    return sum(e.input_ids.tolist() != ids or e.loss_mask.tolist() != mask
               for e, (ids, mask) in zip(ours, other, strict=True))


# -- memory ------------------------------------------------------------------------------------------------
def peak_rss_child(n: int, tokenizer: str) -> float:
    """Peak RSS (MB) of a fresh process streaming `n` short conversations through encode + pack."""
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--tokenizer", tokenizer],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(n: int, tokenizer: str) -> None:
    cfg = TokenizeConfig.from_mapping({"tokenizer": tokenizer, "workers": 0})
    stats = PackStats()
    for _ in pack(encode_stream(synthetic(n, seed=1, scale=8), cfg), "bfd", cfg.seq_len, 0, stats):  # type: ignore[arg-type]
        pass
    own = status_kb("VmHWM:")  # this process's own peak, not this bench's (see procstat)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # workers counted apart
    print((own + kids) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--templates", default="crystalchat,chatml,llama-2-chat", help="comma-separated")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last allowed)")
    ap.add_argument("--llamafactory-python", default=None,
                    help=f"LLaMA-Factory's interpreter (its own venv); default ${LLAMA_FACTORY_ENV}")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS streaming SMALL/LARGE")
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--child", type=int, default=None)
    a = ap.parse_args()
    tok_spec = a.tokenizer or default_tokenizer()
    if a.child is not None:
        child(a.child, tok_spec)
        return
    cpu = a.cpu if a.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    templates = [t for t in a.templates.split(",") if t]

    load_before = os.getloadavg()[0]
    cfgs = {t: TokenizeConfig.from_mapping({"tokenizer": tok_spec, "template": t, "workers": 1}) for t in templates}
    encoders = {t: make_encoder(cfg) for t, cfg in cfgs.items()}
    convs, left_out, kind = corpus(a.n, encoders[templates[0]])  # one tokenizer: the same left out for all
    lf_python = llama_factory_python(a.llamafactory_python)
    lf = LlamaFactory(lf_python, tok_spec, convs, crystalchat_system(tok_spec)) if lf_python else None

    sides: dict[str, Callable[[], tuple[float, float] | int]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for t in templates:
        enc, cfg = encoders[t], cfgs[t]
        hf = enc.tokenizer
        texts = [enc.render(b)[0] for b in batches(convs, BATCH)]  # the strings the real path tokenizes
        trl = trl_side(hf, enc.template)
        # correctness, in this run: the same ids and masks as the plain loop (and TRL)
        ours: list[Encoded] = []
        plain: list[tuple[list[int], list[int]]] = []
        side_crystalmix(convs, cfg, enc, ours)
        side_plain(convs, hf, enc.template, plain)
        check: dict[str, Any] = {"equal_to_plain_loop": mismatches(ours, plain) == 0,
                                 "mismatches_plain_loop": mismatches(ours, plain), "equal_to_trl": None}
        if trl is not None:
            via_trl: list[tuple[list[int], list[int]]] = []
            trl(convs, via_trl)
            check["equal_to_trl"] = mismatches(ours, via_trl) == 0
        sides[f"{t}/crystalmix"] = partial(side_crystalmix, convs, cfg, enc)
        sides[f"{t}/bare"] = partial(side_bare, texts, enc.control, False)
        sides[f"{t}/bare_fast"] = partial(side_bare, texts, enc.control, True)
        sides[f"{t}/plain"] = partial(side_plain, convs, hf, enc.template)
        if trl is not None:
            sides[f"{t}/trl"] = partial(trl, convs)
        if lf is not None and t in LLAMA_FACTORY_TEMPLATES:
            theirs = lf.results(t)
            check["llama_factory_differs"] = mismatches(ours, theirs)
            same = zip(ours, theirs, strict=False)  # a conversation it drops shows as a difference above
            check["llama_factory_same_ids"] = sum(e.input_ids.tolist() == ids for e, (ids, _) in same)
            sides[f"{t}/llamafactory"] = partial(lf.time, t)
        checks[t] = check

    names = list(sides)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu_s: dict[str, list[float]] = {k: [] for k in names}
    tokens: dict[str, int] = {}
    try:
        for r in range(a.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                w0, c0 = time.perf_counter(), time.process_time()
                got = sides[name]()
                if isinstance(got, tuple):  # a child that timed itself
                    wall[name].append(got[0])
                    cpu_s[name].append(got[1])
                    continue
                wall[name].append(time.perf_counter() - w0)
                cpu_s[name].append(time.process_time() - c0)
                tokens[name] = got
    finally:
        if lf is not None:
            lf.close()

    def ratio(t: str, other: str, times: dict[str, list[float]]) -> float | str:
        if f"{t}/{other}" not in times:
            return "not measured"
        pairs = zip(times[f"{t}/{other}"], times[f"{t}/crystalmix"], strict=True)
        return round(statistics.median(o / c for o, c in pairs), 3)

    per: dict[str, dict[str, Any]] = {}
    for t in templates:
        counts = {k: v for k, v in tokens.items() if k.startswith(f"{t}/")}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"the sides produced different token counts: {counts}")
        med = statistics.median(wall[f"{t}/crystalmix"])
        n_tok = tokens[f"{t}/crystalmix"]
        per[t] = {
            "vs_bare_encode_batch": ratio(t, "bare", wall), "vs_bare_encode_batch_fast": ratio(t, "bare_fast", wall),
            "vs_plain_loop": ratio(t, "plain", wall), "vs_trl": ratio(t, "trl", wall),
            "vs_llama_factory": ratio(t, "llamafactory", wall),
            "vs_bare_encode_batch_cpu": ratio(t, "bare", cpu_s),
            "vs_bare_encode_batch_fast_cpu": ratio(t, "bare_fast", cpu_s),
            "vs_plain_loop_cpu": ratio(t, "plain", cpu_s), "vs_llama_factory_cpu": ratio(t, "llamafactory", cpu_s),
            "conversations_per_s": round(len(convs) / med), "tokens_per_s": round(n_tok / med),
            "bare_encode_batch_tokens_per_s": round(n_tok / statistics.median(wall[f"{t}/bare"])),
            "tokens": n_tok, **checks[t],
        }
    bare = [v["vs_bare_encode_batch"] for v in per.values()]
    out: dict[str, Any] = {
        "vs_bare_encode_batch": {t: v["vs_bare_encode_batch"] for t, v in per.items()},
        "vs_bare_encode_batch_min": min(bare),
        "vs_bare_encode_batch_cpu": {t: v["vs_bare_encode_batch_cpu"] for t, v in per.items()},
        "vs_plain_loop": {t: v["vs_plain_loop"] for t, v in per.items()},
        "vs_trl": {t: v["vs_trl"] for t, v in per.items()} if any(c["equal_to_trl"] is not None
                                                                   for c in checks.values())
        else "not measured: trl is not installed",
        "vs_llama_factory": ({t: v["vs_llama_factory"] for t, v in per.items()} if lf is not None
                             else f"not measured: pass --llamafactory-python or set {LLAMA_FACTORY_ENV}"),
        "equal_to_plain_loop": all(c["equal_to_plain_loop"] for c in checks.values()),
        "equal_to_trl": None if any(c["equal_to_trl"] is None for c in checks.values())
        else all(c["equal_to_trl"] for c in checks.values()),
        "llama_factory": lf.version if lf is not None else None,
        "per_template": per,
        "conversations": len(convs), "input": kind, "left_out_control_text": left_out,
        "tokenizer": Path(tok_spec).name, "rounds": a.rounds, "cpu": cpu,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # at the start and the end
    }
    if a.memory:
        out["peak_rss_mb_small"] = round(peak_rss_child(a.small, tok_spec), 1)
        out["peak_rss_mb_large"] = round(peak_rss_child(a.large, tok_spec), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
