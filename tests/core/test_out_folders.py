"""Nothing escapes `--out`, nothing is overwritten unasked (issue 13).

A command writes only into a folder it owns: new, empty, or marked by an earlier run of the same command.
A folder holding other files is refused (the user's parquet, rejects, README.md and *.tmp stay untouched)
unless `--force`; `--out` naming a file is one line; temporaries are swept only by our own names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from crystalmix.core.atomic import (
    FOLDER_MARKER,
    atomic_open,
    claim_folder,
    folder_kind,
    sweep_temporaries,
)
from crystalmix.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_DEMO = ROOT / "manifests" / "pretrain" / "demo_data"

RunCli = Callable[..., tuple[int, str]]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its content hash (what "untouched" means)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def users_folder(root: Path) -> Path:
    """A folder of someone else's files with the names our commands write or sweep."""
    root.mkdir(parents=True)
    (root / "README.md").write_text("my dataset card\n")
    (root / "data").mkdir()
    (root / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 mine")
    (root / "conversations").mkdir()
    (root / "conversations" / "train-00009.parquet").write_bytes(b"PAR1 mine too")
    (root / "rejects").mkdir()
    (root / "rejects" / "clean.jsonl").write_text('{"mine": 1}\n')
    (root / ".notes.123.tmp").write_text("looks like ours, is not in our folder")
    (root / "draft.tmp").write_text("mine")
    return root


def tiny_manifest(folder: Path) -> Path:
    """A one-source SFT manifest over two interchange records: builds in about a second."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"r{i}", "source": "s", "messages": [{"role": "user", "content": f"Question number {i}?"},
                                                        {"role": "assistant", "content": f"Answer {i}."}],
             "meta": {}} for i in range(2)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = folder / "m.yaml"
    m.write_text(yaml.safe_dump({"seed": 1, "sources": [{"name": "s", "adapter": "conversations",
                                                          "inputs": "data.jsonl"}],
                                 "split": {"test_fraction": 0.0}}))
    return m


# -- the library rule -----------------------------------------------------------------------------------
def test_claim_takes_new_empty_and_own_folders(tmp_path: Path) -> None:
    new = claim_folder(tmp_path / "a" / "b", "build")
    assert folder_kind(new) == "build" and json.loads((new / FOLDER_MARKER).read_text())["version"] == 1
    (new / "report.json").write_text("{}")
    assert claim_folder(new, "build") == new  # ours, with our files in it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert folder_kind(claim_folder(empty, "export")) == "export"
    legacy = tmp_path / "legacy"
    (legacy / ".work").mkdir(parents=True)
    (legacy / "report.json").write_text("{}")
    assert folder_kind(claim_folder(legacy, "build", legacy=(".work",))) == "build"


def test_claim_refuses_foreign_other_kind_and_files(tmp_path: Path) -> None:
    mine = users_folder(tmp_path / "mine")
    before = snapshot(mine)
    with pytest.raises(UserError, match=r"mine: --out holds files `crystalmix build` did not write.*--force"):
        claim_folder(mine, "build")
    assert snapshot(mine) == before
    exported = claim_folder(tmp_path / "exp", "export")
    with pytest.raises(UserError, match=r"was made by `crystalmix export`, not `crystalmix build`"):
        claim_folder(exported, "build")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match=r"file\.txt: --out names an existing file"):
        claim_folder(f, "build")
    assert f.read_text() == "x"
    blocked = tmp_path / "file.txt" / "sub"
    with pytest.raises(UserError, match=r"cannot create the --out folder"):
        claim_folder(blocked, "build")
    assert folder_kind(claim_folder(mine, "build", force=True)) == "build"


def test_sweep_removes_only_our_temporaries(tmp_path: Path) -> None:
    ours = tmp_path / "out"
    (ours / "sub").mkdir(parents=True)
    orphan = ours / "sub" / ".data-00000.h5.4242.tmp"
    orphan.write_bytes(b"half")
    keep = {ours / "notes.tmp": "user", ours / ".cache.tmp": "user", ours / ".x.tmp.bak": "user",
            ours / "sub" / ".notes.abc.tmp": "user"}
    for p, text in keep.items():
        p.write_text(text)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".victim.1.tmp").write_text("not below the swept folder")
    (ours / "link").symlink_to(outside, target_is_directory=True)
    assert sweep_temporaries(ours) == 1
    assert not orphan.exists() and all(p.read_text() == t for p, t in keep.items())
    assert (outside / ".victim.1.tmp").exists()


def test_a_file_output_naming_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match=r"d: is a folder; name a file"), atomic_open(tmp_path / "d") as fh:
        fh.write("x")


# -- through the commands --------------------------------------------------------------------------------
def test_build_refuses_a_folder_of_other_files(tmp_path: Path, run_cli: RunCli) -> None:
    m = tiny_manifest(tmp_path / "in")
    mine = users_folder(tmp_path / "mine")
    before = snapshot(mine)
    code, err = run_cli("build", str(m), "--out", str(mine), "-q")
    assert code == 2 and err.count("\n") == 1 and "did not write" in err and "Traceback" not in err
    assert snapshot(mine) == before
    # --force: the build writes into it; the user's files whose names are not ours stay (a file named
    # like our temporaries, `.NAME.PID.tmp`, is swept: the folder is the build's now)
    code, err = run_cli("build", str(m), "--out", str(mine), "-q", "--force")
    assert code == 0, err
    after = snapshot(mine)
    for name in ("README.md", "data/train-00000-of-00001.parquet", "draft.tmp"):
        assert after[name] == before[name]
    assert (mine / "report.json").is_file() and folder_kind(mine) == "build"


def test_build_reruns_into_its_own_folder_and_refuses_files(tmp_path: Path, run_cli: RunCli) -> None:
    m = tiny_manifest(tmp_path / "in")
    out = tmp_path / "out"
    assert run_cli("build", str(m), "--out", str(out), "-q")[0] == 0
    first = snapshot(out)
    assert run_cli("build", str(m), "--out", str(out), "-q")[0] == 0
    assert snapshot(out) == first
    f = tmp_path / "a-file"
    f.write_text("keep")
    code, err = run_cli("build", str(m), "--out", str(f), "-q")
    assert code == 2 and "names an existing file" in err and err.count("\n") == 1 and f.read_text() == "keep"


def test_export_refuses_a_folder_of_other_files(tmp_path: Path, run_cli: RunCli) -> None:
    m = tiny_manifest(tmp_path / "in")
    build_dir = tmp_path / "build"
    assert run_cli("build", str(m), "--out", str(build_dir), "-q")[0] == 0
    mine = users_folder(tmp_path / "hub")
    before = snapshot(mine)
    code, err = run_cli("export", str(build_dir), "--out", str(mine))
    assert code == 2 and "did not write" in err and err.count("\n") == 1
    assert snapshot(mine) == before
    code, err = run_cli("export", str(build_dir), "--out", str(build_dir))  # into the build itself
    assert code == 2 and "made by `crystalmix build`" in err
    out = tmp_path / "export"
    assert run_cli("export", str(build_dir), "--out", str(out))[0] == 0
    assert run_cli("export", str(build_dir), "--out", str(out))[0] == 0  # its own folder: rerun is fine
    assert folder_kind(out) == "export"
    code, err = run_cli("export", str(build_dir), "--out", str(mine), "--force")
    assert code == 0, err
    assert (mine / "README.md").read_text() != "my dataset card\n"  # asked for: the card is ours now
    assert snapshot(mine)["rejects/clean.jsonl"] == before["rejects/clean.jsonl"]
    f = tmp_path / "x.parquet"
    f.write_bytes(b"PAR1")
    code, err = run_cli("export", str(build_dir), "--out", str(f))
    assert code == 2 and "names an existing file" in err and f.read_bytes() == b"PAR1"


def test_pretrain_refuses_a_file_and_a_folder_of_other_files(tmp_path: Path, run_cli: RunCli) -> None:
    manifest = ROOT / "manifests" / "pretrain" / "demo.yaml"
    f = tmp_path / "out.h5"
    f.write_bytes(b"mine")
    code, err = run_cli("pretrain", "build", str(manifest), "--out", str(f), "-q")
    assert code == 2 and "names an existing file" in err and err.count("\n") == 1 and f.read_bytes() == b"mine"
    mine = users_folder(tmp_path / "mine")
    before = snapshot(mine)
    for extra in ((), ("--force",)):
        code, err = run_cli("pretrain", "build", str(manifest), "--out", str(mine), "-q", *extra)
        assert code == 2 and "not made by `crystalmix pretrain build`" in err
        assert snapshot(mine) == before


def test_tokenizer_demo_never_overwrites_another_tokenizer(tmp_path: Path, run_cli: RunCli) -> None:
    real = tmp_path / "CrystalCoder"
    real.mkdir()
    (real / "tokenizer.json").write_text('{"the": "real one"}')
    code, err = run_cli("tokenizer", "demo", "--out", str(real))
    assert code == 2 and "holds another tokenizer (tokenizer.json)" in err and err.count("\n") == 1
    assert (real / "tokenizer.json").read_text() == '{"the": "real one"}'
    out = tmp_path / "demo"
    assert run_cli("tokenizer", "demo", "--out", str(out))[0] == 0
    assert run_cli("tokenizer", "demo", "--out", str(out))[0] == 0  # the same files again: fine
    assert run_cli("tokenizer", "demo", "--out", str(real), "--force")[0] == 0
    assert (real / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    code, err = run_cli("tokenizer", "demo", "--out", str(real / "tokenizer.json"))
    assert code == 2 and "names an existing file" in err


def test_encode_output_naming_a_folder_is_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    src = tiny_manifest(tmp_path / "in").parent / "data.jsonl"
    (tmp_path / "o").mkdir()
    code, err = run_cli("encode", str(src), "--out", str(tmp_path / "o"))
    assert code == 2 and "is a folder" in err and err.count("\n") == 1


# -- names that become paths ------------------------------------------------------------------------------
def _stage(tmp_path: Path, name: str = "starcoder", subset: str = "c4") -> Path:
    raw = {"stage": "t", "tokenizer": "demo", "seq_len": 64, "seed": 1,
           "samples_per_file": 16, "min_sequence_len": 4, "mixture": {"offline": True, "shuffle_buffer": 4},
           "sources": [
               {"name": "slimpajama", "paths": [str(PRETRAIN_DEMO / "slimpajama" / "*.jsonl.zst")],
                "subset_field": "meta.redpajama_set_name", "fraction": 0.2,
                "subsets": {"RedPajamaC4": {"name": subset, "weight": 0.5}}},
               {"name": name, "paths": [str(PRETRAIN_DEMO / "starcoder" / "*" / "*.parquet")],
                "text_field": "content", "fraction": 0.2, "weight": 0.5}]}
    p = tmp_path / "stage.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(("field", "value"), [
    ("name", "../../x"), ("name", "/tmp/abs"), ("name", "a/b"), ("name", ".."), ("name", ".hidden"),
    ("subset", "../escape"), ("subset", "/abs"), ("subset", "x/../../y"), ("subset", "~"),
])
def test_pretrain_names_that_would_leave_out_are_refused(tmp_path: Path, field: str, value: str) -> None:
    from pretrain.config import load_manifest

    with pytest.raises(UserError, match=r"stage\.yaml:\d+: .*(name|subsets).*: must be a word"):
        load_manifest(_stage(tmp_path, **{field: value}))


@pytest.mark.parametrize("value", ["../../x", "/abs", "a/b", ".."])
def test_sft_source_names_that_would_leave_out_are_refused(tmp_path: Path, value: str) -> None:
    from sft_builder.manifest import load_manifest

    m = tiny_manifest(tmp_path)
    doc = yaml.safe_load(m.read_text())
    doc["sources"][0]["name"] = value
    m.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"m\.yaml:\d+: sources\[0\]\.name: must be a word"):
        load_manifest(m)


def test_builds_write_nothing_outside_out(tmp_path: Path, run_cli: RunCli) -> None:
    """A real pretraining stage and SFT build change nothing beside their --out (inputs included)."""
    work = tmp_path / "work"
    work.mkdir()
    stage = _stage(work)
    m = tiny_manifest(work / "sft")
    before = snapshot(tmp_path)
    assert run_cli("pretrain", "build", str(stage), "--out", str(tmp_path / "p"), "-q")[0] == 0
    assert run_cli("build", str(m), "--out", str(tmp_path / "b"), "-q")[0] == 0
    after = snapshot(tmp_path)
    outside = {k: v for k, v in after.items() if not k.startswith(("p/", "b/"))}
    assert outside == before
    assert any(k.startswith("p/") and k.endswith(".h5") for k in after)
