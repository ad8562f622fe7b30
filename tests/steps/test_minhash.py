"""MinHasher's signatures are datasketch's MinHash values for the same shingles and permutations, and a batch
gives every text the signature and sketch it gets alone."""

from __future__ import annotations

import random
import re

import numpy as np
import xxhash
from datasketch import MinHash

from sft_builder.steps.dedup import MinHasher, batch_token_hashes
from sft_builder.steps.text import token_hashes

M64 = (1 << 64) - 1
WORD = re.compile(rb"[0-9A-Za-z_\x80-\xff]+")
FMIX = (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)  # MurmurHash3's 64-bit finalizer, datasketch's pre-mix

rng = random.Random(3)
VOCAB = [f"w{i}" for i in range(400)]
TEXTS = [
    " ".join(rng.choice(VOCAB) for _ in range(rng.randint(5, 300))) for _ in range(30)
] + [
    "",
    "too short",
    "one two three four five",
    "a a a a a a a a a a a a",  # one shingle, repeated
    "Ünïcödé ΣΟΦΟΣ, tèxt: with punctuation!! and\ttabs\n\nnew lines; 中文文本没有空格 x-y_z w",
    "İstanbul ΌΣΟΣ ǅungla ﬁne ÀB__C 42 4.2 e-mail@example.org",
]


def shingle_hashes(text: str, n: int) -> list[int]:
    """Each n-gram's 64-bit hash, computed with Python integers: xxh3 per word, a polynomial, two mixes."""
    words = [xxhash.xxh3_64_intdigest(w) for w in WORD.findall(text.lower().encode("utf-8"))]
    out = []
    for i in range(len(words) - n + 1):
        acc = words[i]
        for w in words[i + 1 : i + n]:
            acc = (acc * 0x100000001B3 + w) & M64
        acc ^= acc >> 31
        acc = (acc * 0x9E3779B97F4A7C15) & M64
        acc ^= acc >> 29
        out.append(acc)
    return out


def unmix(h: int) -> int:
    """The input whose MurmurHash3 finalizer is `h`, so datasketch's pre-mixed hash is our shingle hash."""
    h ^= h >> 33
    h = (h * pow(FMIX[1], -1, 1 << 64)) & M64
    h ^= h >> 33
    h = (h * pow(FMIX[0], -1, 1 << 64)) & M64
    return h ^ (h >> 33)


def test_signatures_are_datasketch_minhash_values_with_our_permutations() -> None:
    for num_perm, n, seed in ((128, 5, 1), (64, 3, 7)):
        hasher = MinHasher(num_perm, n, seed)
        sigs, sketches = hasher.sign(TEXTS, 16)
        for text, sig, sketch in zip(TEXTS, sigs, sketches, strict=True):
            shingles = shingle_hashes(text, n)
            ref = MinHash(num_perm, scheme="affine64", permutations=(hasher.a, hasher.b), hashfunc=unmix)
            for s in shingles:
                ref.update(s)
            # datasketch keeps 64-bit values; the signature is their top 32 bits (EMPTY for no shingle)
            assert (sig == (ref.hashvalues >> np.uint64(32)).astype(np.uint32)).all(), text[:40]
            low = [s >> 32 for s in sorted(set(shingles))[:16]]
            assert sketch.tolist() == low + [int(MinHasher.EMPTY)] * (16 - len(low))


def test_a_batch_signs_each_text_as_it_is_signed_alone() -> None:
    hasher = MinHasher(128, 5, 1, chunk=97)  # windows that cut texts in the middle
    together = hasher.sign(TEXTS, 256)
    for i, text in enumerate(TEXTS):
        sig, sketch = MinHasher(128, 5, 1, chunk=1 << 20).sign([text], 256)
        assert (together[0][i] == sig[0]).all() and (together[1][i] == sketch[0]).all()
    assert hasher.sign([], 8)[0].shape == (0, 128)


def test_batch_words_are_the_words_of_each_text() -> None:
    hashes, counts = batch_token_hashes(TEXTS)
    assert counts.tolist() == [len(token_hashes(t)) for t in TEXTS]
    assert (hashes == np.concatenate([token_hashes(t) for t in TEXTS])).all()
