"""Fill-in-the-middle, character-level (BigCode's algorithm), in three modes.

``context`` (the default, Megatron-style): after packing, each EOS-separated segment of an L+1 chunk
becomes, with probability `rate`, PSM ``<fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle`` or
(probability `spm_rate`) SPM ``<fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle``; the chunk is
then cut or padded with ``<fim_pad>`` back to L+1 and labels follow from it. ``document``: the same on whole
documents before packing, so nothing is cut. Pieces are encoded with `Encoder.encode_pieces`, so
prefix + middle + suffix decode to the exact text.

``llm360``: LLM360's own pass (fim_hdf5_stage2/3.py, FIDELITY.md section 3), reproduced exactly on rows of
L input ids: an empty inner segment loses its EOS, the (possibly empty) segment after the last EOS is
permuted too, text is decoded the way LLaMA's tokenizer decodes (dropping one leading space) and each piece
encoded as a fresh text (gaining a word-start space), labels are the new inputs shifted with a fake EOS
last, and the loss mask is kept in place. Our seeding (not theirs) decides the draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from tokenizers import Tokenizer

from pretrain.config import FimConfig
from pretrain.tokenize import Encoder


@dataclass(frozen=True, slots=True)
class FimTokens:
    prefix: int
    middle: int
    suffix: int
    pad: int
    eos: int
    bos: int | None = None  # a segment's leading BOS (tokenization: cerebras) stays in front, untouched

    @classmethod
    def from_specials(cls, specials: dict[str, int]) -> FimTokens:
        missing = [k for k in ("fim_prefix", "fim_middle", "fim_suffix", "fim_pad") if k not in specials]
        if missing:
            from crystalmix.core.errors import UserError

            raise UserError(f"FIM needs the tokenizer's {missing} tokens")
        return cls(specials["fim_prefix"], specials["fim_middle"], specials["fim_suffix"],
                   specials["fim_pad"], specials["eos"], specials.get("bos"))


@dataclass(slots=True)
class FimStats:
    segments: int = 0
    fim: int = 0
    spm: int = 0
    truncated_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"fim_candidates": self.segments, "fim_applied": self.fim, "fim_spm": self.spm,
                "fim_truncated_rows": self.truncated_rows}


def arrange(prefix: list[int], middle: list[int], suffix: list[int], spm: bool, t: FimTokens) -> list[int]:
    """The sentinel layout of one FIM example (without its EOS)."""
    if spm:
        return [t.prefix, t.suffix, *suffix, t.middle, *prefix, *middle]
    return [t.prefix, *prefix, t.suffix, *suffix, t.middle, *middle]


def _draw(texts: list[str], rng: np.random.Generator, spm_rate: float) -> tuple[list[tuple[int, int]], list[bool]]:
    """Two uniform character positions per text (sorted), then its SPM draw."""
    cuts: list[tuple[int, int]] = []
    spm: list[bool] = []
    for text in texts:
        a, b = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
        cuts.append((a, b))
        spm.append(bool(rng.random() < spm_rate))
    return cuts, spm


def _cut(texts: list[str], rng: np.random.Generator, spm_rate: float) -> tuple[list[str], list[bool]]:
    """`_draw`, as pieces [prefix, middle, suffix, ...]."""
    cuts, spm = _draw(texts, rng, spm_rate)
    return [p for text, (a, b) in zip(texts, cuts, strict=True) for p in (text[:a], text[a:b], text[b:])], spm


class ContextFim:
    """FIM on packed chunks (LLM360's mode): per EOS-separated segment, then cut/pad back to L+1."""

    def __init__(self, encoder: Encoder, cfg: FimConfig, tokens: FimTokens) -> None:
        self.encoder, self.cfg, self.t = encoder, cfg, tokens
        self.stats = FimStats()

    def apply(self, chunk: np.ndarray, valid: int, rng: np.random.Generator, whole: bool = False
              ) -> tuple[np.ndarray, int]:
        """Transform one packed chunk; returns the new chunk (same length) and its count of real ids.

        `whole`: every document in the chunk was encoded as one text (not in parts), so the pieces of its
        segments may reuse their ids (`Encoder.encode_cuts`); the result is the same either way.
        """
        out = self.permute(chunk[:valid], rng, whole)
        if out is None:
            return chunk, valid
        width = len(chunk)
        new = np.full(width, self.t.pad, dtype=np.int32)
        n = min(len(out), width)
        if len(out) > width:
            self.stats.truncated_rows += 1
        new[:n] = out[:n]
        return new, n

    def permute(self, real: np.ndarray, rng: np.random.Generator, whole: bool = False) -> list[int] | None:
        """The chunk's ids with the chosen segments transformed, before cutting back to length.

        None when no segment was chosen (the chunk is then used as is, without a copy).
        """
        valid = len(real)
        ends = np.flatnonzero(real == self.t.eos)
        bounds = list(zip(np.r_[0, ends + 1], np.r_[ends, valid], strict=True))
        segs = [(int(s), int(e)) for s, e in bounds]
        lead = [int(e > s and real[s] == self.t.bos) for s, e in segs]  # a BOS is kept out of the FIM text
        chosen = []
        for i, (s, e) in enumerate(segs):
            if e > s + lead[i]:
                self.stats.segments += 1
                if rng.random() < self.cfg.rate:
                    chosen.append(i)
        if not chosen:
            return None
        parts = [real[segs[i][0] + lead[i]:segs[i][1]] for i in chosen]
        texts, exact = self.encoder.decode_segments(parts)
        cuts, spm = _draw(texts, rng, self.cfg.spm_rate)
        # a segment after an EOS starts its document; one followed by an EOS ends it
        edges = [(i > 0 and not lead[i], segs[i][1] < valid) if whole and ok else None
                 for i, ok in zip(chosen, exact, strict=True)]
        enc = self.encoder.encode_cuts(parts, texts, cuts, edges)
        replaced = {}
        for k, i in enumerate(chosen):
            replaced[i] = [self.t.bos] * lead[i] + arrange(enc[3 * k], enc[3 * k + 1], enc[3 * k + 2], spm[k], self.t)
            self.stats.fim += 1
            self.stats.spm += spm[k]
        out: list[int] = []
        for i, (s, e) in enumerate(segs):
            out += replaced[i] if i in replaced else real[s:e].tolist()
            if e < valid:  # the segment was followed by an EOS
                out.append(self.t.eos)
        return out


class DocumentFim:
    """FIM on whole documents before packing: no example loses its end to a row boundary."""

    def __init__(self, encoder: Encoder, cfg: FimConfig, tokens: FimTokens) -> None:
        self.encoder, self.cfg, self.t = encoder, cfg, tokens
        self.stats = FimStats()

    def encode(self, texts: list[str], rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Encode a batch of documents, transforming the chosen ones; yields ``ids + [eos]`` each."""
        chosen = [bool(rng.random() < self.cfg.rate) for _ in texts]
        self.stats.segments += len(texts)
        plain = iter(self.encoder.encode_docs([t for t, c in zip(texts, chosen, strict=True) if not c]))
        picked = [t for t, c in zip(texts, chosen, strict=True) if c]
        pieces, spm = _cut(picked, rng, self.cfg.spm_rate)
        enc = self.encoder.encode_pieces(pieces) if pieces else []
        k = 0
        for c in chosen:
            if not c:
                yield next(plain)
                continue
            ids = arrange(enc[3 * k], enc[3 * k + 1], enc[3 * k + 2], spm[k], self.t) + [self.t.eos]
            self.stats.fim += 1
            self.stats.spm += spm[k]
            k += 1
            yield np.asarray(ids, dtype=np.int32)


@lru_cache(maxsize=4)
def fresh_text_tokenizer(tokenizer_path: str, tokenizer_json: str = "") -> Tokenizer:
    """The stage's tokenizer as LLM360's FIM script used LLaMA's: special-token strings in text are matched.

    A segment holding ``<s>`` decodes to the text ``<s>``, and encoding that text must give the id back.
    `tokenizer_json`, when given, is the tokenizer itself (read in place of the file).
    """
    tok = Tokenizer.from_str(tokenizer_json) if tokenizer_json else Tokenizer.from_file(tokenizer_path)
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass(slots=True)
class Llm360Stats(FimStats):
    padded_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return {**FimStats.as_dict(self), "fim_padded_rows": self.padded_rows}


class Llm360Fim:
    """LLM360's FIM pass, exactly, on one packed row ``(3, L)`` at a time (see the module docstring).

    Draws per segment, in LLM360's order: ``binomial(1, rate)``; if chosen, two positions from
    ``integers(0, len(text) + 1)`` and ``binomial(1, spm_rate)``. Decoding and encoding are batched per row
    (they draw nothing), so the order of draws is the reference's.
    """

    def __init__(self, tokenizer: Tokenizer, cfg: FimConfig, tokens: FimTokens) -> None:
        self.tok, self.cfg, self.t = tokenizer, cfg, tokens
        self.stats = Llm360Stats()

    def apply_row(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sample = row[0]
        width = len(sample)
        segments: list[np.ndarray] = []
        separated: list[bool] = []  # followed by an EOS in the new row
        start = 0
        for loc in np.flatnonzero(sample == self.t.eos).tolist():
            if loc > start:  # an empty inner segment is skipped, and its EOS with it
                segments.append(sample[start:loc])
                separated.append(True)
            start = loc + 1
        segments.append(sample[start:])  # the tail after the last EOS, permuted even when empty
        separated.append(False)
        parts = self._permute(segments, rng)
        new = np.concatenate([np.r_[p, [self.t.eos]] if sep else np.asarray(p)
                              for p, sep in zip(parts, separated, strict=True)]).astype(np.int32)
        labels = np.r_[new[1:], [self.t.eos]].astype(np.int32)  # before the cut: a fake EOS last label
        mask = row[1].copy()
        if len(new) > width:
            self.stats.truncated_rows += 1
            new, labels = new[:width], labels[:width]
        elif len(new) < width:
            self.stats.padded_rows += 1
            short = width - len(new)
            new = np.r_[new, np.full(short, self.t.pad, dtype=np.int32)]
            labels = np.r_[labels, np.full(short, self.t.pad, dtype=np.int32)]
            mask[-short:] = 0
        return np.stack([new, mask, labels]).astype(np.int32)

    def _permute(self, segments: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        texts = self.tok.decode_batch([s.tolist() for s in segments], skip_special_tokens=False)
        chosen: list[tuple[int, bool]] = []
        pieces: list[str] = []
        for i, text in enumerate(texts):
            self.stats.segments += 1
            if not rng.binomial(1, self.cfg.rate):
                continue
            a, b = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
            pieces += [text[:a], text[a:b], text[b:]]
            chosen.append((i, bool(rng.binomial(1, self.cfg.spm_rate))))
        if not chosen:
            return segments
        enc = [e.ids for e in self.tok.encode_batch_fast(pieces, add_special_tokens=False)]
        out = list(segments)
        for k, (i, spm) in enumerate(chosen):
            out[i] = np.asarray(arrange(enc[3 * k], enc[3 * k + 1], enc[3 * k + 2], spm, self.t), dtype=np.int32)
            self.stats.fim += 1
            self.stats.spm += spm
        return out
