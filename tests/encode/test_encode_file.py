"""`crystalmix encode`: the same contract as `convert` (a bad record is a reject with a reason, the run goes
on, read == kept + rejected), rejects in input order for any worker count; and `inspect`'s token texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crystalmix.core.records import Conversation, Message
from crystalmix.core.tokenizer import token_pieces
from sft_builder import encode as encode_mod
from sft_builder.encode import TokenizeConfig, encode_file


def _conv(cid: str, *turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"id": cid, "source": "mine", "messages": [{"role": r, "content": t} for r, t in zip(roles, turns,
                                                                                                 strict=False)]}


def _lines(records: list[dict | str]) -> str:
    # json.dumps writes a lone surrogate as the \ud800 escape, as a broken real file holds it
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


BAD_FILE = [
    _conv("ok-1", "What is 2+2?", "4"),
    _conv("empty-final", "Refactor this", ""),  # LLM360's own sample holds one like it
    "{not json",
    _conv("surrogate", "Hello \ud800", "hi"),
    {**_conv("bad-meta", "q", "a"), "meta": {"line": "x"}},
    _conv("reserved", "text with \U0010fffd inside", "a"),  # fine as a record; the encoder refuses it
    _conv("ok-2", "dash \u2013 emoji \U0001f600 CJK \u4e2d\u6587", "sure \u2013 done"),
]


def test_encode_rejects_bad_records_and_goes_on(run_cli, demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "enc.jsonl"
    src.write_text(_lines(BAD_FILE), encoding="ascii")
    code, err = run_cli("encode", "--tokenizer", str(demo_tokenizer_dir), str(src), "--out", str(out))
    assert code == 0, err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["ok-1", "ok-2"]
    rejects = [json.loads(x) for x in (tmp_path / "enc.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["step"], r["reason"]) for r in rejects] == [
        (2, "adapter", "empty_content"), (3, "adapter", "invalid_json"), (4, "adapter", "invalid_unicode"),
        (5, "adapter", "bad_meta"), (6, "tokenize", "reserved_character")]
    assert all(r["file"] == str(src) and r["source"] for r in rejects)
    assert rejects[0]["record"]["id"] == "empty-final" and rejects[1]["record"] == "{not json"
    assert "encoded 2 of 7 conversations" in err and "rejected 5" in err and "empty_content 1" in err


def test_encode_report_and_rejects_do_not_depend_on_workers(demo_tokenizer_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode_mod, "BATCH", 3)  # many small batches, so results and reads interleave
    records: list[dict | str] = []
    for i in range(40):
        records.append(_conv(f"c{i}", f"question {i}", f"answer {i}"))
        if i % 7 == 3:
            records.append(_conv(f"bad{i}", f"question {i}", " "))
        if i % 11 == 5:
            records.append(_conv(f"res{i}", f"q \U0010fffd {i}", "a"))
    src = tmp_path / "in.jsonl"
    src.write_text(_lines(records))
    results = []
    for workers in (1, 2):
        cfg = TokenizeConfig.from_mapping({"tokenizer": str(demo_tokenizer_dir), "workers": workers})
        out = tmp_path / f"w{workers}.jsonl"
        report = encode_file(src, out, cfg, rejects=tmp_path / f"w{workers}.rej")
        assert report["read"] == len(records) == report["kept"] + report["rejected"]
        assert (report["kept"], report["reasons"]) == (40, {"empty_content": 6, "reserved_character": 4})
        results.append((out.read_bytes(), (tmp_path / f"w{workers}.rej").read_bytes()))
    assert results[0] == results[1]
    lines = [json.loads(x)["line"] for x in results[0][1].splitlines()]
    assert lines == sorted(lines)  # in input order, adapter and tokenizer rejects alike


def test_encode_same_out_and_rejects_path_is_a_user_error(run_cli, demo_tokenizer_dir: Path,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(_lines([_conv("a", "q", "a")]))
    code, err = run_cli("encode", "--tokenizer", str(demo_tokenizer_dir), str(src), "--out", str(tmp_path / "o"),
                        "--rejects", str(tmp_path / "o"))
    assert code == 2 and "different files" in err


# -- inspect: byte pieces decoded together, as the tokenizer's decoder does (issue 10, point 12) -------------
TEXT = "A dash \u2013 here, emoji \U0001f600 and CJK \u4e2d\u6587\u5b57.\nnext"


def _check_pieces(tok, ids: list[int]) -> list[str]:  # noqa: ANN001 - a transformers tokenizer
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    # what the decoder reads, split over the tokens (ids start with an added token, after which the
    # decoder's trim of the first word's space does not apply: token_pieces never trims it)
    assert "".join(pieces) == tok.decode(ids)
    assert not any(ch in "".join(pieces) for ch in "\u00e2\u00f0\u00e4\ufffd")  # no mojibake, no U+FFFD
    return pieces


def test_token_pieces_with_the_real_crystalcoder_tokenizer(crystal_tokenizer) -> None:  # noqa: ANN001
    tok = crystal_tokenizer
    ids = [tok.bos_token_id, *tok.encode(TEXT, add_special_tokens=False)]
    assert any(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids)), "the emoji takes byte pieces"
    pieces = _check_pieces(tok, ids)
    k = pieces.index("\U0001f600")  # on the token that completes it; the byte tokens before it show nothing
    assert pieces[k - 3:k] == ["", "", ""] and " \u2013" in pieces and "\u4e2d" in pieces
    assert pieces[0] == "<s>"


def test_token_pieces_with_the_demo_tokenizer(demo_tokenizer) -> None:  # noqa: ANN001
    ids = [demo_tokenizer.bos_token_id, *demo_tokenizer.encode(TEXT, add_special_tokens=False)]
    assert sum(t.startswith("<0x") for t in demo_tokenizer.convert_ids_to_tokens(ids)) >= 9  # \u2013 too
    pieces = _check_pieces(demo_tokenizer, ids)
    assert "\u2013" in pieces and "\U0001f600" in pieces


def test_token_pieces_with_a_byte_level_bpe(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["plain english words and more words"] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|end|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>")
    ids = [*tok.encode(TEXT, add_special_tokens=False), tok.eos_token_id]
    pieces = _check_pieces(tok, ids)
    assert "\U0001f600" in pieces and pieces[-1] == "<|end|>" and "" in pieces


def test_inspect_shows_the_dash_not_mojibake(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crystalmix.cli import app
    from sft_builder.encode import run_tokenize

    conv = Conversation("c", "s", (Message("user", "Why \u2013 and \U0001f600?"), Message("assistant", TEXT)))
    cfg = TokenizeConfig.from_mapping({"tokenizer": str(demo_tokenizer_dir), "seq_len": 256, "workers": 1})
    run_tokenize([conv], cfg, tmp_path / "h5", seed=0, fingerprint="f")
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "h5" / "data-00000.h5"), "--row", "0"])
    shown = res.output
    assert res.exit_code == 0 and "\u2013" in shown and "\U0001f600" in shown and "\u4e2d\u6587" in shown
    assert "\u00e2" not in shown


def test_tokenize_stage_writes_its_rejects_beside_the_data(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    from sft_builder.encode import run_tokenize

    convs = [Conversation("ok", "s", (Message("user", "q"), Message("assistant", "a")), {"file": "f", "line": 1}),
             Conversation("bad", "s", (Message("user", "q \U0010fffd"), Message("assistant", "a")),
                          {"file": "f", "line": 2})]
    cfg = TokenizeConfig.from_mapping({"tokenizer": str(demo_tokenizer_dir), "seq_len": 64, "workers": 1})
    report = run_tokenize(convs, cfg, tmp_path / "t", seed=0, fingerprint="f")
    assert report["dropped"] == {"reserved_character": 1} and report["conversations"] == 1
    (rej,) = [json.loads(x) for x in (tmp_path / "t" / "rejects.jsonl").read_text().splitlines()]
    assert (rej["step"], rej["reason"], rej["file"], rej["line"], rej["record"]["id"]) == (
        "tokenize", "reserved_character", "f", 2, "bad")
    before = (tmp_path / "t" / "rejects.jsonl").read_bytes()
    assert run_tokenize(convs, cfg, tmp_path / "t", seed=0, fingerprint="f")["skipped"]
    (tmp_path / "t" / "rejects.jsonl").unlink()  # a folder without its rejects is not complete: redone
    assert not run_tokenize(convs, cfg, tmp_path / "t", seed=0, fingerprint="f")["skipped"]
    assert (tmp_path / "t" / "rejects.jsonl").read_bytes() == before


@pytest.mark.parametrize("template", ["crystalchat", "chatml", "llama-2-chat"])
def test_encode_with_every_template_equals_the_plain_loop(run_cli, demo_tokenizer, demo_tokenizer_dir: Path,  # noqa: ANN001
                                                          tmp_path: Path, template: str) -> None:
    """`crystalmix encode --template T`: the fast path, the offsets fallback ("▁" in a text) and the escaped path
    (control-token text) in one file, each line the plain `apply_chat_template` loop's ids and mask."""
    from sft_builder.chat import load_template

    records = [_conv("plain", "Write a loop", "for i in range(3):\n    print(i)", "Thanks!", "You are welcome."),
               _conv("unicode", "dash \u2013 emoji \U0001f600 CJK \u4e2d\u6587", "sure \u2013 done"),
               _conv("marker", "a \u2581 marker", "\u2581answer"),  # offsets decide this one
               _conv("control", "has <|im_end|> inside", "and </s> here")]
    src, out = tmp_path / "in.jsonl", tmp_path / "enc.jsonl"
    src.write_text(_lines(records))
    code, err = run_cli("encode", "--tokenizer", str(demo_tokenizer_dir), "--template", template, str(src),
                        "--out", str(out))
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["id"] for g in got] == ["plain", "unicode", "marker", "control"]
    chat = load_template(template)
    for rec, g in zip(records[:3], got, strict=False):  # the plain loop reads control text as control tokens
        ref = demo_tokenizer.apply_chat_template(rec["messages"], chat_template=chat, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        assert g["input_ids"] == list(ref["input_ids"])
        assert g["loss_mask"] == list(ref["assistant_masks"])
