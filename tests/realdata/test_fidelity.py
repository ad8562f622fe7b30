"""Fidelity against LLM360's real packed CrystalChat SFT rows and the real CrystalCoder tokenizer.

The complete conversations (``<s>`` ... ``</s>`` inside one row) are cut out of the sample, their pieces
decoded to text, and re-encoded with ``crystalmix encode --template crystalchat``: ids and masks must be
identical for every one. Then our ``llm360`` packing of those conversations must give rows of the sample's
exact structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from crystalmix.cli import app
from sft_builder.chat import Encoded
from sft_builder.pack import PackStats, pack_llm360

SAMPLE = "llm360/crystalcoder_sft_merged_shuffle_train_sample.jsonl"
BOS, EOS, IM_START, IM_END, SYS_START, SYS_END = 1, 2, 32018, 32019, 32020, 32021
ROLE_AFTER = {SYS_START: "system", IM_START: "user", IM_END: "assistant"}


def _rows(realdata: Path) -> list[dict]:
    return [json.loads(line) for line in (realdata / SAMPLE).read_text().splitlines()]


def _complete_conversations(rows: list[dict]) -> tuple[list[tuple[list[int], list[int]]], int, list[list[int]]]:
    """(ids, per-token mask) of every chat conversation <s><|sys_start|>..</s> inside one row.

    Token k's mask is loss_mask[k-1]. Also returns how many complete plain-text documents (``<s> text</s>``,
    no chat markers, all trained) and the ids of the conversations with an empty turn, left out of the
    comparison: the first are not conversations, the second our schema rejects by design.
    """
    out, plain, empty = [], 0, []
    for r in rows:
        t, m = r["token_ids"], r["loss_mask"]
        pos = 0
        while BOS in t[pos:]:
            s = t.index(BOS, pos)
            if EOS not in t[s:]:
                break
            e = t.index(EOS, s)
            ids, mask = t[s:e + 1], [m[s - 1] if s > 0 else 0] + m[s:e]
            pos = e + 1
            if ids[1] != SYS_START:
                assert not set(ids[1:-1]) & set(ROLE_AFTER) and all(mask[1:]), "plain document, all trained"
                plain += 1
            elif any(  # a marker straight after a marker: an empty turn
                a in ROLE_AFTER and b in (IM_START, IM_END, EOS) for a, b in zip(ids, ids[1:], strict=False)):
                empty.append(ids)
            else:
                out.append((ids, mask))
    return out, plain, empty


def _to_record(tok, ids: list[int], k: int) -> dict:
    """Decode the text pieces between control tokens back into an interchange conversation (an empty turn
    stays an empty message)."""
    messages, role, piece = [], None, []
    for x in [*ids[1:], None]:
        if x in ROLE_AFTER or x in (SYS_END, EOS, None):
            if role is not None:  # a turn was open: it ends here, empty or not
                messages.append({"role": role, "content": tok.backend_tokenizer.decode(piece,
                                                                                       skip_special_tokens=False)})
                piece = []
            role = ROLE_AFTER.get(x)
        else:
            piece.append(x)
    return {"id": f"llm360-{k}", "source": "llm360", "messages": messages, "meta": {}}


def test_encode_matches_llm360_ids_and_masks(realdata: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from crystalmix.core.tokenizer import load_tokenizer

    tok_dir = realdata / "tokenizers" / "crystalcoder"
    tok = load_tokenizer(tok_dir)
    convs, plain, empty = _complete_conversations(_rows(realdata))
    assert len(convs) >= 100 and 1 <= len(empty) <= 2, (len(convs), plain, len(empty))
    assert any(ids.count(IM_START) > 1 for ids, _ in convs), "multi-turn conversations must be covered"
    # LLM360's own conversation with an empty final answer goes in the middle of the file: encode rejects it
    # with its line and reason and goes on (issue 10, point 8), it does not abort the file.
    records = [_to_record(tok, ids, k) for k, (ids, _) in enumerate(convs)]
    bad = [_to_record(tok, ids, 1000 + k) for k, ids in enumerate(empty)]
    assert all(r["messages"][-1] == {"role": "assistant", "content": ""} for r in bad)
    records[50:50] = bad
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["encode", "--tokenizer", str(tok_dir), "--template", "crystalchat",
                                   str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["record"]["id"]) for r in rejects] == [
        (51 + k, "empty_content", f"llm360-{1000 + k}") for k in range(len(bad))]
    assert f"encoded {len(convs)} of {len(records)} conversations" in caplog.text  # logged, as every message
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == len(convs)
    for k, ((ids, mask), g) in enumerate(zip(convs, got, strict=True)):
        assert g["input_ids"] == ids, f"conversation {k}: ids differ"
        # token 0 (<s>) is never a label, so its mask is not observable in the sample
        assert g["loss_mask"][1:] == mask[1:], f"conversation {k}: masks differ"


def test_llm360_packing_has_the_sample_structure(realdata: Path, crystal_tokenizer) -> None:  # noqa: ANN001
    rows = _rows(realdata)
    convs, _, _ = _complete_conversations(rows)
    items = [Encoded(f"c{k}", "s", np.asarray(ids, np.int32), np.asarray(m, np.int8), np.zeros(0, np.int64))
             for k, (ids, m) in enumerate(convs)]
    stats = PackStats()
    packed = list(pack_llm360(items, 2048, stats))
    total = sum(len(ids) for ids, _ in convs)
    assert len(packed) == total // 2049 - stats.counts["skipped_untrained_chunks"]
    assert stats.counts["dropped_tail_tokens"] == total % 2049
    flat_ids = np.concatenate([i.input_ids for i in items])
    flat_mask = np.concatenate([i.loss_mask for i in items])
    for c, row in enumerate(packed):
        chunk = flat_ids[c * 2049:(c + 1) * 2049]
        np.testing.assert_array_equal(row[0], chunk[:-1])
        np.testing.assert_array_equal(row[2], chunk[1:])
        np.testing.assert_array_equal(row[1], flat_mask[c * 2049 + 1:(c + 1) * 2049])
    # The sample's own invariants, which our rows must share.
    for r in [*rows[:20], *({"token_ids": p[0].tolist(), "label_ids": p[2].tolist(),
                             "loss_mask": p[1].tolist()} for p in packed)]:
        t, lab, m = r["token_ids"], r["label_ids"], r["loss_mask"]
        assert len(t) == len(lab) == len(m) == 2048
        assert lab[:-1] == t[1:]
        assert any(m)
        for k in range(2046):
            # The label </s> is trained; chat markers never; <s> only before a plain, fully trained document.
            marker = lab[k] in (IM_START, SYS_START, SYS_END, IM_END)
            if marker or (lab[k] == BOS and lab[k + 1] == SYS_START):
                assert m[k] == 0
            if lab[k] == EOS:
                assert m[k] == 1
    if not packed:
        pytest.skip("sample too small to fill a row")


def test_faithful_mode_encodes_llm360s_empty_final_answer(realdata: Path, tmp_path: Path) -> None:
    """The conversation LLM360 ended with an empty answer (``<|im_end|></s>``): our default rejects it (above);
    the faithful switch (``allow_empty_final_answer``, set by manifests/stage3a_llm360.yaml) keeps it, and it
    encodes to LLM360's own ids and mask."""
    from crystalmix.core.records import Conversation
    from crystalmix.core.tokenizer import load_tokenizer
    from sft_builder.chat import ChatEncoder, load_template
    from sft_builder.sources.base import make_adapter

    tok = load_tokenizer(realdata / "tokenizers" / "crystalcoder")
    rows = _rows(realdata)
    _, _, empty = _complete_conversations(rows)
    assert empty
    src = tmp_path / "empty.jsonl"
    src.write_text("".join(json.dumps(_to_record(tok, ids, k)) + "\n" for k, ids in enumerate(empty)))
    kept = [c for c in make_adapter("conversations", {"allow_empty_final_answer": True}).stream([str(src)])
            if isinstance(c, Conversation)]
    assert len(kept) == len(empty) and all(c.messages[-1].content == "" for c in kept)
    encoded = ChatEncoder(tok, load_template("crystalchat")).encode(kept)
    for ids, enc in zip(empty, encoded, strict=True):
        assert isinstance(enc, Encoded)
        assert enc.input_ids.tolist() == ids and ids[-2:] == [IM_END, EOS]
        # LLM360's mask of the same tokens: token k's mask is loss_mask[k-1] of the row that holds it
        row = next(r for r in rows if _holds(r["token_ids"], ids))
        s = _holds(row["token_ids"], ids) - 1
        assert enc.loss_mask[1:].tolist() == row["loss_mask"][s:s + len(ids) - 1]
        assert enc.loss_mask[-1] == 1 and enc.loss_mask[:-1].sum() == 0, "only </s> is trained"


def _holds(tokens: list[int], ids: list[int]) -> int:
    """1 + the position of `ids` inside `tokens` (0 when absent)."""
    for s in range(len(tokens) - len(ids) + 1):
        if tokens[s:s + len(ids)] == ids:
            return s + 1
    return 0
