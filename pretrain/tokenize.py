"""Fast document encoding with the Rust `tokenizers` library, and exact piece encoding for FIM.

Workers never import transformers: the stage resolves the tokenizer once, saves its ``tokenizer.json``
beside the outputs, and every worker loads that file directly. Special-token strings inside documents
are encoded as plain text (`crystalmix.core.tokenizer.private_tokenizer` with ``literal=True``), so a file
containing ``<|fim_prefix|>`` cannot inject a sentinel id into the data.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core.tokenizer import private_tokenizer

WORD_MARK = "▁"


def _strip_prepend(spec: dict[str, Any]) -> dict[str, Any]:
    """The same tokenizer minus SentencePiece's "prepend a space" step, with a decoder that keeps spaces.

    Encoding pieces with it, and decoding with it, makes ``decode(encode(a) + encode(b)) == a + b``
    exactly, which FIM needs: LLaMA-style tokenizers would otherwise put a spurious space at every cut.
    """
    spec = json.loads(json.dumps(spec))  # a deep copy, several times faster than copy.deepcopy here
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
        piece_spec = _strip_prepend(json.loads(tokenizer_json))
        self.doc = private_tokenizer(tokenizer_json, literal=True)
        self.piece = private_tokenizer(json.dumps(piece_spec), literal=True)
        self.eos_id = eos_id
        self.max_doc_chars = max_doc_chars
        self._bytes = _piece_bytes(piece_spec)

    def encode_docs(self, texts: list[str]) -> list[np.ndarray]:
        """One int32 array ``encode(text) + [eos]`` per text; long texts are encoded in bounded pieces."""
        long = [i for i, t in enumerate(texts) if len(t) > self.max_doc_chars]
        if long:
            return self._encode_with_long(texts, set(long))
        encs = self.doc.encode_batch_fast(texts, add_special_tokens=False)
        return [_with_eos(e.ids, self.eos_id) for e in encs]

    def _encode_with_long(self, texts: list[str], long: set[int]) -> list[np.ndarray]:
        short = [t for i, t in enumerate(texts) if i not in long]
        short_encs = iter(self.doc.encode_batch_fast(short, add_special_tokens=False))
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
        if self._bytes is None:
            return self.piece.decode_batch(seqs, skip_special_tokens=False)
        table = self._bytes
        out: list[str | None] = []
        slow: list[int] = []
        for i, seq in enumerate(seqs):
            try:
                out.append(b"".join([table[t] for t in seq]).decode("utf-8"))
            except (TypeError, IndexError, UnicodeDecodeError):  # an added token, or a cut character
                out.append(None)
                slow.append(i)
        if slow:
            for i, text in zip(slow, self.piece.decode_batch([seqs[i] for i in slow], skip_special_tokens=False),
                               strict=True):
                out[i] = text
        return [t if t is not None else "" for t in out]


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


def normalize_text(text: str) -> str:
    """Unicode NFC, so the same characters always give the same tokens (composed vs decomposed accents)."""
    return unicodedata.normalize("NFC", text)
