"""`--out URL`: the build runs in a local working folder and publishes the same files a local build writes, the
completion marker last; a rerun uploads nothing; file:// stays a local folder; a missing input URL is exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from crystalmix.cli import run
from crystalmix.core.remote import JOURNAL, PUBLISHED

from .conftest import ROOT, Result

DEMO = ROOT / "manifests" / "demo_data"


def _manifest(folder: Path, prefix: str = "") -> Path:
    """Three bundled sources, every kind of output (parquet, rejects, report, tokenized HDF5, plots)."""
    path = folder / "m.yaml"
    path.write_text(f"""seed: 3
sources:
  - {{name: guanaco, adapter: guanaco, inputs: {prefix}{DEMO / "guanaco.jsonl"}}}
  - {{name: alpaca, adapter: alpaca, inputs: {prefix}{DEMO / "code_alpaca.json"}}}
  - {{name: webgen, adapter: conversations, inputs: {prefix}{DEMO / "webgen.jsonl"}}}
steps:
  clean: {{html_to_markdown: false}}
  quality: {{min_chars: 20}}
  exact_dedup: {{}}
split: {{test_fraction: 0.1}}
tokenize: {{tokenizer: demo, template: crystalchat, seq_len: 512}}
""", encoding="utf-8")
    return path


def _local(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(out).parts}


def _remote(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root) + 1:]: bytes(fs.cat_file(p)) for p in fs.find(root)}


@pytest.fixture
def url(memory_root: str) -> str:
    return f"{memory_root}/build"


def test_build_to_a_url_publishes_what_a_local_build_writes(tmp_path: Path, url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    m = _manifest(tmp_path)
    assert run(["build", str(m), "--out", str(tmp_path / "local"), "-q"]) == 0
    moved: list[str] = []
    real_mv = MemoryFileSystem.mv

    def mv(self: MemoryFileSystem, path1: str, path2: str, **kw: object) -> None:
        moved.append(path2.rsplit("/build/", 1)[1])
        real_mv(self, path1, path2, **kw)

    monkeypatch.setattr(MemoryFileSystem, "mv", mv)
    work = tmp_path / "work"
    assert run(["build", str(m), "--out", url, "--work", str(work), "-q"]) == 0
    want, got = _local(tmp_path / "local"), _remote(url)
    assert any(n.endswith(".h5") for n in want) and "report.html" in want
    assert {n: b for n, b in got.items() if n != PUBLISHED} == want  # the same names and bytes
    assert moved[-1] == PUBLISHED and sorted(moved[:-1]) == sorted(want)  # every file moved in, the marker last
    assert set(json.loads(got[PUBLISHED])["files"]) == set(want)
    assert (work / ".work").is_dir() and (work / JOURNAL).is_file()  # the resumable state stays local

    moved.clear()
    assert run(["build", str(m), "--out", url, "--work", str(work), "-q"]) == 0
    assert moved == [] and _remote(url) == got  # a rerun finds every file intact and writes nothing


def test_a_url_out_holding_other_files_stops_before_building(tmp_path: Path, url: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/mine.txt", b"x")
    assert run(["build", str(_manifest(tmp_path)), "--out", url, "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and url in err and "did not write" in err
    assert not (tmp_path / "w").exists()


def test_file_urls_in_and_out_through_the_installed_script(tmp_path: Path, cli: Callable[..., Result]) -> None:
    out = tmp_path / "out"
    res = cli("build", _manifest(tmp_path, prefix="file://"), "--out", out.as_uri(), "-q")
    assert res.code == 0, res.err
    assert (out / "report.json").is_file() and not (out / PUBLISHED).exists()  # file:// is a local folder
    files = {json.loads(line)["file"] for f in (out / "rejects").glob("*.jsonl")
             for line in f.read_text(encoding="utf-8").splitlines()}
    assert files and all(f.startswith("file:///") for f in files)  # provenance names the URL read

    missing = (tmp_path / "nothing.jsonl").as_uri()
    m = tmp_path / "missing.yaml"
    m.write_text(f"sources:\n  - {{name: a, adapter: guanaco, inputs: {missing}}}\n", encoding="utf-8")
    cli("build", m, "--out", tmp_path / "o2").one_line(2, missing, "file not found")


def test_a_bad_input_with_a_url_out_is_one_line_and_no_work_folder(tmp_path: Path,
                                                                   cli_many: Callable[..., list[Result]]) -> None:
    # each command checks its inputs before it says where it works: a bad one is one line, exit 2, nothing else
    cache, url = tmp_path / "cache", "memory://bad-input/out"
    not_a_build = tmp_path / "not-a-build"
    not_a_build.mkdir()
    broken = tmp_path / "broken"
    (broken / "conversations").mkdir(parents=True)
    (broken / "report.json").write_text('{\n  "sources": {\n', encoding="utf-8")  # cut short
    pretrain = ROOT / "manifests" / "pretrain" / "demo.yaml"
    small_vocab = tmp_path / "stage.yaml"
    text = pretrain.read_text(encoding="utf-8").replace("demo_data/", f"{pretrain.parent}/demo_data/")
    small_vocab.write_text(text.replace("seq_len: 512\n", "seq_len: 512\nmodel_vocab_size: 10\n"), encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    no_tokenizer = tmp_path / "no-tokenizer"
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"sources:\n  - {{name: a, adapter: guanaco, inputs: {tmp_path / 'none.jsonl'}}}\n",
                       encoding="utf-8")
    runs = cli_many([
        ["export", not_a_build, "-o", url],
        ["export", broken, "-o", url],
        ["pretrain", "build", pretrain, "-o", url, "--tokenizer", no_tokenizer],
        ["pretrain", "build", small_vocab, "-o", url],
        ["build", _manifest(tmp_path), "-o", url, "--work", a_file],
        ["build", missing, "-o", url],
    ], env={"XDG_CACHE_HOME": str(cache)})  # where the default work folders would go
    needles = [
        [f"{not_a_build}: no report.json"],
        [f"{broken / 'report.json'}:3:", "not valid JSON"],
        [str(no_tokenizer)],
        ["model_vocab_size 10"],
        [f"{a_file}: --work names an existing file"],
        [f"{missing}:2:", "file not found"],
    ]
    for res, want in zip(runs, needles, strict=True):
        res.one_line(2, "error:", *want)
        assert res.out == "" and "running in" not in res.err
    assert not cache.exists()
