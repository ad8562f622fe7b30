"""`crystalmix convert` and `crystalmix sources`: outputs, report invariant, and one-line user errors."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from crystalmix.cli import main
from crystalmix.core.records import Conversation

from .conftest import ROOT

FIX = ROOT / "tests" / "fixtures" / "sources"


def test_convert_writes_outputs_rejects_and_report(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, rep = tmp_path / "out.jsonl", tmp_path / "report.json"
    inputs = [str(FIX / "sharegpt" / "sharegpt_v43.json"), str(FIX / "sharegpt" / "messages.jsonl")]
    code, err = run_cli("convert", "--source", "sharegpt", *inputs,
                     "--out", str(out), "--report", str(rep))
    assert code == 0, err
    report = json.loads(rep.read_text())
    convs = [Conversation.from_dict(json.loads(x)) for x in out.read_text().splitlines()]
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert report["records"] == 14 and report["read"] == 14
    assert report["kept"] == len(convs) == 6 and report["rejected"] == len(rejects) == 8
    assert report["read"] == report["kept"] + report["rejected"]
    assert report["reasons"] == {"bad_content": 1, "empty_content": 1, "invalid_json": 1,
                                 "misplaced_system": 1, "no_final_assistant": 1, "no_messages": 1,
                                 "not_an_object": 1, "unknown_role": 1}
    assert report["fixes"] == {"dropped_leading_assistant": 1, "dropped_trailing_user": 1, "merged_turns": 1}
    assert {tuple(sorted(r)) for r in rejects} == {
        ("detail", "file", "line", "reason", "record", "source", "step")}
    assert "kept" in err and "unknown_role" in err  # the summary goes to stderr


def test_convert_is_deterministic(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        code, _ = run_cli("convert", "--source", "oasst1", "--option", "paths=all",
                       str(FIX / "oasst1" / "nested.jsonl"), "--out", str(out),
                       "--rejects", str(tmp_path / f"{name}.r"))
        assert code == 0
        outs.append((out.read_bytes(), (tmp_path / f"{name}.r").read_bytes()))
    assert outs[0] == outs[1] and outs[0][0]


def _gz_cut(tmp_path: Path) -> str:
    blob = gzip.compress(b"".join(b'{"instruction": "i%d", "output": "o"}\n' % i for i in range(20000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    return str(path)


@pytest.mark.parametrize(("args", "expected"), [
    (["--source", "nope", "x.json"],
     "unknown adapter 'nope'; valid adapters: alpaca, conversations, guanaco, oasst1, rosetta, sharegpt"),
    (["--source", "alpaca", "--option", "colour=red", "x.json"],
     "unknown option 'colour' for adapter 'alpaca'; valid options: allow_empty_final_answer, column_map, join"),
    (["--source", "oasst1", "--option", "paths=some", "x.json"], "bad value 'some' for option 'paths'"),
    (["--source", "alpaca", "--option", "novalue", "x.json"], "--option expects key=value"),
    (["--source", "alpaca", "missing/file.json"], "missing/file.json: no such file or folder"),
    (["--source", "alpaca", str(FIX / "readers" / "not_json.json")], "not_json.json:1: not JSON"),
    (["--source", "alpaca", str(FIX / "readers" / "bad_element.json")], "bad_element.json:6: invalid JSON"),
    (["--source", "alpaca", "CUT"], "cut.jsonl.gz: truncated or corrupt compressed file"),
])
def test_user_errors_are_one_line_with_exit_code_2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], args: list[str],
                                                   expected: str) -> None:
    args = [_gz_cut(tmp_path) if a == "CUT" else a for a in args]
    out = tmp_path / "out.jsonl"
    code, err = run_cli("convert", *args, "--out", str(out))
    assert code == 2
    assert err.count("\n") == 1 and expected in err.replace("\n", "") and "Traceback" not in err
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []  # nothing half-written


def test_installed_script_error_is_the_one_line(cli, tmp_path: Path) -> None:
    res = cli("convert", "--source", "sharegpt", FIX / "readers" / "not_json.json", "-o", tmp_path / "o.jsonl")
    assert res.one_line(2) == (f"error: {FIX / 'readers' / 'not_json.json'}:1: not JSON: "
                               "expected '[' or '{' at the start of the file")


def test_sources_lists_every_adapter(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["crystalmix", "sources"])
    monkeypatch.setenv("COLUMNS", "200")
    main()
    text = capsys.readouterr().out
    for name in ("oasst1", "guanaco", "sharegpt", "alpaca", "rosetta", "conversations"):
        assert f" {name} " in text
    assert "paths=best" in text and "column_map={}" in text


def test_output_lines_roundtrip_and_broken_unicode_is_rejected(tmp_path: Path) -> None:
    from crystalmix.cli.convert import convert_source
    from sft_builder.sources.base import make_adapter

    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"instruction": "ok \\u00e9", "output": "fine", "meta": {"big": 1180591620717411303424}}\n'
        '{"instruction": "broken \\ud83d emoji", "output": "x"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    report = convert_source(make_adapter("alpaca", {}), [str(src)], out)
    assert (report["kept"], report["rejected"], report["reasons"]) == (1, 1, {"invalid_unicode": 1})
    (line,) = out.read_bytes().splitlines()
    conv = Conversation.from_dict(json.loads(line))
    assert conv.messages[0].content == "ok \u00e9" and conv.meta["record_meta"] == {"big": 2**70}
    (rej,) = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    # refused when the message is built (the record type checks it), so the reject holds the record as read
    assert rej["line"] == 2 and rej["step"] == "adapter" and rej["record"]["instruction"] == "broken \ud83d emoji"


def test_error_lines_keep_brackets(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli("convert", "--source", "alpaca", str(tmp_path / "[ab].json"),
                     "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "[ab].json: no files match this pattern" in err


# -- one interchange writer and one reject writer: `convert` and `build` give the same bytes (issues 9, 13) ----
_INTERCHANGE = [
    {"id": "a", "source": "mine", "messages": [{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}],
     "meta": {"orig_id": "o1", "line": 9, "file": "orig.json"}},  # own provenance, keys out of order
    {"id": "b", "source": "mine", "messages": [{"role": "user", "content": "dash \u2013 emoji \U0001f600 \u4e2d\u6587"},
                                               {"role": "assistant", "content": "caf\u00e9"}]},
    {"id": "c", "source": "mine", "messages": [{"role": "user", "content": "Hello \ud800"},
                                               {"role": "assistant", "content": "x"}]},  # lone surrogate
    {"id": "d", "source": "mine", "messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}], "meta": {"line": "abc"}},
    {"id": "e", "source": "mine", "messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}],
     "meta": {"orig_id": "bad \udc80"}},  # valid messages, broken text in meta: refused when written
]
_ALPACA = [{"instruction": "Say \u2013 hi", "output": "hi \U0001f600"},
           {"instruction": "Hello \ud800", "output": "x"},
           {"instruction": "ok", "output": "fine", "meta": {"z": 1, "a": 2}}]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    # json.dumps escapes lone surrogates as \udXXX, as real files with broken emoji do
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="ascii")


def test_convert_and_build_write_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crystalmix.cli.convert import convert_source
    from sft_builder.build import build, iter_parquet
    from sft_builder.manifest import load_manifest
    from sft_builder.sources.base import make_adapter

    monkeypatch.chdir(tmp_path)  # relative inputs: convert and build name the files alike in provenance
    _write_jsonl(tmp_path / "conv.jsonl", [{**r, "source": "mine"} for r in _INTERCHANGE])
    _write_jsonl(tmp_path / "alp.jsonl", _ALPACA)
    (tmp_path / "m.yaml").write_text("seed: 1\nsources:\n"
                                     "  - {name: mine, adapter: conversations, inputs: conv.jsonl}\n"
                                     "  - {name: alp, adapter: alpaca, inputs: alp.jsonl}\n"
                                     "steps:\n  mix: {shuffle: false}\nsplit: {test_fraction: 0}\n")
    converted, rejected = {}, b""
    for name, adapter, file in (("mine", "conversations", "conv.jsonl"), ("alp", "alpaca", "alp.jsonl")):
        report = convert_source(make_adapter(adapter, {}, source=name), [file], tmp_path / f"{name}.out.jsonl")
        assert report["read"] == report["kept"] + report["rejected"]
        converted[name] = (tmp_path / f"{name}.out.jsonl").read_bytes()
        rejected += (tmp_path / f"{name}.out.rejects.jsonl").read_bytes()
    assert [len(converted["mine"].splitlines()), len(converted["alp"].splitlines())] == [2, 2]

    result = build(load_manifest(tmp_path / "m.yaml"), tmp_path / "out")  # no crash on any of them
    for name, data in converted.items():
        (ingest,) = (tmp_path / "out" / ".work").glob(f"ingest-{name}-*")
        assert (ingest / "kept.jsonl").read_bytes() == data  # the stage file is the interchange file
    assert (tmp_path / "out" / "rejects" / "adapter.jsonl").read_bytes() == rejected
    published = {c.id: c.to_json_bytes() for f in sorted((tmp_path / "out" / "conversations").glob("*.parquet"))
                 for c in iter_parquet(f)}
    assert sorted(published.values()) == sorted(b"".join(converted.values()).splitlines(keepends=True))

    reasons = {(r["source"], r["line"]): r["reason"] for r in map(json.loads, rejected.splitlines())}
    assert reasons == {("mine", 3): "invalid_unicode", ("mine", 4): "bad_meta", ("mine", 5): "invalid_unicode",
                       ("alp", 2): "invalid_unicode"}
    sources = result.report["sources"]
    assert [(s["read"], s["kept"]) for s in (sources["mine"], sources["alp"])] == [(5, 2), (3, 2)]
    assert sources["mine"]["dropped"] == {"adapter:bad_meta": 1, "adapter:invalid_unicode": 2}
