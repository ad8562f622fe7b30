"""FIM on real code files (realdata/code_documents), with the demo and the real CrystalCoder tokenizer.

Every transformed segment must decode back to exactly its original text, in PSM or SPM layout, and the
observed FIM and SPM rates must match the configured ones within binomial bounds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

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


# -- fim.mode: llm360 ------------------------------------------------------------------------------------
def llm360_reference(row: np.ndarray, tok: Tokenizer, rate: float, spm_rate: float, rng: np.random.Generator,
                     t: FimTokens) -> tuple[np.ndarray, list[int]]:
    """LLM360's pass on one row, written from FIDELITY.md section 3; returns (row, inputs before the cut)."""
    sample, mask, width = row[0].tolist(), row[1].tolist(), row.shape[1]

    def permute(seg: list[int]) -> list[int]:
        if not rng.binomial(1, rate):
            return seg
        text = tok.decode(seg, skip_special_tokens=False)
        lo, hi = sorted(rng.integers(0, len(text) + 1, size=2).tolist())
        pre, mid, suf = (tok.encode(x, add_special_tokens=False).ids for x in (text[:lo], text[lo:hi], text[hi:]))
        if rng.binomial(1, spm_rate):
            return [t.prefix, t.suffix, *suf, t.middle, *pre, *mid]
        return [t.prefix, *pre, t.suffix, *suf, t.middle, *mid]

    out: list[int] = []
    start = 0
    for i, tid in enumerate(sample):
        if tid == t.eos:
            if i > start:
                out += permute(sample[start:i]) + [t.eos]
            start = i + 1
    out += permute(sample[start:])
    full = out
    labels = out[1:] + [t.eos]
    if len(out) >= width:
        out, labels = out[:width], labels[:width]
    else:
        short = width - len(out)
        out, labels, mask = out + [t.pad] * short, labels + [t.pad] * short, mask[:len(out)] + [0] * short
    return np.asarray([out, mask, labels], dtype=np.int32), full


def _rows_with_every_edge(stream: np.ndarray, eos: int, width: int) -> dict[str, list[np.ndarray]]:
    """Real rows of L inputs: packed ones, and windows of the same stream that start or end at an EOS, and
    packed rows with an empty document inserted (``EOS EOS``)."""
    def row(window: np.ndarray) -> np.ndarray:
        return np.stack([window[:-1], np.ones(width, dtype=np.int32), window[1:]]).astype(np.int32)

    ends = np.flatnonzero(stream == eos)
    packed = [row(stream[k:k + width + 1]) for k in range(0, len(stream) - width, width)]
    starts = [row(stream[p:p + width + 1]) for p in ends[:60] if p + width + 1 <= len(stream)]
    tails = [row(stream[p - width + 1:p + 2]) for p in ends[20:80] if p - width + 1 >= 0]
    doubled = []
    for r in packed:
        inside = np.flatnonzero(r[0][:-1] == eos)
        if len(inside):
            j = int(inside[0])
            window = np.r_[r[0][:j + 1], [eos], r[0][j + 1:], r[2][-1:]][: width + 1]
            doubled.append(row(window))
    return {"packed": packed, "starts_with_eos": starts, "empty_tail": tails, "eos_eos": doubled}


