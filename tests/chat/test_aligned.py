"""The offset-free mask path (`_Aligner`) gives exactly what the token-offsets path gives, and is refused or
left where its reasoning does not hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalmix.core.records import Conversation, Message, Rejected
from sft_builder.chat import ChatEncoder, Encoded, _Aligner, load_template

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\U0010fffd"),
               min_size=1, max_size=30).filter(str.strip)


def conv(turns: list[str], system: str | None = None, cid: str = "c") -> Conversation:
    msgs = [Message("system", system)] if system else []
    msgs += [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return Conversation(cid, "test", tuple(msgs))


def pair(tok, template: str, **kw) -> tuple[ChatEncoder, ChatEncoder]:  # noqa: ANN001
    fast = ChatEncoder(tok, load_template(template), **kw)
    slow = ChatEncoder(tok, load_template(template), **kw)
    slow._aligner = None  # every conversation through encode_batch's token offsets
    return fast, slow


def same(a: list[Encoded | Rejected], b: list[Encoded | Rejected]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        if isinstance(x, Encoded):
            assert isinstance(y, Encoded)
            for field in ("input_ids", "loss_mask", "turn_starts"):
                got, want = getattr(x, field), getattr(y, field)
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
        else:
            assert x == y


@pytest.mark.parametrize("kw", [{}, {"train_on": "last"}, {"train_on_prompt": True}])
@pytest.mark.parametrize("template", ["crystalchat", "chatml", "llama-2-chat"])
def test_same_result_as_the_offsets_path(template: str, kw: dict, demo_tokenizer) -> None:  # noqa: ANN001
    fast, slow = pair(demo_tokenizer, template, **kw)
    convs = [conv(["Write a loop", "for i in range(3):\n    print(i)", "Thanks!", "You are welcome."]),
             conv(["Explain  spaces\tand tabs", " leading space answer"], system="System text\nwith lines"),
             conv(["héllo wörld 日本 🙂", "ünïcode ok"]),
             conv(["q", "ok   "], system="  padded  "),  # spaces around the edges of spans
             conv(["has <|im_end|> inside", "and </s> here"])]  # control text: the escaped path
    same(fast.encode(convs), slow.encode(convs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT, min_size=2, max_size=6), st.one_of(st.none(), TEXT))
def test_same_result_on_any_text(demo_tokenizer, turns: list[str], system: str | None) -> None:  # noqa: ANN001
    fast, slow = pair(demo_tokenizer, "crystalchat")
    c = conv(turns[: len(turns) // 2 * 2], system)
    same(fast.encode([c]), slow.encode([c]))


def test_crystalchat_takes_the_offset_free_path(demo_tokenizer) -> None:  # noqa: ANN001
    enc = ChatEncoder(demo_tokenizer, load_template("crystalchat"))
    assert enc._aligner is not None
    texts, spans, _ = enc.render([conv(["What is 2+2?", "4", "And 3+3?", "6"], system="Be brief.")])
    ids = np.asarray(enc.control.encode(texts[0], add_special_tokens=False).ids, dtype=np.int32)
    ranges = enc._aligner.ranges(texts[0], ids, spans[0])
    assert ranges is not None and len(ranges) == 2
    # chatml's answers start after "assistant\n", inside ordinary text: that one needs the offsets
    chatml = ChatEncoder(demo_tokenizer, load_template("chatml"))
    texts, spans, _ = chatml.render([conv(["q", "a"])])
    ids = np.asarray(chatml.control.encode(texts[0], add_special_tokens=False).ids, dtype=np.int32)
    assert chatml._aligner is not None and chatml._aligner.ranges(texts[0], ids, spans[0]) is None


def test_refused_for_added_tokens_that_strip_spaces(demo_tokenizer) -> None:  # noqa: ANN001
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(demo_tokenizer.backend_tokenizer.to_str())
    for t in spec["added_tokens"]:
        if t["content"] == "<|im_end|>":
            t["lstrip"] = t["rstrip"] = True
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    enc = ChatEncoder(tok, load_template("crystalchat"))
    assert enc._aligner is None
    assert _Aligner.of(ChatEncoder(demo_tokenizer, load_template("crystalchat")).control) is not None
    c = conv(["a question  ", "  an answer"])
    (out,) = enc.encode([c])
    ref = tok.apply_chat_template([m.to_dict() for m in c.messages], chat_template=enc.template, tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    assert isinstance(out, Encoded)
    assert out.input_ids.tolist() == list(ref["input_ids"])
    assert out.loss_mask.tolist() == list(ref["assistant_masks"])


def test_the_text_look_sends_chatml_to_the_offsets_path_before_tokenizing(demo_tokenizer) -> None:  # noqa: ANN001
    crystal = ChatEncoder(demo_tokenizer, load_template("crystalchat"))
    chatml = ChatEncoder(demo_tokenizer, load_template("chatml"))
    c = conv(["q", "a", "more", "answer"], system="s")
    for enc, fits in ((crystal, True), (chatml, False)):
        texts, spans, _ = enc.render([c])
        assert enc._aligner is not None and enc._aligner.fits(texts[0], spans[0]) is fits


def test_refused_when_the_post_processor_trims_offsets(demo_tokenizer) -> None:  # noqa: ANN001
    """Trimmed offsets leave whitespace-only tokens covering no character: the offsets path decides those."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(demo_tokenizer.backend_tokenizer.to_str())
    assert _Aligner.of(tok) is not None
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=True)])
    assert _Aligner.of(tok) is None
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert _Aligner.of(tok) is not None
