"""Fast document encoding with the Rust `tokenizers` library, and exact piece encoding for FIM.

Workers never import transformers: the stage resolves the tokenizer once, saves its ``tokenizer.json``
beside the outputs, and every worker loads that file directly. Special-token strings inside documents
are encoded as plain text (`crystalmix.core.tokenizer.private_tokenizer` with ``literal=True``), so a file
containing ``<|fim_prefix|>`` cannot inject a sentinel id into the data.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Iterable
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core.tokenizer import private_tokenizer

WORD_MARK = "▁"


def _strip_prepend(spec: dict[str, Any]) -> dict[str, Any]:
    """The same tokenizer minus SentencePiece's "prepend a space" step, with a decoder that keeps spaces.

    Encoding pieces with it, and decoding with it, makes ``decode(encode(a) + encode(b)) == a + b``
    exactly, which FIM needs: LLaMA-style tokenizers would otherwise put a spurious space at every cut.
    Changes `spec` (a fresh parse) in place.
    """
    norm = spec.get("normalizer")
    if norm and norm.get("type") == "Sequence":
        norm["normalizers"] = [n for n in norm["normalizers"]
                               if not (n.get("type") == "Prepend" and n.get("prepend") == WORD_MARK)]
    elif norm and norm.get("type") == "Prepend":
        spec["normalizer"] = None
    for key in ("pre_tokenizer", "decoder"):
        node = spec.get(key)
        subs = node.get("pretokenizers" if key == "pre_tokenizer" else "decoders", []) if node else []
        for n in ([node] if node else []) + list(subs):
            if n.get("type") == "Metaspace":
                n["prepend_scheme"] = "never"
                n.pop("add_prefix_space", None)
    dec = spec.get("decoder")
    if dec and dec.get("type") == "Sequence":
        dec["decoders"] = [d for d in dec["decoders"]
                           if not (d.get("type") == "Strip" and d.get("content") == " ")]
    return spec


class Encoder:
    """Encodes documents as ``ids + [eos]`` and FIM pieces exactly; decodes segments without loss."""

    def __init__(self, tokenizer_json: str, eos_id: int, max_doc_chars: int = 200_000) -> None:
        self.eos_id = eos_id
        self.max_doc_chars = max_doc_chars
        self._json = tokenizer_json
        tok = private_tokenizer(tokenizer_json, literal=True)
        self._bare: Any = None
        if _normalizes_as_marked_text(tok):
            tok.normalizer = None
            self._bare = tok  # `doc` (with its normalizer) is then built only if something asks for it
        else:
            self.doc = tok

    @cached_property
    def doc(self) -> Any:
        """The document tokenizer (``tokenizer.json`` as saved, special-token text read literally)."""
        return private_tokenizer(self._json, literal=True)

    def _encode_whole(self, texts: list[str]) -> list[Any]:
        """`doc`'s encodings of `texts`: where its normalizer is SentencePiece's two steps, those run here
        as two string operations and the Rust tokenizer skips them (same ids, ~10% less time: its
        normalizer tracks every character's offsets, which ids never need)."""
        if self._bare is None:
            return list(self.doc.encode_batch_fast(texts, add_special_tokens=False))
        marked = [WORD_MARK + t.replace(" ", WORD_MARK) if t else t for t in texts]
        return list(self._bare.encode_batch_fast(marked, add_special_tokens=False))

    # The piece tokenizer and byte table serve FIM and long documents only: built on first use, since
    # parsing the JSON costs as much as a small shard's tokenization.
    @cached_property
    def _doc_spec(self) -> dict[str, Any]:
        return dict(json.loads(self._json))

    @cached_property
    def _piece_spec(self) -> dict[str, Any]:
        doc = self._doc_spec  # shared with it but the three small sections _strip_prepend changes
        return _strip_prepend({**doc, **{k: copy.deepcopy(doc.get(k)) for k in ("normalizer", "pre_tokenizer",
                                                                                "decoder")}})

    @cached_property
    def piece(self) -> Any:
        return private_tokenizer(json.dumps(self._piece_spec), literal=True)

    @cached_property
    def _bytes(self) -> list[bytes | None] | None:
        return _piece_bytes(self._piece_spec)

    def splits(self, text: str) -> bool:
        """Whether `encode_docs` encodes this text in pieces (its ids are then not one BPE of the text)."""
        return len(text) > self.max_doc_chars

    def encode_docs(self, texts: list[str]) -> list[np.ndarray]:
        """One int32 array ``encode(text) + [eos]`` per text; long texts are encoded in bounded pieces."""
        long = [i for i, t in enumerate(texts) if self.splits(t)]
        if long:
            return self._encode_with_long(texts, set(long))
        return [_with_eos(e.ids, self.eos_id) for e in self._encode_whole(texts)]

    def _encode_with_long(self, texts: list[str], long: set[int]) -> list[np.ndarray]:
        short = [t for i, t in enumerate(texts) if i not in long]
        short_encs = iter(self._encode_whole(short))
        out = []
        for i, t in enumerate(texts):
            if i not in long:
                out.append(_with_eos(next(short_encs).ids, self.eos_id))
                continue
            pieces = split_long(t, self.max_doc_chars)
            parts = [np.asarray(self.doc.encode(pieces[0], add_special_tokens=False).ids, dtype=np.int32)]
            for p in pieces[1:]:
                parts.append(np.asarray(self.piece.encode(p, add_special_tokens=False).ids, dtype=np.int32))
            parts.append(np.asarray([self.eos_id], dtype=np.int32))
            out.append(np.concatenate(parts))
        return out

    def encode_pieces(self, texts: list[str]) -> list[list[int]]:
        """Encode text pieces with no added word marker, so concatenated pieces decode to the joined text.

        (LLM360's own piece encoding, a fresh text per piece, is `pretrain.fim.Llm360Fim`'s.)
        """
        return [e.ids for e in self.piece.encode_batch_fast(texts, add_special_tokens=False)]

    def decode_raw(self, ids: Iterable[int]) -> str:
        """Decode without dropping the leading space, the exact inverse of `encode_pieces`."""
        return self.piece.decode(list(ids), skip_special_tokens=False)

    def decode_raw_batch(self, seqs: list[list[int]]) -> list[str]:
        """`decode_raw` of each sequence; through a byte table when the decoder is a plain byte mapping.

        The table gives the same text as the Rust decoder (checked per call: anything that is not valid
        UTF-8, or holds an added token, goes to the decoder), several times faster, which matters because
        FIM decodes most of the corpus a second time.
        """
        return self._decode(seqs)[0]

    def _decode(self, seqs: list[list[int]]) -> tuple[list[str], list[bool]]:
        """`decode_raw_batch`, and per sequence whether the byte table decoded it (text and ids agree byte
        for byte; the Rust decoder's text may hold U+FFFD for a character cut at a row edge)."""
        if self._bytes is None:
            texts = self.piece.decode_batch(seqs, skip_special_tokens=False)
            return texts, [False] * len(texts)
        table = self._bytes
        out: list[str | None] = []
        slow: list[int] = []
        for i, seq in enumerate(seqs):
            try:
                out.append(b"".join([table[t] for t in seq]).decode("utf-8"))
            except (TypeError, IndexError, UnicodeDecodeError):  # an added token, or a cut character
                out.append(None)
                slow.append(i)
        exact = [t is not None for t in out]
        if slow:
            for i, text in zip(slow, self.piece.decode_batch([seqs[i] for i in slow], skip_special_tokens=False),
                               strict=True):
                out[i] = text
        return [t if t is not None else "" for t in out], exact

    def decode_segments(self, segs: list[np.ndarray]) -> tuple[list[str], list[bool]]:
        """Texts of id segments (`decode_raw_batch`), and whether each may be cut with `encode_cuts`' reuse."""
        texts, exact = self._decode([s.tolist() for s in segs])
        if self._bigrams is None:
            exact = [False] * len(texts)
        return texts, exact

    # -- FIM pieces from the segment's own ids ------------------------------------------------------------
    # A position between two characters is "hard" when no vocabulary piece holds that character pair: no
    # BPE symbol can then span it, so BPE on either side runs as if the other did not exist. Between two
    # hard positions of a document, encoding that stretch alone gives exactly the document's own ids
    # there. A FIM piece is therefore its document's ids between the hard positions nearest its two ends,
    # with only the few characters outside them encoded again: the same ids as `encode_pieces`, without
    # tokenizing the corpus a second time.
    SCAN = 256  # characters searched for a hard position from each end of a piece

    @cached_property
    def _bigrams(self) -> frozenset[str] | None:
        return _piece_bigrams(self._doc_spec, self._piece_spec)

    @cached_property
    def _lengths(self) -> np.ndarray:
        table = self._bytes or []
        return np.asarray([len(b) if b is not None else -1 for b in table], dtype=np.int64)

    def encode_cuts(self, segs: list[np.ndarray], texts: list[str], cuts: list[tuple[int, int]],
                    edges: list[tuple[bool, bool] | None]) -> list[list[int]]:
        """`encode_pieces` of ``text[:a], text[a:b], text[b:]`` for each segment, ids reused where exact.

        ``edges[k]``: whether segment k starts and ends at a document boundary (a document's first and last
        positions are hard), or None when its ids are not that document's BPE (a text the Rust decoder
        repaired; a document encoded in parts) and its pieces are encoded whole.
        """
        windows: list[str] = []
        plans: list[tuple[int, list[int], int, int, int]] = []  # per piece: left window, ids, from, to, right
        for seg, text, (a, b), edge in zip(segs, texts, cuts, edges, strict=True):
            spans = [None] * 3 if edge is None else self._inner(text, ((0, a), (a, b), (b, len(text))), edge)
            ids: list[int] = []
            if any(spans):
                starts = np.concatenate([[0], np.cumsum(self._lengths[seg])])
                ids = seg.tolist()
            for (u, v), span in zip(((0, a), (a, b), (b, len(text))), spans, strict=True):
                if span is not None:
                    lo, hi = span if len(text) == starts[-1] else (len(text[:span[0]].encode()),
                                                                   len(text[:span[1]].encode()))
                    i, j = starts.searchsorted(lo), starts.searchsorted(hi)
                    if starts[i] == lo and starts[j] == hi:  # always, by the argument above
                        windows += [text[u:span[0]], text[span[1]:v]]
                        plans.append((len(windows) - 2, ids, int(i), int(j), len(windows) - 1))
                        continue
                windows.append(text[u:v])
                plans.append((len(windows) - 1, ids, 0, 0, -1))
        enc = self.encode_pieces(windows)
        return [enc[left] + ids[i:j] + enc[right] if right >= 0 else enc[left] for left, ids, i, j, right in plans]

    def _inner(self, text: str, pieces: tuple[tuple[int, int], ...], edge: tuple[bool, bool]
               ) -> list[tuple[int, int] | None]:
        """Per piece [u, v) of `text`: its first and last hard positions (searched `SCAN` characters in from
        each end), when they differ."""
        pairs, n = self._bigrams, len(text)
        assert pairs is not None
        probe = text.replace(WORD_MARK, " ") if WORD_MARK in text else text  # both normalize to the marker

        def hard(p: int) -> bool:
            if 0 < p < n:
                return probe[p - 1:p + 1] not in pairs
            return edge[0] if p == 0 else edge[1]

        out: list[tuple[int, int] | None] = []
        for u, v in pieces:
            first = next((p for p in range(u, min(v, u + self.SCAN) + 1) if hard(p)), None)
            last = None if first is None else next(
                (p for p in range(v, max(first, v - self.SCAN) - 1, -1) if hard(p)), None)
            out.append((first, last) if first is not None and last is not None and last > first else None)
        return out


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_PLAIN_DECODER = [{"type": "Replace", "pattern": {"String": WORD_MARK}, "content": " "}, {"type": "ByteFallback"},
                  {"type": "Fuse"}]


def _piece_bytes(spec: dict[str, Any]) -> list[bytes | None] | None:
    """Token id -> its bytes, for SentencePiece-style decoders (``▁`` -> space, ``<0xNN>`` -> a byte).

    None for any other decoder (byte-level BPE and the like keep using the Rust decoder). Added tokens map
    to None so sequences holding them take the Rust path too.
    """
    if (spec.get("decoder") or {}).get("decoders") != _PLAIN_DECODER:
        return None
    vocab: dict[str, int] = spec["model"]["vocab"]
    added = [a["id"] for a in spec.get("added_tokens", [])]
    table: list[bytes | None] = [None] * (max([*vocab.values(), *added]) + 1)
    for piece, i in vocab.items():
        m = _BYTE_PIECE.match(piece)
        table[i] = bytes([int(m.group(1), 16)]) if m else piece.replace(WORD_MARK, " ").encode("utf-8")
    for i in added:
        table[i] = None
    return table


_MARKED_TEXT = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": WORD_MARK}, {"type": "Replace", "pattern": {"String": " "}, "content": WORD_MARK}]}


def _normalizes_as_marked_text(tok: Any) -> bool:
    """Whether `tok`'s normalizer is only ``▁`` before a non-empty text and ``▁`` for every space, and no added
    token is matched in text (all special, read literally): then ``"▁" + text.replace(" ", "▁")`` given to it
    without a normalizer is what it tokenizes."""
    norm = tok.normalizer
    if norm is None or json.loads(norm.__getstate__()) != _MARKED_TEXT:
        return False
    return bool(tok.encode_special_tokens) and all(t.special for t in tok.get_added_tokens_decoder().values())


def _piece_bigrams(doc: dict[str, Any], piece: dict[str, Any]) -> frozenset[str] | None:
    """Every character pair inside a vocabulary piece (spaces as text), when `Encoder.encode_cuts` may reuse
    ids: a SentencePiece-style BPE whose symbols are text (byte-fallback pieces never merge), ``▁`` for
    spaces prepended to the document only, every added token special (literal text never matches them).
    None for any other tokenizer: its FIM pieces are always encoded whole."""
    model = doc.get("model") or {}
    norm = doc.get("normalizer") or {}
    pre = doc.get("pre_tokenizer")
    ok = (model.get("type") == "BPE" and model.get("dropout") is None and not model.get("ignore_merges")
          and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
          and model.get("byte_fallback") is True
          and norm == _MARKED_TEXT
          and (pre is None or pre == {"type": "Metaspace", "replacement": WORD_MARK, "prepend_scheme": "never",
                                      "split": True})
          and all(a.get("special") for a in doc.get("added_tokens", []))
          and _piece_bytes(piece) is not None)
    if not ok:
        return None
    vocab: dict[str, int] = model["vocab"]
    if any(f"<0x{b:02X}>" not in vocab for b in range(256)):
        return None
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    if any(_BYTE_PIECE.match(x) for m in merges for x in m):
        return None
    return frozenset(piece_text[i:i + 2] for piece_text in (p.replace(WORD_MARK, " ") for p in vocab)
                     for i in range(len(piece_text) - 1))


def _with_eos(ids: list[int], eos_id: int) -> np.ndarray:
    arr = np.empty(len(ids) + 1, dtype=np.int32)
    arr[:-1] = ids
    arr[-1] = eos_id
    return arr


def split_long(text: str, max_chars: int) -> list[str]:
    """Cut a long text into pieces of at most `max_chars`, at a newline or space when one is near."""
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = text.rfind("\n", start + max_chars // 2, end)
        if cut < 0:
            cut = text.rfind(" ", start + max_chars // 2, end)
        cut = end if cut < 0 else cut + 1
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


@lru_cache(maxsize=4)
def cached_encoder(tokenizer_path: str, eos_id: int, max_doc_chars: int) -> Encoder:
    """One encoder per worker process (loading the tokenizer costs more than a small shard)."""
    return Encoder(Path(tokenizer_path).read_text(encoding="utf-8"), eos_id, max_doc_chars)


@lru_cache(maxsize=4)
def text_encoder(tokenizer_json: str, eos_id: int, max_doc_chars: int) -> Encoder:
    """`cached_encoder` from the tokenizer's JSON itself, for a task that cannot read the stage's copy."""
    return Encoder(tokenizer_json, eos_id, max_doc_chars)


def normalize_text(text: str) -> str:
    """Unicode NFC, so the same characters always give the same tokens (composed vs decomposed accents)."""
    return unicodedata.normalize("NFC", text)
