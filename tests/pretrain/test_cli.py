"""The command line: a corrupt input stops with one line naming it (exit 2); --skip-bad-files records it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from crystalmix.cli import main

from .conftest import DEMO, stage_manifest, tree_hashes


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["crystalmix", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture()
def corpus_with_bad_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DEMO / "starcoder" / "css" / "train-00000-of-00001.parquet", data / "a.parquet")
    (data / "b.parquet").write_bytes(b"PAR1 garbage, not a parquet file")
    sources = [{"name": "code", "paths": [str(data / "*.parquet")], "text_field": "content", "weight": 1.0}]
    return stage_manifest(tmp_path, sources=sources, mixture={"offline": False})


def test_bad_file_stops_with_one_line(corpus_with_bad_file: Path, tmp_path: Path, monkeypatch,
                                      capsys) -> None:
    args = ["pretrain", "build", str(corpus_with_bad_file), "--out", str(tmp_path / "o"), "-q"]
    code = _run(args, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    assert "b.parquet" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_skip_bad_files_records_them(corpus_with_bad_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "o"
    code = _run(["pretrain", "build", str(corpus_with_bad_file), "--out", str(out), "-q",
                 "--skip-bad-files"], monkeypatch)
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "build.json").read_text())
    assert len(summary["bad_files"]) == 1 and "b.parquet" in summary["bad_files"][0]
    assert summary["num_sequences"] > 0
    assert "skipped bad file" in capsys.readouterr().out


def test_locate_command(reference_build, monkeypatch, capsys) -> None:
    out = reference_build[0]
    assert _run(["pretrain", "locate", str(out / "c4" / "epoch-0"), "70"], monkeypatch) == 0
    got = json.loads(capsys.readouterr().out)
    files = json.loads((out / "c4" / "epoch-0" / "index.json").read_text())["files"]
    first = files[0]["n_examples"]  # 70 lies in the second file when the first holds fewer rows
    assert first <= 70 < first + files[1]["n_examples"]
    assert got == {"file": str(out / "c4" / "epoch-0" / "data-00001.h5"), "row": 70 - first}
    assert _run(["pretrain", "locate", str(out), "0"], monkeypatch) == 2
    assert "c4/epoch-0" in capsys.readouterr().err


def test_manifest_typo_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    bad = stage_manifest(tmp_path, shuffel=True)
    assert _run(["pretrain", "build", str(bad), "--out", str(tmp_path / "o")], monkeypatch) == 2
    assert "shuffel" in capsys.readouterr().err


def test_mix_command_writes_what_the_build_wrote(reference_build, tmp_path: Path, monkeypatch, capsys) -> None:
    ref, hashes, _ = reference_build
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    shutil.rmtree(out / "mixed")  # as if built with mixture: {offline: false}
    assert _run(["pretrain", "mix", str(ref.parent / "stage.yaml"), "-o", str(out)], monkeypatch) == 0
    assert tree_hashes(out) == hashes
    assert "sequences in" in capsys.readouterr().out
    assert _run(["pretrain", "mix", str(ref.parent / "stage.yaml"), "-o", str(out), "--seed", "8"], monkeypatch) == 0
    assert "already mixed" in capsys.readouterr().err  # an existing mix is never silently taken for another
