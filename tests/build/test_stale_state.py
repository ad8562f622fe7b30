"""A rerun never trusts stale or damaged work: stages are keyed on what their files hold, reuse is verified,
published files are copies, and publishing is all or nothing.

Edits below keep each file's size and modification time (`same_stat`), so only a content key can see them.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crystalmix.cli import app
from crystalmix.core import hdf5
from crystalmix.core.tokenizer import load_tokenizer, train_demo_tokenizer
from sft_builder.build import build, iter_parquet
from sft_builder.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo_data"
PASSAGE = ("A beginner directly affects the cost of each step because it is easy to read. The weather model "
           "carefully checks the speed of delivery if you plan ahead.")  # in guanaco.jsonl, line 1
FILLER = "x" * len(PASSAGE)


def same_stat(path: Path, data: bytes) -> None:
    """Replace a file's bytes keeping its size and modification time."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(DEMO.glob("*.json*"))]


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two trainings of a tokenizer, a large and a small vocabulary, to swap in place."""
    base = tmp_path_factory.mktemp("tokenizers")
    return {n: train_demo_tokenizer(texts(), base / str(n), vocab_size=n) for n in (2000, 400)}


@pytest.fixture
def project(tmp_path: Path, tokenizer_files: dict[int, Path]) -> Path:
    """A two-source manifest with a benchmark file, a local tokenizer and a custom template beside it."""
    shutil.copy(DEMO / "guanaco.jsonl", tmp_path / "guanaco.jsonl")
    shutil.copy(DEMO / "code_alpaca.json", tmp_path / "code_alpaca.json")
    shutil.copytree(tokenizer_files[2000], tmp_path / "tok")
    shutil.copy(ROOT / "templates" / "crystalchat.jinja", tmp_path / "t.jinja")
    (tmp_path / "bench.jsonl").write_text(json.dumps({"text": FILLER}) + "\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""
        seed: 3
        sources:
          - {name: guanaco, adapter: guanaco, inputs: guanaco.jsonl}
          - {name: alpaca, adapter: alpaca, inputs: code_alpaca.json}
        steps:
          exact_dedup: {}
          decontaminate: {benchmarks: [{name: bench, path: bench.jsonl, fields: [text]}]}
        split: {test_fraction: 0.1}
        tokenize: {tokenizer: tok, template: t.jinja, seq_len: 512, samples_per_file: 8, workers: 1}
    """), encoding="utf-8")
    return tmp_path


def run(project: Path, **kw: object):  # noqa: ANN201 - a BuildResult
    return build(load_manifest(project / "m.yaml"), project / "out", **kw)


def published(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(out).parts}


def kinds(result) -> set[str]:  # noqa: ANN001
    return {s.split("-")[0] for s in result.skipped_stages}


# -- stages are keyed on content -----------------------------------------------------------------------------
def test_an_input_edited_without_changing_size_or_time_redoes_its_ingest(project: Path) -> None:
    first = run(project)
    data = (project / "guanaco.jsonl").read_bytes()
    same_stat(project / "guanaco.jsonl", data.replace(b"knitting", b"KNITTING", 1))
    again = run(project)
    assert not any(s.startswith("ingest-guanaco-") for s in again.skipped_stages)
    assert any(s.startswith("ingest-alpaca-") for s in again.skipped_stages)
    assert again.report["sources"]["guanaco"]["read"] == first.report["sources"]["guanaco"]["read"]
    texts = [msg.content for f in sorted((project / "out" / "conversations").glob("*.parquet"))
             for c in iter_parquet(f) for msg in c.messages]
    assert any("KNITTING" in t for t in texts)


def test_an_edited_benchmark_drops_the_contaminated_record(project: Path) -> None:
    first = run(project)
    assert "decontaminate:bench" not in first.report["sources"]["guanaco"]["dropped"]
    same_stat(project / "bench.jsonl", (json.dumps({"text": PASSAGE}) + "\n").encode())
    again = run(project)
    assert again.report["sources"]["guanaco"]["dropped"].get("decontaminate:bench") == 1
    assert kinds(again) == {"ingest"}  # the benchmark is read by the global stage: it and all after it redone
    rejects = (project / "out" / "rejects" / "decontaminate.jsonl").read_text(encoding="utf-8")
    assert "knitting" in rejects


