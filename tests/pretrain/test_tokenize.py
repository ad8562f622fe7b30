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


def _mixed_documents(rng: np.random.Generator, n: int) -> list[str]:
    """Documents that stress piece boundaries: code indentation, runs of spaces, tabs, CJK, emoji and accents
    (byte-fallback characters), a literal word marker, special-token text, bare newlines."""
    words = ["the", "naïve", "café", "東京", "🙂", "def", "return", "x_1", "▁", "<|fim_prefix|>", "</s>", "<s>",
             "\n", "\n\n", "    ", "  ", "\t", "if", "(a,", "b)", "==", "—", "ÿ", "\u0301", "data", "42"]
    docs = []
    for _ in range(n):
        k = int(rng.integers(1, 120))
        docs.append("".join(str(w) + (" " if rng.random() < 0.6 else "") for w in rng.choice(words, size=k)))
    return docs


def _fim_rows(enc: Encoder, docs: list[str], whole: bool, seq_len: int) -> tuple[list[np.ndarray], list[str]]:
    """Rows of `docs` through ContextFim (rate 0.9), and every text it handed to `encode_pieces`."""
    from pretrain.config import FimConfig
    from pretrain.fim import ContextFim, FimTokens
    from pretrain.pack import pack_chunks

    sent: list[str] = []
    real = enc.encode_pieces

    def spy(texts: list[str]) -> list[list[int]]:
        sent.extend(texts)
        return real(texts)

    enc.encode_pieces = spy  # type: ignore[method-assign]
    try:
        specials = {"fim_prefix": 9001, "fim_middle": 9002, "fim_suffix": 9003, "fim_pad": 9004, "eos": enc.eos_id}
        fim = ContextFim(enc, FimConfig(rate=0.9, spm_rate=0.5, mode="context"), FimTokens.from_specials(specials))
        rng = np.random.default_rng(5)
        rows = [fim.apply(c.copy(), v, rng, whole)[0] for c, v in pack_chunks(enc.encode_docs(docs), seq_len, 9004)]
    finally:
        del enc.encode_pieces
    return rows, sent


def test_fim_pieces_reuse_document_ids_exactly(demo_tokenizer) -> None:
    """FIM pieces built from the segment's own ids (whole documents) equal the pieces encoded afresh, while
    only a small part of their text is encoded again."""
    enc = _encoder(demo_tokenizer)
    assert enc._bigrams is not None
    docs = _mixed_documents(np.random.default_rng(1), 300)
    for seq_len in (64, 512):
        fresh, fresh_sent = _fim_rows(enc, docs, False, seq_len)
        reused, reused_sent = _fim_rows(enc, docs, True, seq_len)
        assert len(fresh) == len(reused) and all(np.array_equal(a, b) for a, b in zip(fresh, reused, strict=True))
        assert sum(map(len, reused_sent)) < 0.5 * sum(map(len, fresh_sent))  # the reuse did happen


def test_encode_cuts_equals_encode_pieces_at_every_cut(demo_tokenizer) -> None:
    enc = _encoder(demo_tokenizer)
    rng = np.random.default_rng(2)
    docs = _mixed_documents(rng, 60)
    segs = [ids[:-1] for ids in enc.encode_docs(docs)]
    texts, exact = enc.decode_segments(segs)
    assert all(exact) and texts == [enc.decode_raw(s.tolist()) for s in segs]
    cuts = [tuple(sorted(int(x) for x in rng.integers(0, len(t) + 1, size=2))) for t in texts]
    pieces = [p for t, (a, b) in zip(texts, cuts, strict=True) for p in (t[:a], t[a:b], t[b:])]
    for edges in ([(True, True)] * len(segs), [(False, False)] * len(segs), [None] * len(segs)):
        assert enc.encode_cuts(segs, texts, cuts, edges) == enc.encode_pieces(pieces)  # type: ignore[arg-type]


def test_documents_encoded_in_parts_are_never_reused(demo_tokenizer, tmp_path) -> None:  # noqa: ANN001
    """A long document's ids are not one BPE of its text: chunks touching it take the fresh encoding."""
    from crystalmix.core.hdf5 import ShardedWriter
    from pretrain.pack import Packer
    from pretrain.stages import _Output

    enc = _encoder(demo_tokenizer, max_chars=50)
    assert enc.splits("alpha beta gamma delta " * 10) and not enc.splits("short")
    out = _Output(Packer(10, 0), ShardedWriter(tmp_path, 10), None, 0, 100)
    for n, whole in ((25, True), (12, False), (30, True)):  # stream spans [0, 25), [25, 37), [37, 67)
        out.add(np.ones(n, dtype=np.int32), whole=whole)
    # chunk r holds stream ids 10r .. 10r + 10
    assert [out.whole(r) for r in range(6)] == [True, True, False, False, True, True]


def test_marked_text_without_the_normalizer_gives_the_tokenizers_ids(demo_tokenizer) -> None:
    """encode_docs runs SentencePiece's normalizer as string operations: the ids are the tokenizer's own."""
    enc = _encoder(demo_tokenizer)
    assert enc._bare is not None
    docs = [*_mixed_documents(np.random.default_rng(3), 200), "", " ", "  lead", "▁marked ▁ text", "tail  "]
    expected = [e.ids for e in enc.doc.encode_batch_fast(docs, add_special_tokens=False)]
    assert [ids[:-1].tolist() for ids in enc.encode_docs(docs)] == expected
