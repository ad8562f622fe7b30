"""``tokenization: cerebras`` on real code files equals Cerebras' encoding as LLM360 ran it, id for id.

The reference below follows Cerebras Model Zoo 2.0.3's ``LMDataPreprocessor`` as FIDELITY.md section 2
describes it, written out here on its own: ftfy + NFC, the text cut at the first space at or after each
2,000 characters, every piece encoded alone by LLM360's data-prep ``tokenizer.json`` (its post-processor
adds ``<s>``; only the first piece keeps it), ``</s>`` appended, chunks of L+1 with stride L carried from
document to document, the last leftover dropped. The build runs with the CrystalCoder tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import ftfy
import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from crystalmix.core import hdf5
from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor

SEQ_LEN = 2048


@pytest.fixture(scope="module")
def code_texts(realdata: Path) -> list[str]:
    files = sorted(p for p in (realdata / "code_documents").rglob("*") if p.suffix in {".py", ".js", ".html", ".css"})
    texts = [p.read_text(encoding="utf-8") for p in files]
    return [t for t in texts if t]  # Cerebras' splitter fails on an empty text; our readers skip them


def cerebras_ids(text: str, tok: Tokenizer) -> list[int]:
    """One document as Cerebras' LMDataPreprocessor tokenized it for LLM360 (before packing)."""
    text = ftfy.fix_text(text, normalization="NFC")
    ids: list[int] = []
    start = 0
    while start < len(text):
        stop = text.find(" ", start + 2000)
        if stop == -1:
            stop = len(text)
        piece = tok.encode(text[start:stop]).ids  # with the post-processor's <s>
        ids += piece if start == 0 else piece[1:]
        start = stop
    return ids + [2]


def cerebras_rows(docs: list[list[int]], seq_len: int) -> list[list[int]]:
    """Cerebras' packing: each document's chunks of L+1 at stride L, a short last chunk carried to the next."""
    rows, prefix = [], []
    for ids in docs:
        stream = prefix + ids
        chunks = [stream[i:i + seq_len + 1] for i in range(0, len(stream), seq_len)]
        prefix = chunks.pop() if len(chunks[-1]) < seq_len + 1 else []
        rows += chunks
    return rows  # the final prefix is never written


def test_cerebras_rows_equal_cerebras_encoding_of_real_code(realdata: Path, code_texts: list[str],
                                                            tmp_path: Path) -> None:
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in code_texts), encoding="utf-8")
    manifest = tmp_path / "stage.yaml"
    manifest.write_text(yaml.safe_dump({
        "stage": "real", "tokenizer": str(realdata / "tokenizers" / "crystalcoder" / "tokenizer.json"),
        "seq_len": SEQ_LEN, "samples_per_file": 1000, "tokenization": "cerebras", "model_vocab_size": 32032,
        "sources": [{"name": "code", "paths": [str(data)], "ftfy": True}]}), encoding="utf-8")
    build_stage(load_manifest(manifest), tmp_path / "out", LocalExecutor(1), progress=False)
    folder = tmp_path / "out" / "code" / "epoch-0"
    rows = np.concatenate([hdf5.read_rows(f) for f in sorted(folder.glob("data-*.h5"))])

    llm360 = Tokenizer.from_file(str(realdata / "tokenizers" / "llama" / "tokenizer.json"))
    docs = [cerebras_ids(t, llm360) for t in code_texts]
    expected = np.asarray(cerebras_rows(docs, SEQ_LEN), dtype=np.int32)
    assert len(rows) == len(expected) > 80
    assert np.array_equal(rows[:, 0], expected[:, :-1])
    assert np.array_equal(rows[:, 2], expected[:, 1:])
    assert (rows[:, 1] == 1).all()

    # What the 2,000-character split costs on these files: one extra '▁' (29871) per cut (FIDELITY.md 2).
    plain = [llm360.encode(ftfy.fix_text(t, normalization="NFC")).ids + [2] for t in code_texts]
    extra = sum(len(d) for d in docs) - sum(len(d) for d in plain)
    differing = sum(d != p for d, p in zip(docs, plain, strict=True))
    long = sum(len(t) > 2000 for t in code_texts)
    assert (len(code_texts), sum(map(len, plain)) - len(plain), extra, differing, long) == (198, 186_492, 148, 56, 56)
    params = json.loads((folder / "data_params.json").read_text())
    assert params["post-process"]["vocab_size"] == 32032
    stats = params["h5_dataset_stats"]
    assert stats["num_sequences"] == len(rows)
    crystal = Tokenizer.from_file(str(realdata / "tokenizers" / "crystalcoder" / "tokenizer.json"))
    texts = crystal.decode_batch(rows[:, 0].tolist())  # Cerebras' decode: special tokens skipped
    assert stats["detokenized_chars"] == sum(map(len, texts))
    assert stats["detokenized_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert stats["non_pad_tokens"] == int((rows[:, 0] != 2).sum())  # no padding here: all but EOS
