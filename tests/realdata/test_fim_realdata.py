"""FIM on real code files (realdata/code_documents), with the demo and the real CrystalCoder tokenizer.

Every transformed segment must decode back to exactly its original text, in PSM or SPM layout, and the
observed FIM and SPM rates must match the configured ones within binomial bounds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crystalmix.core.tokenizer import special_token_ids, tokenizer_json
from pretrain.config import FimConfig
from pretrain.fim import ContextFim, DocumentFim, FimTokens
from pretrain.pack import pack_chunks
from pretrain.tokenize import Encoder

SEQ_LEN = 1024


@pytest.fixture(scope="module")
def code_texts(realdata: Path) -> list[str]:
    root = realdata / "code_documents"
    files = sorted(p for p in root.rglob("*") if p.suffix in {".py", ".js", ".html", ".css"})
    texts = [p.read_text(encoding="utf-8") for p in files]
    assert len(texts) > 150
    return [t for t in texts if t.strip()]


@pytest.fixture(scope="module", params=["demo", "crystalcoder"])
def codec(request: pytest.FixtureRequest) -> tuple[Encoder, FimTokens, object]:
    tok = request.getfixturevalue("demo_tokenizer" if request.param == "demo" else "crystal_tokenizer")
    sp = special_token_ids(tok)
    return Encoder(tokenizer_json(tok), sp["eos"]), FimTokens.from_specials(sp), tok


def _split(ids: list[int], sep: int) -> list[list[int]]:
    out: list[list[int]] = [[]]
    for i in ids:
        if i == sep:
            out.append([])
        else:
            out[-1].append(i)
    return out


def _reassemble(enc: Encoder, seg: list[int], t: FimTokens) -> tuple[str, str]:
    """(layout, prefix + middle + suffix as text) of one FIM segment; checks the sentinel layout."""
    sentinels = [i for i in seg if i in (t.prefix, t.middle, t.suffix)]
    assert seg[0] == t.prefix
    if seg[1] == t.suffix:  # SPM: <pre> <suf> suffix <mid> prefix middle
        assert sentinels == [t.prefix, t.suffix, t.middle]
        m = seg.index(t.middle)
        return "SPM", enc.decode_raw(seg[m + 1:]) + enc.decode_raw(seg[2:m])
    assert sentinels == [t.prefix, t.suffix, t.middle]  # PSM: <pre> prefix <suf> suffix <mid> middle
    s, m = seg.index(t.suffix), seg.index(t.middle)
    assert s < m
    return "PSM", enc.decode_raw(seg[1:s]) + enc.decode_raw(seg[m + 1:]) + enc.decode_raw(seg[s + 1:m])


def _within(observed: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(observed / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-9


def test_document_mode_reassembles_exact_files(code_texts: list[str], codec) -> None:
    enc, t, _ = codec
    fim = DocumentFim(enc, FimConfig(rate=0.9, spm_rate=0.5, mode="document"), t)
    rng = np.random.default_rng([7, 0])
    layouts = {"PSM": 0, "SPM": 0}
    plain = 0
    for text, ids in zip(code_texts, fim.encode(code_texts, rng), strict=True):
        ids = ids.tolist()
        assert ids[-1] == t.eos and t.eos not in ids[:-1]
        if ids[0] != t.prefix:
            plain += 1
            continue
        layout, joined = _reassemble(enc, ids[:-1], t)
        layouts[layout] += 1
        assert joined == text  # the exact file, byte for byte
    n = len(code_texts)
    assert fim.stats.fim == layouts["PSM"] + layouts["SPM"] == n - plain
    assert _within(fim.stats.fim, n, 0.9)
    assert _within(layouts["SPM"], fim.stats.fim, 0.5)


@pytest.mark.parametrize("rate", [0.9, 0.3])
def test_context_mode_segments_reassemble(code_texts: list[str], codec, rate: float) -> None:
    enc, t, tok = codec
    docs = enc.encode_docs(code_texts)
    # Which decoded text each whole-document segment must equal: the file itself.
    whole = {tuple(d[:-1].tolist()): text for d, text in zip(docs, code_texts, strict=True)}
    fim = ContextFim(enc, FimConfig(rate=rate, spm_rate=0.5), t)
    rng = np.random.default_rng([11, 1])
    checked = whole_docs = 0
    layouts = {"PSM": 0, "SPM": 0}
    for chunk, valid in pack_chunks(iter(docs), SEQ_LEN, t.pad):
        real = chunk[:valid]
        originals = _split(real.tolist(), t.eos)
        out = fim.permute(real, rng)
        if out is None:
            continue
        new = _split(out, t.eos)
        assert len(new) == len(originals)  # segments stay in place, EOS for EOS
        for orig, seg in zip(originals, new, strict=True):
            if not seg or seg[0] != t.prefix:
                assert seg == orig
                continue
            layout, joined = _reassemble(enc, seg, t)
            layouts[layout] += 1
            assert joined == enc.decode_raw(orig)
            if tuple(orig) in whole:
                whole_docs += 1
                assert tok.decode(orig) == whole[tuple(orig)]
            checked += 1
    assert checked == fim.stats.fim > 20 and whole_docs > 0
    assert _within(fim.stats.fim, fim.stats.segments, rate)
    assert _within(layouts["SPM"], fim.stats.fim, 0.5)


def test_context_rows_keep_length_and_pad_with_fim_pad(code_texts: list[str], codec) -> None:
    enc, t, _ = codec
    fim = ContextFim(enc, FimConfig(rate=0.9, spm_rate=0.5), t)
    rng = np.random.default_rng(3)
    for chunk, valid in pack_chunks(iter(enc.encode_docs(code_texts[:40])), SEQ_LEN, t.pad):
        new, n = fim.apply(chunk, valid, rng)
        assert len(new) == SEQ_LEN + 1 and n <= SEQ_LEN + 1
        assert (new[n:] == t.pad).all() and (new[:n] != t.pad).all()
    assert fim.stats.fim > 0


def test_fast_decode_matches_rust_on_real_code(code_texts: list[str], codec) -> None:
    enc, _, _ = codec
    rng = np.random.default_rng(5)
    seqs = []
    for ids in enc.encode_docs(code_texts[:60]):
        a, b = sorted(int(x) for x in rng.integers(0, len(ids), size=2))
        seqs.append(ids[a:b].tolist())
    assert enc.decode_raw_batch(seqs) == enc.piece.decode_batch(seqs, skip_special_tokens=False)


def test_reference_piece_encoding_adds_a_space_per_piece(code_texts: list[str], codec) -> None:
    """``exact_pieces: false`` reproduces LLM360's quirk: every non-empty piece gains a leading space."""
    enc, t, _ = codec
    fim = DocumentFim(enc, FimConfig(rate=1.0, spm_rate=0.0, mode="document", exact_pieces=False), t)
    changed = 0
    for text, ids in zip(code_texts[:80], fim.encode(code_texts[:80], np.random.default_rng(2)), strict=True):
        seg = ids[:-1].tolist()
        s, m = seg.index(t.suffix), seg.index(t.middle)
        pieces = [enc.decode_raw(seg[1:s]), enc.decode_raw(seg[m + 1:]), enc.decode_raw(seg[s + 1:m])]
        assert all(p == "" or p.startswith(" ") for p in pieces)
        assert "".join(p[1:] for p in pieces) == text
        changed += "".join(pieces) != text
    assert changed == 80
