"""The tokenize stage end to end: config parsing, outputs, determinism across workers, resume, CLI."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from crystalmix.cli import app
from crystalmix.core import hdf5
from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, Message
from sft_builder import encode as tokenize_stage
from sft_builder.encode import TokenizeConfig, run_tokenize

WORDS = "the a function returns value list python code data file error user print loop class method".split()


def conversations(n: int, seed: int = 0) -> Iterator[Conversation]:
    rng = random.Random(seed)
    for i in range(n):
        msgs = [Message("system", "Be helpful.")] if rng.random() < 0.3 else []
        for _ in range(rng.choice([1, 1, 2])):
            msgs.append(Message("user", " ".join(rng.choices(WORDS, k=rng.randint(2, 20)))))
            msgs.append(Message("assistant", " ".join(rng.choices(WORDS, k=rng.randint(2, 60)))))
        yield Conversation(f"c{i}", rng.choice(["alpha", "beta"]), tuple(msgs))


def cfg(tok: Path, **kw: object) -> TokenizeConfig:
    return TokenizeConfig.from_mapping({"tokenizer": str(tok), "seq_len": 128, "samples_per_file": 40,
                                        "workers": 1, **kw})


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_config_errors_name_the_key() -> None:
    with pytest.raises(UserError, match=r"^tokenize\.packing: must be one of llm360, bfd, none, got 'zip'$"):
        TokenizeConfig.from_mapping({"packing": "zip"}, "tokenize")
    with pytest.raises(UserError, match=r"build\.tokenize\.seq_len: must be an integer"):
        TokenizeConfig.from_mapping({"seq_len": "long"}, "build.tokenize")
    with pytest.raises(UserError, match=r"tokenize\.colour: unknown key"):
        TokenizeConfig.from_mapping({"colour": 1})
    c = TokenizeConfig.from_mapping(None)
    got = (c.seq_len, c.packing, c.output, c.template, c.tokenizer)
    assert got == (2048, "bfd", "hdf5", "crystalchat", "demo")
    assert "workers" not in c.identity()


@pytest.mark.parametrize("packing", ["bfd", "llm360", "none"])
def test_hdf5_output_validates_and_metadata_counts(packing: str, demo_tokenizer_dir: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    rep = run_tokenize(conversations(300), cfg(demo_tokenizer_dir, packing=packing), out, seed=3,
                       fingerprint="f1")
    assert hdf5.validate_folder(out) == (rep["rows"], [])
    meta = hdf5.read_metadata(out)
    assert meta["fingerprint"] == "f1" and meta["packing"] == packing and meta["template"] == "crystalchat"
    assert sum(f["n_examples"] for f in meta["files"]) == meta["num_sequences"] == rep["rows"]
    assert set(meta["per_source"]) == {"alpha", "beta"}
    assert sum(s["conversations"] for s in meta["per_source"].values()) == 300
    with h5py.File(out / "data-00000.h5") as fh:
        assert fh["data"].shape[1:] == (3, 128) and fh["data"].chunks == (1, 3, 128)
        assert fh["segment_ids"].shape == (fh["data"].shape[0], 128)
    if packing == "llm360":
        assert meta["non_pad_tokens"] == meta["num_tokens"]
    if packing == "bfd":
        assert rep["packing_efficiency"] > 0.8


def test_bytes_do_not_depend_on_workers_and_seed_shuffles(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_tokenize(conversations(400), cfg(demo_tokenizer_dir), a, seed=1, fingerprint="f")
    run_tokenize(conversations(400), cfg(demo_tokenizer_dir, workers=2), b, seed=1, fingerprint="f")
    run_tokenize(conversations(400), cfg(demo_tokenizer_dir), c, seed=2, fingerprint="f")
    assert digest(a) == digest(b)
    ra = np.concatenate([hdf5.read_rows(p) for p in sorted(a.glob("*.h5"))])
    rc = np.concatenate([hdf5.read_rows(p) for p in sorted(c.glob("*.h5"))])
    assert not np.array_equal(ra, rc)
    key = lambda rows: sorted(r.tobytes() for r in rows)  # noqa: E731
    assert key(ra) == key(rc), "another seed reorders the same rows"


def test_skip_when_complete_and_resume_after_interruption(demo_tokenizer_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "ref"
    run_tokenize(conversations(300), cfg(demo_tokenizer_dir), ref, seed=1, fingerprint="f")
    assert run_tokenize(iter(()), cfg(demo_tokenizer_dir), ref, seed=1, fingerprint="f")["skipped"] is True

    out = tmp_path / "out"
    real = tokenize_stage._write_h5
    calls = []

    def crash_on_third(*args: object, **kw: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args, **kw)

    monkeypatch.setattr(tokenize_stage, "_write_h5", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_tokenize(conversations(300), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    assert not (out / "metadata.json").exists() and len(list(out.glob("data-*.h5"))) == 2
    monkeypatch.setattr(tokenize_stage, "_write_h5", real)

    def must_not_read() -> Iterator[Conversation]:
        raise AssertionError("encoding should resume from the spilled rows")
        yield

    rep = run_tokenize(must_not_read(), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    assert rep["skipped"] is False
    assert digest(out) == digest(ref)
    # a different fingerprint rebuilds instead of reusing stale files
    run_tokenize(conversations(50), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="g")
    assert hdf5.read_metadata(out)["fingerprint"] == "g" and hdf5.validate_folder(out)[1] == []


def test_megatron_jsonl_output(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mj"
    rep = run_tokenize(conversations(200), cfg(demo_tokenizer_dir, packing="llm360", output="megatron-jsonl"),
                       out, seed=0, fingerprint="f")
    lines = [json.loads(x) for p in sorted(out.glob("data-*.jsonl")) for x in p.read_text().splitlines()]
    assert len(lines) == rep["rows"] > 0
    for r in lines:
        assert set(r) == {"token_ids", "label_ids", "loss_mask"}
        assert r["label_ids"][:-1] == r["token_ids"][1:]
        assert len(r["token_ids"]) == 128 and any(r["loss_mask"])


def test_validate_cli_reports_bad_files_by_name(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for sub in ("sft", "pre/epoch-0"):
        run_tokenize(conversations(200), cfg(demo_tokenizer_dir), root / sub, seed=0, fingerprint="f")
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(root)])
    assert res.exit_code == 0, res.output
    assert res.output.count("ok ") == 2
    victim = root / "pre" / "epoch-0" / "data-00001.h5"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    res = runner.invoke(app, ["validate", str(root)])
    assert res.exit_code == 1
    assert "data-00001.h5" in res.output and "INVALID" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "missing")])
    assert res.exit_code != 0


def test_encode_inspect_and_tokenizer_demo_cli(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(c.to_json() + "\n" for c in conversations(5)))
    out = tmp_path / "enc.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "--tokenizer", str(demo_tokenizer_dir), str(src), "--out", str(out),
                              "--show"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [f"c{i}" for i in range(5)]
    assert all(len(x["input_ids"]) == len(x["loss_mask"]) and x["loss_mask"][-1] == 1 for x in lines)
    assert "c4 (" in res.output and "<|im_start|>" in res.output

    res = runner.invoke(app, ["encode", "--tokenizer", str(demo_tokenizer_dir), str(tmp_path / "missing.jsonl"),
                              "--out", str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, UserError) and "missing.jsonl" in str(res.exception)

    folder = tmp_path / "h5"
    run_tokenize(conversations(50), cfg(demo_tokenizer_dir), folder, seed=0, fingerprint="f")
    res = runner.invoke(app, ["inspect", str(folder / "data-00000.h5"), "--row", "1"])
    assert res.exit_code == 0, res.output
    assert "row 1:" in res.output and "doc 1" in res.output

    res = runner.invoke(app, ["tokenizer", "demo", "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    from transformers import AutoTokenizer

    from crystalmix.core.tokenizer import load_tokenizer, special_token_ids

    saved = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))  # a plain folder any transformers user loads
    ids = special_token_ids(saved)
    assert {"im_start", "im_end", "sys_start", "sys_end", "fim_prefix", "fim_pad"} <= set(ids)
    assert ids == special_token_ids(load_tokenizer("demo"))
