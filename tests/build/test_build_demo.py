"""End to end: the demo manifest against what generate.py planted; determinism, resume and invalidation."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sft_builder.build import build
from sft_builder.manifest import Manifest, load_manifest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo.yaml"
PLANTED = json.loads((ROOT / "manifests" / "demo_data" / "PLANTED.json").read_text())


def split_demo(monkeypatch: pytest.MonkeyPatch) -> tuple[Manifest, dict[str, int]]:
    """The demo manifest with its JSONL sources cut into parts and its mix into shards of several row
    groups (small sizes, so a few hundred records make many tasks); and each source's number of parts."""
    import crystalmix.core.readers as readers
    import sft_builder.mix as mix
    from sft_builder.build import plan_ingest

    monkeypatch.setattr(readers, "PART_BYTES", 8_000)
    monkeypatch.setattr(mix, "ROWS_PER_FILE", 120)
    monkeypatch.setattr(mix, "ROW_GROUP", 25)
    m = load_manifest(DEMO)
    return m, {s.name: len(plan_ingest(s) or []) for s in m.sources}


def outputs(out: Path) -> dict[str, bytes]:
    """Every published file (the stage cache under .work is not an output)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".work" not in p.parts
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    result = build(load_manifest(DEMO), out)
    return out, result.report


def test_report_matches_what_was_planted(demo: tuple[Path, dict]) -> None:
    _, report = demo
    for name, v in report["sources"].items():
        assert v["read"] == v["kept"] + sum(v["dropped"].values())
        not_mix = {k: n for k, n in v["dropped"].items() if not k.startswith("mix:")}
        assert not_mix == PLANTED.get(name, {}), name


def test_mix_settings_are_applied(demo: tuple[Path, dict]) -> None:
    _, report = demo
    s = report["sources"]
    evol = s["evol_codealpaca"]
    before_mix = evol["read"] - sum(n for k, n in evol["dropped"].items() if not k.startswith("mix:"))
    assert (
        evol["kept"] == int(0.5 * before_mix + 0.5)
        and evol["dropped"]["mix:weight"] == before_mix - evol["kept"]
    )
    assert s["slimorca"]["kept"] == 40 and s["webgen"]["kept"] == 8
    assert (
        s["rosetta"]["train"] + 2 * s["rosetta"]["test"] == 2 * s["rosetta"]["kept"]
    )  # epochs: 2 (train only)
    assert report["totals"]["train"] == sum(v["train"] for v in s.values())


def test_every_drop_is_in_the_rejects_with_provenance(demo: tuple[Path, dict]) -> None:
    out, report = demo
    counted: Counter[str] = Counter()
    for f in (out / "rejects").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            assert r["step"] == f.stem and r["file"] and r["line"] > 0
            counted[f"{r['source']}|{r['step']}:{r['reason']}"] += 1
            if r["step"].endswith("dedup"):
                assert r["duplicate_of"]
    expected = Counter({f"{s}|{k}": n for s, v in report["sources"].items() for k, n in v["dropped"].items()})
    assert counted == expected


def test_parquet_schema_split_and_groups(demo: tuple[Path, dict]) -> None:
    out, report = demo
    files = sorted((out / "conversations").glob("*.parquet"))
    assert [f.name for f in files] == ["test-00000.parquet", "train-00000.parquet"]
    split_of: dict[str, set[str]] = defaultdict(set)
    rows = 0
    for f in files:
        table = pq.read_table(f)
        assert table.column_names == ["id", "source", "messages", "meta", "text"]
        assert b"pandas" not in (table.schema.metadata or {})
        for row in table.to_pylist():
            rows += 1
            meta = json.loads(row["meta"])
            split_of[str(meta.get("group") or row["id"])].add(f.name.split("-")[0])
    assert rows == report["totals"]["train"] + report["totals"]["test"]
    assert all(len(v) == 1 for v in split_of.values())
    assert report["totals"]["test"] > 0


def test_near_duplicates_point_at_kept_conversations(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    ids = {r["id"] for f in (out / "conversations").glob("*.parquet") for r in pq.read_table(f).to_pylist()}
    for line in (out / "rejects" / "near_dedup.jsonl").read_text().splitlines():
        assert json.loads(line)["duplicate_of"] in ids


def test_same_bytes_with_more_workers_and_after_resume(demo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo
    again = tmp_path / "again"
    build(load_manifest(DEMO), again, workers=2)
    assert outputs(again) == outputs(out)
    # an interrupted build: the mix stage and the outputs are gone, earlier stages are reused
    for d in (again / ".work").glob("mix-*"):
        shutil.rmtree(d)
    shutil.rmtree(again / "conversations")
    (again / "report.json").unlink()
    result = build(load_manifest(DEMO), again)
    stages = len(load_manifest(DEMO).sources) + 1  # one ingest per source, and the global stage
    assert sum(s.startswith(("ingest-", "global-")) for s in result.skipped_stages) == stages
    assert outputs(again) == outputs(out)


def test_changed_manifest_redoes_only_what_it_changes(tmp_path: Path) -> None:
    shutil.copytree(DEMO.parent / "demo_data", tmp_path / "m" / "demo_data")
    m2 = tmp_path / "m" / "demo.yaml"
    text = DEMO.read_text()
    m2.write_text(text)
    work = tmp_path / "out"
    first = build(load_manifest(m2), work).report
    # a mixing setting: only the mix is redone
    m2.write_text(text.replace("    weight: 0.5\n", "    weight: 0.25\n"))
    result = build(load_manifest(m2), work)
    assert {s.split("-")[0] for s in result.skipped_stages} == {"ingest", "global"}
    assert result.report["sources"]["evol_codealpaca"]["kept"] < first["sources"]["evol_codealpaca"]["kept"]
    # one source's filter override: that source's ingest, and the stages after it when its output changed
    # (stages are keyed on the content of what they read)
    (orig,) = (work / ".work").glob("ingest-codealpaca-*")
    old = (orig / "kept.jsonl").read_bytes()
    for override, changes in (("language: {}  # code", None), ("quality: {min_chars: 400}  # code", True)):
        before = {d.name for d in (work / ".work").iterdir()}
        m2.write_text(text.replace("language: false                    # code", override))
        result = build(load_manifest(m2), work)
        redone = {d.name for d in (work / ".work").iterdir()} - set(result.skipped_stages) - before
        (ingest,) = (d for d in redone if d.startswith("ingest"))
        assert ingest.startswith("ingest-codealpaca-")
        new = (work / ".work" / ingest / "kept.jsonl").read_bytes()
        assert changes is None or changes == (old != new)
        assert any(d.startswith("global-") for d in redone) == (old != new)
        assert any(d.startswith("mix-") for d in redone) == (old != new)


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_bytes(demo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo
    cli = [sys.executable, "-c", "from crystalmix.cli import main; main()"]
    # killed once some sources are ingested, and once the global stage has begun (not after a fixed delay,
    # which under load came before any work or after the build had ended)
    for stage, started in (("ingest", "ingest-*/stats.json"), ("global", "global-*")):
        target = tmp_path / f"killed-{stage}"
        proc = subprocess.Popen(
            [*cli, "build", str(DEMO), "--out", str(target), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        try:
            while not any((target / ".work").glob(started)) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the build ended before it could be killed in its {stage} stage"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert not (target / "report.json").exists()
        subprocess.run(
            [*cli, "build", str(DEMO), "--out", str(target), "-q"], check=True, stdout=subprocess.DEVNULL
        )
        # the command also draws the report's views (report.html, plots/, report.md with plot links); build()
        # alone does not, so those are compared by tests/build/test_report_html.py
        views = ("report.html", "report.md", "plots/")
        assert {k: v for k, v in outputs(target).items() if not k.startswith(views)} == {
            k: v for k, v in outputs(out).items() if not k.startswith(views)}
        assert not list(target.rglob("*.tmp"))