@pytest.mark.parametrize("rate", [0.9, 0.3])
def test_llm360_mode_equals_the_reference_on_real_rows(realdata: Path, code_texts: list[str], rate: float) -> None:
    """Id for id on real code rows (Cerebras-tokenized, as LLM360's were), covering every edge case."""
    from pretrain.cerebras import encode_documents
    from pretrain.fim import Llm360Fim, fresh_text_tokenizer

    path = str(realdata / "tokenizers" / "crystalcoder" / "tokenizer.json")
    ref_tok = Tokenizer.from_file(path)
    t = FimTokens(32000, 32001, 32002, 32003, 2, 1)
    stream = np.concatenate(encode_documents(ref_tok, code_texts, 1, 2))
    cases = _rows_with_every_edge(stream, t.eos, 1024)
    fim = Llm360Fim(fresh_text_tokenizer(path), FimConfig(rate=rate, spm_rate=0.5, mode="llm360"), t)
    ours_rng, ref_rng = np.random.default_rng([360, 1]), np.random.default_rng([360, 1])
    seen = {"grew": 0, "shrank": 0, "bare_sentinels_at_tail": 0, "fake_eos_label": 0}
    for kind, rows in cases.items():
        assert len(rows) >= 20, kind
        for row in rows:
            got = fim.apply_row(row, ours_rng)
            want, full = llm360_reference(row, ref_tok, rate, 0.5, ref_rng, t)
            assert np.array_equal(got, want), kind
            length = len(full)
            seen["grew"] += length > 1024
            seen["shrank"] += length < 1024
            if kind == "empty_tail" and full[-4:] == [t.eos, t.prefix, t.suffix, t.middle]:
                seen["bare_sentinels_at_tail"] += 1  # the empty segment after the last EOS, permuted
            if length == 1024:  # the fake EOS label, trained
                seen["fake_eos_label"] = seen.get("fake_eos_label", 0) + 1
                assert got[2][-1] == t.eos and got[1][-1] == row[1][-1] == 1
            if kind == "starts_with_eos":
                assert got[0][0] != t.eos  # the leading empty segment lost its EOS
            if kind == "eos_eos":
                pairs = np.flatnonzero((got[0][:-1] == t.eos) & (got[0][1:] == t.eos))
                assert len(pairs) == 0  # `EOS EOS` keeps one
    assert all(n > 0 for n in seen.values()), seen
    stats = fim.stats.as_dict()
    assert stats["fim_truncated_rows"] == seen["grew"] and stats["fim_padded_rows"] == seen["shrank"]
    assert _within(stats["fim_applied"], stats["fim_candidates"], rate)


def test_llm360_pieces_each_gain_one_space(realdata: Path, code_texts: list[str]) -> None:
    """LLM360's decode drops one leading space and each fresh-text piece gains one (an extra '▁'), the
    prefix included; the default mode's pieces decode to exactly the text instead (tests above)."""
    from pretrain.fim import Llm360Fim, fresh_text_tokenizer

    path = str(realdata / "tokenizers" / "crystalcoder" / "tokenizer.json")
    tok = Tokenizer.from_file(path)
    t = FimTokens(32000, 32001, 32002, 32003, 2, 1)
    fim = Llm360Fim(fresh_text_tokenizer(path), FimConfig(rate=1.0, spm_rate=0.0, mode="llm360"), t)
    enc = Encoder(tok.to_str(), 2)
    rng = np.random.default_rng(4)
    checked = 0
    for text, other in zip(code_texts[:80], code_texts[80:160], strict=True):
        ids = tok.encode(text, add_special_tokens=False).ids[:100]
        filler = tok.encode(other, add_special_tokens=False).ids
        inputs = np.asarray((ids + [t.eos] + filler * 400)[:600], dtype=np.int32)
        row = np.stack([inputs, np.ones(600, dtype=np.int32), inputs])
        out = fim.apply_row(row, rng)[0].tolist()
        seg = out[:out.index(t.eos)]  # the first document, far from the row's end
        s, m = seg.index(t.suffix), seg.index(t.middle)
        pieces = [enc.decode_raw(p) for p in (seg[1:s], seg[m + 1:], seg[s + 1:m])]  # prefix, middle, suffix
        assert all(p == "" or p.startswith(" ") for p in pieces)
        assert "".join(p[1:] for p in pieces) == tok.decode(ids, skip_special_tokens=False)
        checked += 1
    assert checked == 80


def test_context_mode_reusing_document_ids_equals_fresh_encoding(code_texts: list[str], codec) -> None:
    """Pieces built from the documents' own ids (`Encoder.encode_cuts`) are the fresh encoding's, row by row."""
    enc, t, _ = codec
    assert enc._bigrams is not None
    rows = {}
    for whole in (False, True):
        fim = ContextFim(enc, FimConfig(rate=0.9, spm_rate=0.5, mode="context"), t)
        rng = np.random.default_rng(11)
        rows[whole] = [fim.apply(c.copy(), v, rng, whole) for c, v in
                       pack_chunks(enc.encode_docs(code_texts), SEQ_LEN, t.pad)]
    assert len(rows[True]) == len(rows[False])
    assert all(np.array_equal(a, b) and m == n for (a, m), (b, n) in zip(rows[True], rows[False], strict=True))
