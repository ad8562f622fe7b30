"""A finished build made by hand: conversation shards in the build's own schema, a report, optional plots."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sft_builder.mix import SCHEMA as SCHEMA_WITH_TEXT  # the build's own shards: `text` set on documents

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
# a build from before documents: no `text` column
SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.list_(MESSAGE)),
                    ("meta", pa.string())])


def conversation(split: str, i: int, with_text: bool = False) -> dict:
    msgs = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    if i % 5 == 0:
        msgs = [{"role": "system", "content": "Be brief."}, *msgs,
                {"role": "user", "content": f"and q{i}b?"}, {"role": "assistant", "content": f"a{i}b"}]
    row = {"id": f"{split}-{i}", "source": "codealpaca" if i % 3 else "slimorca", "messages": msgs,
           "meta": json.dumps({"line": i})}
    return {**row, "text": None} if with_text else row


def document(split: str, i: int) -> dict:
    return {"id": f"{split}-doc-{i}", "source": "books", "messages": [], "text": f"# Chapter {i}\n\nSome text.",
            "meta": json.dumps({"line": i})}


def fake_build(root: Path, n_train: int, n_test: int, documents: int = 0) -> Path:
    """A build folder: train in two shards (re-sharding crosses a file boundary), test in one; with
    `documents`, every few rows of each split is a document (a `text` row, as the build writes them)."""
    conv = root / "conversations"
    conv.mkdir(parents=True)
    schema = SCHEMA_WITH_TEXT if documents else SCHEMA

    def rows(split: str, n: int) -> list[dict]:
        out = [conversation(split, i, bool(documents)) for i in range(n)]
        for j in range(documents if split == "train" else documents // 2):
            out.insert(min(len(out), 3 * j + 1), document(split, j))
        return out

    train = rows("train", n_train)
    half = len(train) // 2
    pq.write_table(pa.Table.from_pylist(train[:half], schema), conv / "train-00000.parquet")
    pq.write_table(pa.Table.from_pylist(train[half:], schema), conv / "train-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows("test", n_test), schema), conv / "test-00000.parquet")
    sources = {"codealpaca": {"read": 80, "kept": 70, "train": 66, "test": 4},
               "slimorca": {"read": 40, "kept": 35, "train": 34, "test": 1}}
    if documents:
        sources["books"] = {"read": 9, "kept": 9, "train": 6, "test": 3}
    report = {
        "manifest": "m.yaml", "fingerprint": "abc123def4567890", "seed": 7, "languages": {"en": 90, "zh": 1},
        "sources": sources,
        "steps": {"mix": {"in": 110, "out": 105, "dropped": {"weight": 5}, "enabled": True},
                  "adapter": {"in": 120, "out": 110, "dropped": {"invalid_json": 10}, "enabled": True}},
        "tokenize": {"train": {"per_source": {"codealpaca": {"tokens": 1000, "trained_tokens": 600}}}},
    }
    (root / "report.json").write_text(json.dumps(report))
    return root


def add_plots(build: Path, names: tuple[str, ...] = ("funnel", "tokens")) -> None:
    """PNG files and report.md lines as the build report writes them (the PNG bytes are a stand-in)."""
    (build / "plots").mkdir(exist_ok=True)
    for n in names:
        (build / "plots" / f"{n}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + n.encode())
    (build / "report.md").write_text("# Build report\n\n## Plots\n\n"
                                     + "".join(f"![The {n} plot](plots/{n}.png)\n\n" for n in names))
