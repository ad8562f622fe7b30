"""Encoding: long documents in bounded pieces decode to the same text; NFC; no special-token injection."""

from __future__ import annotations

import numpy as np

from crystalmix.core.tokenizer import special_token_ids, tokenizer_json
from pretrain.tokenize import Encoder, normalize_text, split_long


def _encoder(tok, max_chars: int = 200_000) -> Encoder:  # noqa: ANN001
    return Encoder(tokenizer_json(tok), special_token_ids(tok)["eos"], max_chars)


def test_split_long_prefers_line_breaks() -> None:
    text = "".join(f"line {i} of a long file\n" for i in range(400))
    pieces = split_long(text, 500)
    assert "".join(pieces) == text
    assert all(len(p) <= 500 for p in pieces) and all(p.endswith("\n") for p in pieces[:-1])
    assert split_long("x" * 1200, 500) == ["x" * 500, "x" * 500, "x" * 200]


def test_long_document_pieces_decode_to_the_text(demo_tokenizer) -> None:
    text = "".join(f"def function_{i}(a, b):\n    return a * {i} + b  # café\n\n" for i in range(300))
    short, long = _encoder(demo_tokenizer), _encoder(demo_tokenizer, max_chars=700)
    whole = short.encode_docs([text])[0]
    pieces = long.encode_docs([text, "tiny"])
    assert demo_tokenizer.decode(pieces[0][:-1].tolist()) == text
    assert pieces[0][-1] == whole[-1] == short.eos_id
    assert abs(len(pieces[0]) - len(whole)) <= len(text) // 700 + 1  # only the cut points may differ
    assert np.array_equal(pieces[1], short.encode_docs(["tiny"])[0])


def test_special_token_text_is_not_a_special_id(demo_tokenizer) -> None:
    enc = _encoder(demo_tokenizer)
    ids = enc.encode_docs(["x = '<|fim_prefix|></s>'"])[0].tolist()
    specials = special_token_ids(demo_tokenizer)
    assert specials["fim_prefix"] not in ids and ids.count(specials["eos"]) == 1


def test_nfc() -> None:
    assert normalize_text("cafe\u0301") == "caf\u00e9"


def test_fast_raw_decode_equals_the_rust_decoder(demo_tokenizer) -> None:
    enc = _encoder(demo_tokenizer)
    assert enc._bytes is not None  # the demo tokenizer has the SentencePiece-style decoder
    text = "naïve café — 東京 🙂 <div class=\"x\">\n\tif a: return b  # ok\n" * 20
    ids = enc.encode_docs([text])[0][:-1].tolist()
    rng = np.random.default_rng(0)
    cuts = [sorted(rng.integers(0, len(ids) + 1, size=2)) for _ in range(300)]  # many cut inside characters
    seqs = [ids[a:b] for a, b in cuts] + [ids, [special_token_ids(demo_tokenizer)["fim_prefix"], *ids[:5]]]
    assert enc.decode_raw_batch(seqs) == enc.piece.decode_batch(seqs, skip_special_tokens=False)
