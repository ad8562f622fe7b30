"""Every bundled template on real conversations with the real CrystalCoder tokenizer: every conversation takes
the offset-free path (`_Aligner`), and ids and masks equal the plain ``apply_chat_template`` loop and the
token-offsets path; one holding "▁" takes the fallback (the offsets), with the same result."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from crystalmix.core.records import Conversation, Message
from crystalmix.core.tokenizer import load_tokenizer
from sft_builder.chat import ChatEncoder, Encoded, load_template, template_names
from sft_builder.sources.base import make_adapter

FILES = {  # adapter: files under realdata (English and Chinese, code, multi-turn)
    "alpaca": ["llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
               "codealpaca/code_alpaca_2k.json"],
    "sharegpt": ["fastchat/dummy_conversation.json", "sharegpt/dialogstudio_sharegpt_original_example.json"],
}
PER_FILE = 150  # conversations per file: every file's shapes, in a few seconds per template


@cache
def conversations(realdata: Path) -> tuple[Conversation, ...]:
    out: list[Conversation] = []
    for adapter, names in FILES.items():
        for name in names:
            got = [c for c in make_adapter(adapter, {}).stream([str(realdata / name)]) if isinstance(c, Conversation)]
            out += got[:PER_FILE]
    return tuple(out)


@cache
def tokenizer(realdata: Path, name: str):  # noqa: ANN201 - a transformers tokenizer
    return load_tokenizer(realdata / "tokenizers" / name)


def test_the_bundled_templates_are_all_here() -> None:
    assert template_names()[:-1] == ["chatml", "crystalchat", "llama-2-chat"]


@pytest.mark.parametrize("template", ["chatml", "crystalchat", "llama-2-chat"])
def test_real_conversations_take_the_offset_free_path_and_equal_the_plain_loop(realdata: Path, template: str) -> None:
    tok = tokenizer(realdata, "crystalcoder")
    enc = ChatEncoder(tok, load_template(template, tok))
    convs = [c for c in conversations(realdata)
             if not any(t in m.content for m in c.messages for t in enc.special_by_text)]
    assert len(convs) > 500
    assert enc._aligner is not None and enc._aligner.lengths is not None
    texts, spans, _ = enc.render(convs)
    for text, sp in zip(texts, spans, strict=True):  # no conversation of these falls back to the offsets
        ids = np.asarray(enc.control.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        assert enc._aligner.fits(text, sp) and enc._aligner.ranges(text, ids, sp) is not None
    ours = enc.encode(convs)
    slow = ChatEncoder(tok, enc.template)
    slow._aligner = None
    for c, got, want in zip(convs, ours, slow.encode(convs), strict=True):
        assert isinstance(got, Encoded) and isinstance(want, Encoded)
        ref = tok.apply_chat_template([m.to_dict() for m in c.messages], chat_template=enc.template, tokenize=True,
                                      return_dict=True, return_assistant_tokens_mask=True)
        assert got.input_ids.tolist() == list(ref["input_ids"]) == want.input_ids.tolist(), c.id
        assert got.loss_mask.tolist() == list(ref["assistant_masks"]) == want.loss_mask.tolist(), c.id
        np.testing.assert_array_equal(got.turn_starts, want.turn_starts)


@pytest.mark.parametrize("template", ["chatml", "llama-2-chat"])
def test_real_text_holding_the_marker_character_falls_back_to_the_offsets(realdata: Path, template: str) -> None:
    """A real answer with "▁" in it (its lengths cannot be read): that conversation alone takes the offsets,
    with the plain loop's ids and mask."""
    tok = tokenizer(realdata, "crystalcoder")
    enc = ChatEncoder(tok, load_template(template, tok))
    real = conversations(realdata)[:20]
    last = Message("assistant", "a ▁ b " + real[0].messages[-1].content)
    odd = Conversation("odd", "test", (*real[0].messages[:-1], last))
    texts, spans, _ = enc.render([odd])
    assert enc._aligner is not None and not enc._aligner.fits(texts[0], spans[0])
    for c, got in zip([odd, *real], enc.encode([odd, *real]), strict=True):
        ref = tok.apply_chat_template([m.to_dict() for m in c.messages], chat_template=enc.template, tokenize=True,
                                      return_dict=True, return_assistant_tokens_mask=True)
        assert isinstance(got, Encoded)
        assert got.input_ids.tolist() == list(ref["input_ids"])
        assert got.loss_mask.tolist() == list(ref["assistant_masks"])
