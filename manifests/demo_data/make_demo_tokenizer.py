"""Train the demo tokenizer shipped in the package (crystalmix/core/demo_tokenizer/); its output is committed.

It learns from the text of both demo corpora: the SFT samples in this folder (every string of the JSON
and JSONL files, and the Rosetta Code files) and the pretraining samples in ../pretrain/demo_data
(SlimPajama-style ``text``, StarCoder-style ``content``), read in sorted order so the result depends only
on their contents. Run after changing either corpus:
``.venv/bin/python manifests/demo_data/make_demo_tokenizer.py``. `manifests/demo.yaml`,
`manifests/pretrain/demo.yaml` and ``--tokenizer demo`` all name it ``demo``.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PRETRAIN = ROOT / "manifests" / "pretrain" / "demo_data"
OUT = ROOT / "crystalmix" / "core" / "demo_tokenizer"
VOCAB_SIZE = 8000


def strings(value: object) -> Iterator[str]:
    """Every string inside a parsed JSON value (keys left out: they are the formats' field names)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def sft_texts() -> Iterator[str]:
    for path in sorted(p for p in HERE.rglob("*") if p.is_file()):
        if path.suffix == ".py" or path.name == "PLANTED.json":
            continue  # the generator and its bookkeeping are not demo text
        if path.relative_to(HERE).parts[0] == "documents":
            continue  # added after the tokenizer was trained: left out so the shipped tokenizer stays as it is
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".json":
            yield from json_strings(raw)
        elif path.suffix == ".jsonl":
            for line in raw.splitlines():
                yield from json_strings(line)
        else:
            yield raw


def json_strings(raw: str) -> Iterator[str]:
    """The strings of a JSON text; a broken record (the demo plants some for the adapters) as it is."""
    try:
        yield from strings(json.loads(raw))
    except json.JSONDecodeError:
        yield raw


def pretrain_texts() -> Iterator[str]:
    for path in sorted(PRETRAIN.rglob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as fh:
            for line in io.TextIOWrapper(fh, encoding="utf-8"):
                yield json.loads(line)["text"]
    for path in sorted(PRETRAIN.rglob("*.parquet")):
        yield from pq.read_table(path, columns=["content"]).column("content").to_pylist()


def main() -> None:
    if str(ROOT) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(ROOT))
    from crystalmix.core.tokenizer import DEMO_FILES, train_demo_tokenizer

    texts = [t for t in (*sft_texts(), *pretrain_texts()) if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = train_demo_tokenizer(texts, tmp, vocab_size=VOCAB_SIZE)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in DEMO_FILES:  # the two files a loader needs; transformers may write others
            (OUT / name).write_bytes((folder / name).read_bytes())
    print(f"{len(texts)} texts -> {OUT} (vocabulary {VOCAB_SIZE} + specials)")


if __name__ == "__main__":
    main()
