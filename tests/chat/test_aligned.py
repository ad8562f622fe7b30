"""The offset-free mask path (`_Aligner`, with `_Lengths` for span edges inside ordinary text) gives exactly
what the token-offsets path gives, for every bundled template, and is refused or left where its reasoning does
not hold (the fallback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalmix.core.records import Conversation, Message, Rejected
from sft_builder.chat import ChatEncoder, Encoded, _Aligner, load_template

TEMPLATES = ["crystalchat", "chatml", "llama-2-chat"]
# any character, and often the ones that stress token edges: spaces, newlines, "▁" (which `_Lengths` cannot
# read, so such texts take the offsets), characters that fall back to bytes, template marker text
PIECE = st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\U0010fffd"),
                          min_size=1, max_size=8),
                  st.sampled_from([" ", "  ", "\n", "\t", "▁", "日", "🙂", "é", "[/INST]", "assistant", "<", ">"]))
TEXT = st.lists(PIECE, min_size=1, max_size=6).map("".join).filter(str.strip)


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
@pytest.mark.parametrize("template", TEMPLATES)
def test_same_result_as_the_offsets_path(template: str, kw: dict, demo_tokenizer) -> None:  # noqa: ANN001
    fast, slow = pair(demo_tokenizer, template, **kw)
    convs = [conv(["Write a loop", "for i in range(3):\n    print(i)", "Thanks!", "You are welcome."]),
             conv(["Explain  spaces\tand tabs", " leading space answer"], system="System text\nwith lines"),
             conv(["héllo wörld 日本 🙂", "ünïcode ok"]),
             conv(["q", "ok   "], system="  padded  "),  # spaces around the edges of spans
             conv(["has <|im_end|> inside", "and </s> here"]),  # control text: the escaped path
             conv(["a ▁ marker", "▁answer"]),  # "▁" in the text: its lengths cannot be read, offsets decide
             conv(["\nq\n", "\n\na"], system="\ns")]  # newlines at the pieces' edges
    same(fast.encode(convs), slow.encode(convs))


@pytest.mark.parametrize("template", TEMPLATES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT, min_size=2, max_size=6), st.one_of(st.none(), TEXT))
def test_same_result_on_any_text(template: str, demo_tokenizer, turns: list[str],  # noqa: ANN001
                                 system: str | None) -> None:
    fast, slow = pair(demo_tokenizer, template)
    c = conv(turns[: len(turns) // 2 * 2], system)
    same(fast.encode([c]), slow.encode([c]))


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_takes_the_offset_free_path(template: str, demo_tokenizer) -> None:  # noqa: ANN001
    """CrystalChat's edges are at control tokens; ChatML's answers start after "assistant\\n" and Llama-2's after
    "[/INST] ", inside ordinary text: placed by the tokens' lengths, at the token edges the offsets give."""
    enc = ChatEncoder(demo_tokenizer, load_template(template))
    assert enc._aligner is not None and enc._aligner.lengths is not None
    texts, spans, _ = enc.render([conv(["What is 2+2?", "4", "And 3+3?", "6 🙂"], system="Be brief.")])
    assert enc._aligner.fits(texts[0], spans[0])
    full = enc.control.encode(texts[0], add_special_tokens=False)
    ids = np.asarray(full.ids, dtype=np.int32)
    ranges = enc._aligner.ranges(texts[0], ids, spans[0])
    assert ranges is not None and len(ranges) == 2
    for (s, e), (lo, hi) in zip(spans[0], ranges, strict=True):
        assert full.offsets[lo][0] <= s < full.offsets[lo][1] and full.offsets[hi - 1][1] == e


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


def test_the_text_look_sends_what_lengths_cannot_read_to_the_offsets_before_tokenizing(demo_tokenizer) -> None:  # noqa: ANN001
    crystal = ChatEncoder(demo_tokenizer, load_template("crystalchat"))
    chatml = ChatEncoder(demo_tokenizer, load_template("chatml"))
    for c, fits in ((conv(["q", "a", "more", "answer"], system="s"), True), (conv(["q ▁", "a"]), False)):
        texts, spans, _ = chatml.render([c])
        assert chatml._aligner is not None and chatml._aligner.fits(texts[0], spans[0]) is fits
        texts, spans, _ = crystal.render([c])  # edges at control tokens: lengths are not needed
        assert crystal._aligner is not None
        assert crystal._aligner.fits(texts[0], spans[0]) if fits else crystal._aligner.lengths is not None


def _rebuilt(demo_tokenizer, change: dict) -> ChatEncoder:  # noqa: ANN001
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(demo_tokenizer.backend_tokenizer.to_str())
    spec.update(change)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    return ChatEncoder(tok, load_template("chatml"))


