"""The Hub export: every row carried over into per-split folders, a card huggingface_hub and datasets parse
back, LLaMA-Factory's dataset_info.json, documents as a `text` config, plots, licences, the out folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crystalmix.core.errors import UserError
from sft_builder.export import ExportConfig, export_build

from .conftest import add_plots, fake_build

ROOT = Path(__file__).resolve().parents[2]


def ids(folder: Path) -> list[str]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).column("id").to_pylist()]


def load_card(out: Path):  # noqa: ANN201 - huggingface_hub's DatasetCard
    from huggingface_hub import DatasetCard

    return DatasetCard.load(out / "README.md")


def test_every_row_lands_in_its_split_folder_in_order(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=250, n_test=7)
    out = tmp_path / "hub"
    summary = export_build(ExportConfig(build, out, dataset_name="mixy", rows_per_shard=100))
    assert summary["messages"]["files"]["train"] == [
        f"data/messages/train/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert summary["messages"]["files"]["test"] == ["data/messages/test/test-00000-of-00001.parquet"]
    assert summary["messages"]["rows"] == {"train": 250, "test": 7}
    assert ids(out / "data/messages/train") == [f"train-{i}" for i in range(250)], "none lost, doubled or moved"
    assert ids(out / "data/messages/test") == [f"test-{i}" for i in range(7)]
    assert not (out / "data" / "text").exists() and summary["text"]["rows"] == {"train": 0, "test": 0}


def test_the_card_passes_huggingface_hubs_parsing_with_what_the_hub_asks_for(tmp_path: Path) -> None:
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    build = fake_build(tmp_path / "build", n_train=30, n_test=5)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, dataset_name="mixy", pretty_name="Mixy SFT", rows_per_shard=10))
    card = load_card(out)
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert data.pretty_name == "Mixy SFT"
    assert data.license == "unknown"  # no manifest: nothing says what the sources' licences are
    assert data.task_categories == ["text-generation"]
    assert data.language == ["en"], "stray languages under 5% are not declared"
    assert data.size_categories == ["n<1K"]
    assert data.configs == [{"config_name": "messages", "default": True, "data_files": [
        {"split": "train", "path": "data/messages/train/*.parquet"},
        {"split": "test", "path": "data/messages/test/*.parquet"}]}]
    infos = DatasetInfosDict.from_dataset_card_data(data)  # `datasets` reads its own dataset_info back
    info = infos["messages"]
    assert {n: s.num_examples for n, s in info.splits.items()} == {"train": 30, "test": 5}
    assert list(info.features) == ["id", "source", "messages", "meta"]
    assert info.download_size == sum(p.stat().st_size for p in (out / "data").rglob("*.parquet"))
    assert "| codealpaca |" in card.text and "| slimorca |" in card.text
    assert card.text.index("| adapter |") < card.text.index("| mix |"), "steps listed in pipeline order"
    assert "| codealpaca | local files | unknown | 80 | 70 | 66 | 4 | 1,000 | 600 |" in card.text


def test_datasets_loads_the_folder_and_its_default_config(tmp_path: Path) -> None:
    import datasets

    build = fake_build(tmp_path / "build", n_train=30, n_test=5)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, rows_per_shard=10))
    # A cache of this test's own: datasets keys a local folder's cache by its name, so a shared cache could
    # hand back an earlier export of another "hub" folder (it once returned 246 rows here instead of 30).
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert ds["train"].num_rows == 30 and ds["test"].num_rows == 5
    assert ds["train"][1]["messages"] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    assert ds["train"].column_names == ["id", "source", "messages", "meta"]


def test_documents_export_as_a_text_config_beside_the_messages_one(tmp_path: Path) -> None:
    import datasets

    build = fake_build(tmp_path / "build", n_train=20, n_test=4, documents=4)
    out = tmp_path / "hub"
    summary = export_build(ExportConfig(build, out, rows_per_shard=3))
    assert summary["messages"]["rows"] == {"train": 20, "test": 4}
    assert summary["text"]["rows"] == {"train": 4, "test": 2}
    assert summary["text"]["files"]["train"] == ["data/text/train/train-00000-of-00002.parquet",
                                                 "data/text/train/train-00001-of-00002.parquet"]
    assert pq.read_table(out / "data/text/train/train-00000-of-00002.parquet").column_names == [
        "id", "source", "text", "meta"]
    card = load_card(out)
    assert [c["config_name"] for c in card.data.configs] == ["messages", "text"]
    assert "documents" in card.data.tags and 'load_dataset("USER/crystalmix-sft", "text")' in card.text
    chats = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c1"))
    docs = datasets.load_dataset(str(out), "text", cache_dir=str(tmp_path / "c2"))
    assert chats["train"]["id"] == [f"train-{i}" for i in range(20)]
    assert docs["train"]["id"] == [f"train-doc-{j}" for j in range(4)]
    assert docs["test"][1]["text"] == "# Chapter 1\n\nSome text."
    lf = json.loads((out / "dataset_info.json").read_text())
    assert lf["crystalmix-sft_text"] == {"file_name": "data/text/train", "columns": {"prompt": "text"}}


# -- LLaMA-Factory -------------------------------------------------------------------------------------------
# The keys LLaMA-Factory's data/README documents for a dataset_info.json entry, and its defaults.
LF_ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "file_name", "formatting", "ranking", "subset", "split",
                 "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "chosen",
              "rejected", "kto_tag"}
LF_TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                   "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
LF_FILE_TYPES = {"arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet", "txt": "text"}


def llamafactory_read(dataset_dir: Path, name: str) -> list[dict]:
    """Read one dataset as LLaMA-Factory's loader does: the entry from dataset_info.json, every file of the
    folder `file_name` names (one file type), `load_dataset(type, data_files=..., split=...)`, then its
    sharegpt converter: the first message may be the system prompt, then user tags on odd positions and
    assistant tags on even ones. Returns [{system, prompt, response}] as its aligner would build them."""
    import datasets

    entry = json.loads((dataset_dir / "dataset_info.json").read_text())[name]
    assert set(entry) <= LF_ENTRY_KEYS
    assert set(entry.get("columns", {})) <= LF_COLUMNS and set(entry.get("tags", {})) <= set(LF_TAG_DEFAULTS)
    local = dataset_dir / entry["file_name"]
    files = [local / f for f in os.listdir(local)] if local.is_dir() else [local]
    types = {LF_FILE_TYPES.get(f.name.split(".")[-1]) for f in files}
    assert len(types) == 1 and None not in types, "File types should be identical."
    ds = datasets.load_dataset(types.pop(), data_files=[str(f) for f in files], split=entry.get("split", "train"),
                               cache_dir=str(dataset_dir.parent / "lf-cache"))
    assert entry.get("formatting", "alpaca") == "sharegpt"
    tags = {**LF_TAG_DEFAULTS, **entry.get("tags", {})}
    column = entry.get("columns", {}).get("messages", "conversations")
    out = []
    for row in ds:
        messages = row[column]
        system = ""
        if messages and messages[0][tags["role_tag"]] == tags["system_tag"]:
            system, messages = messages[0][tags["content_tag"]], messages[1:]
        odd = {tags["user_tag"], tags["observation_tag"]}
        even = {tags["assistant_tag"], tags["function_tag"]}
        assert messages and len(messages) % 2 == 0
        for i, m in enumerate(messages):
            assert m[tags["role_tag"]] in (odd if i % 2 == 0 else even), "Invalid role tag"
        out.append({"system": system, "prompt": [m[tags["content_tag"]] for m in messages[:-1]],
                    "response": messages[-1][tags["content_tag"]]})
    return out


def test_llamafactory_reads_the_folder_as_is(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=25, n_test=6, documents=2)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, dataset_name="mixy", rows_per_shard=7))
    entries = json.loads((out / "dataset_info.json").read_text())
    assert set(entries) == {"mixy", "mixy_test", "mixy_text", "mixy_text_test"}
    assert entries["mixy"] == {"file_name": "data/messages/train", "formatting": "sharegpt",
                               "columns": {"messages": "messages"},
                               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                        "assistant_tag": "assistant", "system_tag": "system"}}
    train = llamafactory_read(out, "mixy")
    test = llamafactory_read(out, "mixy_test")
    assert len(train) == 25 and len(test) == 6, "the test split stays out of training"
    # row order inside a split is whatever order os.listdir gives the shards: compare as sets
    assert {r["response"] for r in train} == {f"a{i}b" if i % 5 == 0 else f"a{i}" for i in range(25)}
    assert next(r for r in train if r["response"] == "a0b") == {
        "system": "Be brief.", "prompt": ["q0", "a0", "and q0b?"], "response": "a0b"}


# -- plots -------------------------------------------------------------------------------------------------
def test_the_builds_plots_are_copied_and_shown_in_the_card(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=10, n_test=2)
    add_plots(build, ("funnel", "tokens"))
    out = tmp_path / "hub"
    summary = export_build(ExportConfig(build, out))
    assert summary["plots"] == ["plots/funnel.png", "plots/tokens.png"]
    assert (out / "plots/tokens.png").read_bytes() == (build / "plots/tokens.png").read_bytes()
    text = load_card(out).text
    assert "![The funnel plot](plots/funnel.png)" in text and "![The tokens plot](plots/tokens.png)" in text
    # a re-export after the report dropped a plot does not keep the old picture
    (build / "plots/tokens.png").unlink()
    add_plots(build, ("funnel",))
    export_build(ExportConfig(build, out))
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["funnel.png"]
    assert "tokens.png" not in load_card(out).text


def test_no_plots_no_section(tmp_path: Path) -> None:
    out = tmp_path / "hub"
    export_build(ExportConfig(fake_build(tmp_path / "build", n_train=5, n_test=1), out))
    assert "## The build in pictures" not in load_card(out).text and not (out / "plots").exists()


# -- licences and sources ----------------------------------------------------------------------------------
def manifest(tmp_path: Path, slim_license: str | None) -> object:
    from sft_builder.manifest import load_manifest

    (tmp_path / "slim.jsonl").write_text("{}\n")
    lic = f", license: {slim_license}" if slim_license else ""
    path = tmp_path / "m.yaml"
    path.write_text(
        "seed: 1\n"
        "sources:\n"
        "  - {name: codealpaca, adapter: alpaca, inputs: lucasmccabe-lmi/CodeAlpaca-20k}\n"
        f"  - {{name: slimorca, adapter: sharegpt, inputs: [Open-Orca/SlimOrca, slim.jsonl]{lic}}}\n"
        "steps: {clean: {}}\n")
    return load_manifest(path)


def test_mixed_licences_are_other_with_a_name_and_a_link_to_licence_md(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=12, n_test=3)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out), manifest(tmp_path, "mit"))
    card = load_card(out)
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other", "crystalmix-source-licenses", "LICENSE.md")
    assert card.data.source_datasets == ["Open-Orca/SlimOrca", "lucasmccabe-lmi/CodeAlpaca-20k"]
    assert "| codealpaca | lucasmccabe-lmi/CodeAlpaca-20k | cc-by-nc-4.0 |" in card.text
    assert "| slimorca | Open-Orca/SlimOrca, slim.jsonl | mit |" in card.text
    licence = (out / "LICENSE.md").read_text()
    assert "| codealpaca | [lucasmccabe-lmi/CodeAlpaca-20k](https://huggingface.co/datasets/" in licence
    assert "| mit |" in licence
    assert (out / "manifest.yaml").read_text() == (tmp_path / "m.yaml").read_text()
    assert "crystalmix build manifest.yaml --out build" in card.text and "abc123def4567890" in card.text


def test_one_licence_is_the_sets_licence(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=12, n_test=3)
    out = tmp_path / "hub"
    (out / "LICENSE.md").parent.mkdir()
    export_build(ExportConfig(build, out), manifest(tmp_path, "mit"))
    assert (out / "LICENSE.md").exists()
    export_build(ExportConfig(build, out), manifest(tmp_path, "cc-by-nc-4.0"))
    card = load_card(out)
    assert card.data.license == "cc-by-nc-4.0" and getattr(card.data, "license_name", None) is None
    assert not (out / "LICENSE.md").exists(), "a licence file of an earlier export does not stay"


# -- the output folder -------------------------------------------------------------------------------------
def test_rerun_removes_stale_shards(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build", n_train=30, n_test=5)
    out = tmp_path / "hub"
    export_build(ExportConfig(build, out, rows_per_shard=10))
    export_build(ExportConfig(build, out, rows_per_shard=100))
    assert sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet")) == [
        "data/messages/test/test-00000-of-00001.parquet", "data/messages/train/train-00000-of-00001.parquet"]


def test_a_folder_with_other_content_is_refused_unless_forced(tmp_path: Path, run_cli) -> None:
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "README.md").write_text("my own dataset\n")
    (mine / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 mine")
    code, err = run_cli("export", str(build), "--out", str(mine))
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (mine / "README.md").read_text() == "my own dataset\n"
    assert (mine / "data" / "train-00000-of-00001.parquet").read_bytes() == b"PAR1 mine"
    code, err = run_cli("export", str(build), "--out", str(mine), "--force")
    assert code == 0, err
    assert load_card(mine).data.configs[0]["config_name"] == "messages"
    # once ours, it is rewritten without --force; a file as --out is refused
    assert run_cli("export", str(build), "--out", str(mine))[0] == 0
    (tmp_path / "file").write_text("x")
    code, err = run_cli("export", str(build), "--out", str(tmp_path / "file"))
    assert code == 2 and "existing file" in err


def test_export_needs_a_build(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="report.json"):
        export_build(ExportConfig(tmp_path, tmp_path / "hub"))


@pytest.mark.skipif(not (ROOT / "manifests" / "demo.yaml").is_file(), reason="no demo manifest")
def test_the_demo_build_exports_with_its_plots(tmp_path: Path, run_cli) -> None:
    build = tmp_path / "demo"
    code, err = run_cli("build", str(ROOT / "manifests" / "demo.yaml"), "--out", str(build))
    assert code == 0, err
    out = tmp_path / "hub"
    code, err = run_cli("export", str(build), "--out", str(out), "--manifest", str(ROOT / "manifests" / "demo.yaml"))
    assert code == 0, err
    card = load_card(out)
    pngs = sorted(p.name for p in (build / "plots").glob("*.png"))
    assert pngs and sorted(p.name for p in (out / "plots").glob("*.png")) == pngs
    assert all(f"(plots/{n})" in card.text for n in pngs)
    report = json.loads((build / "report.json").read_text())
    assert report["fingerprint"] in card.text
    from datasets.info import DatasetInfosDict

    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    rows = sum(s.num_examples for info in infos.values() for s in info.splits.values())
    assert rows == report["totals"]["train"] + report["totals"]["test"], "every kept record, in one config or the other"
    assert set(infos) == {"messages", "text"}, "the demo's documents are the text config"
