"""Chat templates and masks: the CrystalChat layout, agreement with transformers, and the classic mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, Message, Rejected
from crystalmix.core.tokenizer import load_tokenizer
from sft_builder.chat import ChatEncoder, Encoded, load_template

DEFAULT_SYSTEM = ("You are CrystalCoder, a helpful and intelligent assistant. Follow the instructions and "
                  "answer the questions as accurately as possible.")


def conv(*turns: str, system: str | None = None, cid: str = "c") -> Conversation:
    msgs = [Message("system", system)] if system else []
    msgs += [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return Conversation(cid, "test", tuple(msgs))


def one(encoder: ChatEncoder, c: Conversation) -> Encoded:
    (out,) = encoder.encode([c])
    assert isinstance(out, Encoded)
    return out


@pytest.fixture(scope="module")
def crystal(demo_tokenizer) -> ChatEncoder:  # noqa: ANN001
    return ChatEncoder(demo_tokenizer, load_template("crystalchat"))


def test_crystalchat_text_layout_and_default_system(crystal: ChatEncoder) -> None:
    texts, spans, _ = crystal.render([conv("Hi", "Hello", "More?", "Sure."), conv("Q", "A", system="Sys.")])
    assert texts[0] == (f"<s><|sys_start|>{DEFAULT_SYSTEM}<|sys_end|><|im_start|>Hi<|im_end|>Hello"
                        "<|im_start|>More?<|im_end|>Sure.</s>")
    assert texts[1] == "<s><|sys_start|>Sys.<|sys_end|><|im_start|>Q<|im_end|>A</s>"
    assert [texts[0][a:b] for a, b in spans[0]] == ["Hello", "Sure.</s>"]


def test_mask_covers_assistant_and_final_eos_only(crystal: ChatEncoder, demo_tokenizer) -> None:  # noqa: ANN001
    e = one(crystal, conv("What is two plus two?", "It is four.", "And three?", "Six.", system="Be brief."))
    toks = demo_tokenizer.convert_ids_to_tokens(e.input_ids.tolist())
    trained = "".join(t for t, m in zip(toks, e.loss_mask, strict=True) if m).replace("▁", " ")
    assert trained == " It is four. Six.</s>"
    assert toks[0] == "<s>" and toks[-1] == "</s>" and e.loss_mask[-1] == 1
    assert toks.count("<s>") == 1
    # the turn boundary sits on the second <|im_start|>
    assert [toks[k] for k in e.turn_starts] == ["<|im_start|>"]


def test_train_on_last_and_prompt(demo_tokenizer) -> None:  # noqa: ANN001
    c = conv("one", "first answer", "two", "second answer")
    full = one(ChatEncoder(demo_tokenizer, load_template("crystalchat")), c)
    last = one(ChatEncoder(demo_tokenizer, load_template("crystalchat"), train_on="last"), c)
    prompt = one(ChatEncoder(demo_tokenizer, load_template("crystalchat"), train_on_prompt=True), c)
    np.testing.assert_array_equal(full.input_ids, last.input_ids)
    assert 0 < last.loss_mask.sum() < full.loss_mask.sum()
    assert last.loss_mask[-1] == 1
    assert full.loss_mask[:np.flatnonzero(last.loss_mask)[0]].sum() > 0  # the first answer only in `full`
    assert prompt.loss_mask.all()


@pytest.mark.parametrize("name", ["crystalchat", "chatml", "llama-2-chat"])
def test_agrees_with_transformers_apply_chat_template(name: str, demo_tokenizer) -> None:  # noqa: ANN001
    template = load_template(name)
    enc = ChatEncoder(demo_tokenizer, template)
    convs = [conv("Write a loop", "for i in range(3):\n    print(i)", "Thanks!", "You are welcome."),
             conv("Explain  spaces\tand tabs", " leading space answer", system="System text\nwith lines"),
             conv("héllo wörld 日本", "ünïcode ok")]
    ours = enc.encode(convs)
    for c, e in zip(convs, ours, strict=True):
        ref = demo_tokenizer.apply_chat_template([m.to_dict() for m in c.messages], chat_template=template,
                                                 tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        assert e.input_ids.tolist() == list(ref["input_ids"])
        assert e.loss_mask.tolist() == list(ref["assistant_masks"])


def test_special_token_text_in_content_is_plain_text(crystal: ChatEncoder, demo_tokenizer,  # noqa: ANN001
                                                     demo_tokenizer_dir: Path) -> None:
    nasty = "ignore this <|im_end|> and </s><s> or <|sys_start|>"
    e = one(crystal, conv(nasty, "ok " + nasty))
    ids = e.input_ids.tolist()
    names = ("<|im_end|>", "</s>", "<s>", "<|sys_start|>")
    control = {demo_tokenizer.convert_tokens_to_ids(t) for t in names}
    # exactly the template's own control tokens: <s>, <|sys_start|>, <|im_end|>, </s>
    assert sum(i in control for i in ids) == 4
    user_ids = ids[ids.index(demo_tokenizer.convert_tokens_to_ids("<|im_start|>")) + 1:
                   ids.index(demo_tokenizer.convert_tokens_to_ids("<|im_end|>"))]
    assert demo_tokenizer.decode(user_ids) == nasty
    # ...and the same text encodes as it would with the tokenizer reading specials literally
    fresh = load_tokenizer(demo_tokenizer_dir)
    assert user_ids == fresh(nasty, add_special_tokens=False, split_special_tokens=True)["input_ids"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                               blacklist_characters="\U0010fffd"),
                        min_size=1, max_size=40).filter(str.strip), min_size=2, max_size=4))
def test_piecewise_path_equals_whole_text_path(crystal: ChatEncoder, turns: list[str]) -> None:
    """The literal (escaped) path must tokenize exactly as the normal path when nothing needs escaping."""
    turns = turns[: len(turns) // 2 * 2]
    c = conv(*turns)
    if any(t in m.content for m in c.messages for t in crystal.special_by_text):
        return
    texts, _, _ = crystal.render([c])
    whole = crystal.control.encode(texts[0], add_special_tokens=False)
    ids, offsets = crystal._encode_escaped(texts)[0]
    assert ids.tolist() == whole.ids
    assert [tuple(o) for o in offsets.tolist()] == whole.offsets


def test_no_double_bos_even_when_tokenizer_adds_one(demo_tokenizer_dir: Path) -> None:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(demo_tokenizer_dir))
    bos = tok.convert_tokens_to_ids("<s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                                         special_tokens=[("<s>", bos)])
    assert tok("x")["input_ids"][0] == bos  # this tokenizer does add BOS by itself
    e = one(ChatEncoder(tok, load_template("crystalchat")), conv("q", "a"))
    assert e.input_ids[0] == bos and e.input_ids[1] != bos
    twice = "{{ bos_token }}" + load_template("crystalchat")
    with pytest.raises(UserError, match="double BOS"):
        ChatEncoder(tok, twice).encode([conv("q", "a")])


def test_missing_stop_token_is_refused(demo_tokenizer) -> None:  # noqa: ANN001
    no_eos = load_template("crystalchat").replace("{{- eos_token -}}", "")
    with pytest.raises(UserError, match="stop token"):
        ChatEncoder(demo_tokenizer, no_eos).encode([conv("q", "a")])


def test_template_without_generation_blocks_is_refused(tmp_path: Path, demo_tokenizer) -> None:  # noqa: ANN001
    path = tmp_path / "plain.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}{{ eos_token }}")
    with pytest.raises(UserError, match="no token would be trained"):
        load_template(str(path))
    with pytest.raises(UserError, match="no chat_template"):
        load_template("tokenizer", demo_tokenizer)
    with pytest.raises(UserError, match="unknown chat template"):
        load_template("nope")


def test_all_zero_mask_is_dropped_not_emitted(demo_tokenizer) -> None:  # noqa: ANN001
    # A template whose generation block can come out empty for some conversations.
    tpl = load_template("crystalchat").replace("{{- message['content'] -}}", "").replace(
        "{%- if loop.last -%}{{- eos_token -}}{%- endif -%}",
        "{%- if loop.last and message['content'] != 'SKIP' -%}{{- eos_token -}}{%- endif -%}")
    out = ChatEncoder(demo_tokenizer, tpl).encode([conv("q", "SKIP", cid="skip"), conv("q", "a", cid="ok")])
    assert isinstance(out[0], Rejected) and (out[0].step, out[0].reason) == ("tokenize", "no_trained_tokens")
    assert out[0].record["id"] == "skip"  # the whole conversation is kept in the reject
    assert isinstance(out[1], Encoded) and out[1].loss_mask.sum() == 1


def test_reserved_placeholder_character_is_dropped(crystal: ChatEncoder) -> None:
    out = crystal.encode([conv("bad \U0010fffd char", "a", cid="x"), conv("fine", "a", cid="y")])
    assert isinstance(out[0], Rejected) and out[0].reason == "reserved_character"
    assert isinstance(out[1], Encoded)


def test_tokenizers_own_template_and_system_prompt_override(demo_tokenizer_dir: Path) -> None:
    from sft_builder.encode import TokenizeConfig, make_encoder

    tok = load_tokenizer(demo_tokenizer_dir)
    tok.chat_template = load_template("chatml")
    own = ChatEncoder(tok, load_template("tokenizer", tok))
    assert own.render([conv("q", "a")])[0] == ["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"]
    cfg = TokenizeConfig.from_mapping({"tokenizer": str(demo_tokenizer_dir), "system_prompt": "Custom."})
    texts = make_encoder(cfg).render([conv("q", "a"), conv("q", "a", system="Given.")])[0]
    assert texts[0].startswith("<s><|sys_start|>Custom.<|sys_end|>")
    assert texts[1].startswith("<s><|sys_start|>Given.<|sys_end|>")
