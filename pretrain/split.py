"""Deterministic document selection: the two SlimPajama halves and seeded subsets.

A document's fate depends only on its text and the split seed, never on file order or worker count, so
stage 1 and stage 2 manifests sharing a split seed take complementary halves of the same corpus.
"""

from __future__ import annotations

import xxhash

_TOP = float(1 << 63)


def doc_hash(text: str, seed: int) -> int:
    return xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass"), seed=seed)


def keep_document(text: str, seed: int, half: int | None, fraction: float) -> tuple[bool, str]:
    """Whether a document belongs to this stage; the reason when it does not.

    The lowest bit of the seeded hash picks the half; the other 63 bits, read as a number in [0, 1),
    pick the subset, so halves and subsets are independent of each other.
    """
    if half is None and fraction >= 1.0:
        return True, ""
    h = doc_hash(text, seed)
    if half is not None and (h & 1) != half:
        return False, "other_half"
    if fraction < 1.0 and (h >> 1) / _TOP >= fraction:
        return False, "not_in_subset"
    return True, ""


def keep_row_by_file_parity(row_index: int, samples_per_file: int, half: int) -> bool:
    """LLM360's split: packed file number even -> stage 1 (half 0), odd -> stage 2 (half 1).

    The file number is counted within each shard's packed stream, which is how a per-shard packer sees it.
    """
    return (row_index // samples_per_file) % 2 == half