def test_an_edited_template_redoes_the_tokenize_stage(project: Path) -> None:
    run(project)
    folder = project / "out" / "tokenized" / "train"
    meta, rows = hdf5.read_metadata(folder), hdf5.read_rows(folder / "data-00000.h5")
    src = (project / "t.jinja").read_bytes()
    assert b"You are CrystalCoder" in src
    same_stat(project / "t.jinja", src.replace(b"You are CrystalCoder", b"You are CrystalCodex"))
    again = run(project)
    assert {"ingest", "global", "mix"} <= kinds(again)
    assert hdf5.read_metadata(folder)["fingerprint"] != meta["fingerprint"]
    new_rows = hdf5.read_rows(folder / "data-00000.h5")
    assert new_rows.shape != rows.shape or (new_rows != rows).any()  # the new system prompt is in the rows


def test_a_tokenizer_rebuilt_in_place_is_caught_by_validate_and_redone_by_build(
        project: Path, tokenizer_files: dict[int, Path]) -> None:
    run(project)
    folder = project / "out" / "tokenized" / "train"
    assert hdf5.validate_folder(folder, check_tokenizer=True)[1] == []
    for f in tokenizer_files[400].iterdir():  # the tokenizer rebuilt in place, with a smaller vocabulary
        shutil.copy(f, project / "tok" / f.name)
    _, problems = hdf5.validate_folder(folder, check_tokenizer=True)
    assert any("now has" in p for p in problems), problems
    assert any("outside vocabulary" in p for p in problems), problems
    res = CliRunner().invoke(app, ["validate", str(project / "out")])
    assert res.exit_code == 1 and "now has" in res.output
    run(project)
    meta = hdf5.read_metadata(folder)
    assert meta["vocab_size"] == len(load_tokenizer(project / "tok")) < 1000
    assert hdf5.validate_folder(folder, check_tokenizer=True)[1] == []
    assert CliRunner().invoke(app, ["validate", str(project / "out")]).exit_code == 0


# -- reuse is verified ---------------------------------------------------------------------------------------
def test_damaged_stage_files_are_redone_to_the_same_bytes(project: Path) -> None:
    run(project)
    ref = published(project / "out")
    work = project / "out" / ".work"
    (kept,) = work.glob("ingest-guanaco-*/kept.jsonl")
    kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])  # truncated
    (shard,) = work.glob("mix-*/train-00000.parquet")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    shard.write_bytes(bytes(data))
    h5 = project / "out" / "tokenized" / "train" / "data-00000.h5"
    h5.write_bytes(h5.read_bytes()[:1000])
    again = run(project)
    assert not any(s.startswith(("ingest-guanaco-", "mix-")) for s in again.skipped_stages)
    assert any(s.startswith("ingest-alpaca-") for s in again.skipped_stages)
    assert published(project / "out") == ref
    assert hdf5.validate_folder(project / "out" / "tokenized" / "train")[1] == []


def test_unchanged_rerun_reuses_every_stage_and_keeps_the_bytes(project: Path) -> None:
    run(project)
    ref = published(project / "out")
    again = run(project)
    assert kinds(again) == {"ingest", "global", "mix"}
    assert published(project / "out") == ref


def test_published_files_are_copies_and_a_damaged_one_is_restored(project: Path) -> None:
    run(project)
    ref = published(project / "out")
    pub = project / "out" / "conversations" / "train-00000.parquet"
    (cache,) = (project / "out" / ".work").glob("mix-*/train-00000.parquet")
    assert pub.stat().st_nlink == 1 and not os.path.samefile(pub, cache)
    pub.write_bytes(b"\0" * pub.stat().st_size)
    assert cache.read_bytes() == ref["conversations/train-00000.parquet"]  # the cache is untouched
    again = run(project)
    assert kinds(again) == {"ingest", "global", "mix"}
    assert published(project / "out") == ref


def test_publishing_is_all_or_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(project)
    ref = published(project / "out")
    # a damaged ingest cache and a manifest change (a new mix), then a failure while publishing
    (kept,) = (project / "out" / ".work").glob("ingest-guanaco-*/kept.jsonl")
    kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])
    m = project / "m.yaml"
    m.write_text(m.read_text().replace("seed: 3", "seed: 4"), encoding="utf-8")
    import sft_builder.report as report

    def fail(*args: object, **kw: object) -> None:
        raise RuntimeError("disk trouble while writing the report")

    monkeypatch.setattr(report, "write_report", fail)
    with pytest.raises(RuntimeError, match="disk trouble"):
        run(project)
    now = published(project / "out")
    assert {k: v for k, v in now.items() if not k.startswith("tokenized/")} == \
        {k: v for k, v in ref.items() if not k.startswith("tokenized/")}  # nothing of the new mix published
    monkeypatch.undo()
    result = run(project)
    assert result.report["seed"] == 4
    n = sum(s["kept"] for s in result.report["sources"].values())
    assert n == result.report["totals"]["kept"]
