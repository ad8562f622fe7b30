"""The Hub export: shards named as the Hub expects, every row carried over, a card that lists the sources."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crystalmix.core.errors import UserError
from sft_builder.export import ExportConfig, export_build


def _fake_build(root: Path, n_train: int, n_test: int) -> Path:
    schema = pa.schema([
        ("id", pa.string()), ("source", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("meta", pa.string()),
    ])
    (root / "conversations").mkdir(parents=True)

    def rows(split: str, n: int) -> list[dict]:
        return [{"id": f"{split}-{i}", "source": "codealpaca" if i % 3 else "slimorca",
                 "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                 "meta": json.dumps({"line": i})} for i in range(n)]

    # two input shards for train, to check re-sharding across file boundaries
    half = n_train // 2
    train = rows("train", n_train)
    conv = root / "conversations"
    pq.write_table(pa.Table.from_pylist(train[:half], schema), conv / "train-00000.parquet")
    pq.write_table(pa.Table.from_pylist(train[half:], schema), conv / "train-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows("test", n_test), schema), root / "conversations/test-00000.parquet")
    report = {
        "fingerprint": "abc123", "seed": 7, "languages": {"en": 90, "zh": 1},
        "sources": {"codealpaca": {"read": 80, "kept": 70, "train": 66, "test": 4},
                    "slimorca": {"read": 40, "kept": 35, "train": 34, "test": 1}},
        "steps": {"mix": {"in": 110, "out": 105, "dropped": {"weight": 5}},
                  "adapter": {"in": 120, "out": 110, "dropped": {"invalid_json": 10}}},
    }
    (root / "report.json").write_text(json.dumps(report))
    return root


def test_export_reshards_every_row_and_writes_card(tmp_path: Path) -> None:
    build = _fake_build(tmp_path / "build", n_train=250, n_test=7)
    out = tmp_path / "hub"
    summary = export_build(ExportConfig(build, out, dataset_name="mixy", rows_per_shard=100))
    assert summary["files"]["train"] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert summary["files"]["test"] == ["test-00000-of-00001.parquet"]
    shards = sorted((out / "data").glob("train-*.parquet"))
    ids = [r for f in shards for r in pq.read_table(f).column("id").to_pylist()]
    assert ids == [f"train-{i}" for i in range(250)], "rows keep their order and none is lost or doubled"
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: other" in header or "license: unknown" in header
    assert "path: data/train-*.parquet" in header and "path: data/test-*.parquet" in header
    assert "zh" not in header.split("task_categories")[0], "stray languages under 5% are not declared"
    assert "| codealpaca |" in card and "| slimorca |" in card
    assert card.index("| adapter |") < card.index("| mix |"), "steps listed in pipeline order"


def test_export_loads_with_datasets(tmp_path: Path) -> None:
    import datasets

    build = _fake_build(tmp_path / "build", n_train=30, n_test=5)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, rows_per_shard=10))
    # A cache of this test's own: datasets keys a local folder's cache by its name, so a shared cache could
    # hand back an earlier export of another "hub" folder (it once returned 246 rows here instead of 30).
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert ds["train"].num_rows == 30 and ds["test"].num_rows == 5
    assert ds["train"][0]["messages"][0] == {"role": "user", "content": "q0"}


def test_export_rerun_removes_stale_shards(tmp_path: Path) -> None:
    build = _fake_build(tmp_path / "build", n_train=30, n_test=5)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, rows_per_shard=10))
    export_build(ExportConfig(build, out, rows_per_shard=100))
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]


def test_export_needs_a_build(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="report.json"):
        export_build(ExportConfig(tmp_path, tmp_path / "hub"))


def test_card_takes_licences_from_manifest_and_known_hub_ids(tmp_path: Path) -> None:
    from sft_builder.manifest import load_manifest

    build = _fake_build(tmp_path / "build", n_train=12, n_test=3)
    (tmp_path / "slim.jsonl").write_text("{}\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "seed: 1\n"
        "sources:\n"
        "  - {name: codealpaca, adapter: alpaca, inputs: lucasmccabe-lmi/CodeAlpaca-20k}\n"
        "  - {name: slimorca, adapter: sharegpt, inputs: slim.jsonl, license: mit}\n"
        "steps: {clean: {}}\n"
    )
    export_build(ExportConfig(build, tmp_path / "hub"), load_manifest(manifest))
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| codealpaca | lucasmccabe-lmi/CodeAlpaca-20k | cc-by-nc-4.0 |" in card
    assert "| slimorca | slim.jsonl | mit |" in card
    assert "license: other" in card.split("---")[1], "mixed licences make the whole set 'other'"


def test_documents_export_as_a_text_config(tmp_path: Path) -> None:
    import datasets

    from sft_builder.mix import SCHEMA  # the build's own shards: conversations and documents side by side

    root = tmp_path / "build"
    (root / "conversations").mkdir(parents=True)
    rows = []
    for i in range(9):
        if i % 3 == 0:
            rows.append({"id": f"d{i}", "source": "books", "messages": [], "text": f"# Book {i}\n\nText.",
                         "meta": json.dumps({"line": i})})
        else:
            rows.append({"id": f"c{i}", "source": "chat", "messages": [{"role": "user", "content": f"q{i}"},
                                                                        {"role": "assistant", "content": f"a{i}"}],
                         "text": None, "meta": json.dumps({"line": i})})
    pq.write_table(pa.Table.from_pylist(rows, SCHEMA), root / "conversations" / "train-00000.parquet")
    (root / "report.json").write_text(json.dumps({"sources": {"books": {}, "chat": {}}, "steps": {}}))
    out = tmp_path / "hub"
    summary = export_build(ExportConfig(root, out, rows_per_shard=2))
    assert summary["rows"] == {"train": 6, "test": 0}
    assert summary["documents"]["rows"] == {"train": 3, "test": 0}
    assert summary["documents"]["files"]["train"] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    header = (out / "README.md").read_text().split("---")[1]
    assert "config_name: default" in header and "config_name: text" in header
    assert "path: data/text/train-*.parquet" in header
    assert pq.read_table(out / "data/text/train-00000-of-00002.parquet").column_names == ["id", "source", "text",
                                                                                          "meta"]
    chats = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c1"))
    docs = datasets.load_dataset(str(out), "text", cache_dir=str(tmp_path / "c2"))
    assert chats["train"]["id"] == [f"c{i}" for i in range(9) if i % 3]
    assert chats["train"].column_names == ["id", "source", "messages", "meta"]
    assert docs["train"]["id"] == ["d0", "d3", "d6"] and docs["train"][1]["text"] == "# Book 3\n\nText."