@pytest.mark.parametrize("change", [
    {"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "▁"},
                                                        {"type": "Replace", "pattern": {"String": " "},
                                                         "content": "▁"}]}},
    {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}},
    {"pre_tokenizer": {"type": "Whitespace"}},
], ids=["nfkc", "metaspace-prepends", "whitespace-split"])
def test_tokenizers_whose_lengths_cannot_be_read_take_the_offsets(demo_tokenizer, change: dict) -> None:  # noqa: ANN001
    enc = _rebuilt(demo_tokenizer, change)
    assert enc._aligner is not None and enc._aligner.lengths is None
    c = conv(["ﬁne ① question", "an answer", "again", "ok"], system="sys")
    texts, spans, _ = enc.render([c])
    assert not enc._aligner.fits(texts[0], spans[0])
    (out,) = enc.encode([c])
    ref = enc.tokenizer.apply_chat_template([m.to_dict() for m in c.messages], chat_template=enc.template,
                                            tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert isinstance(out, Encoded)
    assert out.input_ids.tolist() == list(ref["input_ids"])
    assert out.loss_mask.tolist() == list(ref["assistant_masks"])


@pytest.mark.parametrize("template", ["chatml", "llama-2-chat"])
def test_a_piece_whose_lengths_do_not_add_up_goes_the_offsets_way(template: str, demo_tokenizer) -> None:  # noqa: ANN001
    """The per-text check: a wrong length read for one token is caught, and that text alone takes the offsets."""
    fast, slow = pair(demo_tokenizer, template)
    bad, good = conv(["question", "zebra answer"], cid="bad"), conv(["question", "other reply"], cid="good")
    texts, spans, _ = fast.render([bad, good])
    ids = [np.asarray(fast.control.encode(t, add_special_tokens=False).ids, dtype=np.int32) for t in texts]
    assert fast._aligner is not None and fast._aligner.lengths is not None
    wrong = int(next(i for i in ids[0] if i not in ids[1] and not fast._aligner.is_added[i]))
    fast._aligner.lengths.units[wrong] += 1  # this encoder's own table
    assert fast._aligner.ranges(texts[0], ids[0], spans[0]) is None
    assert fast._aligner.ranges(texts[1], ids[1], spans[1]) is not None
    same(fast.encode([bad, good]), slow.encode([bad, good]))


def test_refused_when_the_post_processor_trims_offsets(demo_tokenizer) -> None:  # noqa: ANN001
    """Trimmed offsets leave whitespace-only tokens covering no character: the offsets path decides those."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(demo_tokenizer.backend_tokenizer.to_str())
    assert _Aligner.of(tok) is not None
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=True)])
    assert _Aligner.of(tok) is None
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert _Aligner.of(tok) is not None


QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")


@pytest.fixture(scope="module", params=["gpt2", "qwen"])
def byte_level(request: pytest.FixtureRequest):  # noqa: ANN201 - a transformers tokenizer
    """A byte-level BPE with the chat control tokens: GPT-2's layout, or Qwen's (NFC, a regex split, then a
    ByteLevel that does not split, and a ByteLevel post-processor that keeps offsets whole)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    if request.param == "qwen":
        raw.normalizer = normalizers.NFC()
        raw.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(__import__("tokenizers").Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        raw.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|sys_start|>", "<|sys_end|>"]
    texts = ["Write a loop for i in range(3): print(i) thanks you are welcome", "héllo wörld 日本 ünïcode"] * 20
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=specials[2:])


@pytest.mark.parametrize("template", TEMPLATES)
def test_byte_level_tokenizers_take_the_offset_free_path(byte_level, template: str) -> None:  # noqa: ANN001
    fast, slow = pair(byte_level, template)
    assert fast._aligner is not None and fast._aligner.lengths is not None
    convs = [conv(["Write a loop", "for i in range(3):\n    print(i)", "Thanks!", "You are welcome."]),
             conv(["Explain  spaces\tand tabs", " leading space answer"], system="System text\nwith lines"),
             conv(["héllo wörld 日本 🙂", "ünïcode ok  "]),
             conv(["decomposed e\u0301", "cafe\u0301"]),  # not NFC: Qwen's layout takes the offsets
             conv(["has <|im_end|> inside", "and </s> here"])]
    texts, spans, _ = fast.render(convs[:3])
    for text, sp in zip(texts, spans, strict=True):  # these take the offset-free path
        ids = np.asarray(fast.control.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        assert fast._aligner.fits(text, sp) and fast._aligner.ranges(text, ids, sp) is not None
    same(fast.encode(convs), slow.encode(convs))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT, min_size=2, max_size=6), st.one_of(st.none(), TEXT))
def test_byte_level_same_result_on_any_text(byte_level, turns: list[str], system: str | None) -> None:  # noqa: ANN001
    fast, slow = pair(byte_level, "chatml")
    c = conv(turns[: len(turns) // 2 * 2], system)
    same(fast.encode([c]), slow.encode([c]))


def test_a_splitter_that_drops_text_is_not_read(byte_level) -> None:  # noqa: ANN001
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer.from_str(byte_level.backend_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="removed"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    aligner = _Aligner.of(tok)
    assert aligner is not None and aligner.lengths is None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # a space GPT-2 adds: not read
    aligner = _Aligner.of(tok)
    assert aligner is not None and aligner.lengths is None
