"""Shared text helpers for dedup and decontamination: which text of a conversation counts, word tokens,
and vectorised 64-bit n-gram hashes (one xxhash per word, n-grams combined in numpy, no per-shingle strings).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

from crystalmix.core.records import Conversation

WORD_RE = re.compile(r"\w+")
# On UTF-8 bytes: ASCII word characters plus any non-ASCII byte, so non-Latin words stay whole.
_BYTE_WORD_RE = re.compile(rb"[0-9A-Za-z_\x80-\xff]+")
_P = np.uint64(0x100000001B3)  # FNV prime: odd, so the rolling combination is a bijection per position
_MIX = np.uint64(0x9E3779B97F4A7C15)


def content_text(conv: Conversation, *, include_system: bool = False, roles: tuple[str, ...] = ()) -> str:
    """The text that matters for comparing conversations; system prompts excluded unless asked for.

    SlimOrca repeats a handful of system prompts across most rows; including them would make unrelated
    conversations look alike.
    """
    msgs = conv.messages if include_system else conv.turns
    return "\n".join(m.content for m in msgs if not roles or m.role in roles)


def normalise(text: str) -> str:
    """Case-folded NFKC text with whitespace runs collapsed: the key for exact duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped), as common decontamination practice does."""
    return WORD_RE.findall(text.lower())


def token_hashes(text: str) -> np.ndarray:
    """One 64-bit xxhash per lower-cased word of `text` (punctuation and spaces separate words)."""
    toks = _BYTE_WORD_RE.findall(text.lower().encode("utf-8"))
    return np.fromiter(map(xxhash.xxh3_64_intdigest, toks), dtype=np.uint64, count=len(toks))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every run of `n` consecutive token hashes (empty when there are fewer than `n`).

    Computed as a polynomial over the window with wrapping uint64 arithmetic, then scrambled, so the cost is
    `n` vector operations per document instead of one string join and one hash call per shingle.
    """
    m = len(hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = hashes[:m].copy()
    for k in range(1, n):
        acc *= _P
        acc += hashes[k : k + m]
    acc ^= acc >> np.uint64(31)
    acc *= _MIX
    acc ^= acc >> np.uint64(29)
    return acc


def text_ngrams(text: str, n: int) -> np.ndarray:
    """Unique sorted n-gram hashes of a text's word tokens."""
    return np.unique(ngram_hashes(token_hashes(text), n))
