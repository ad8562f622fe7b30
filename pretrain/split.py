"""Deterministic selection: the two SlimPajama halves (by document hash or by packed file) and seeded subsets.

A document's fate depends only on its text and the split seed, a packed file's only on its input and place
in that input's stream, never on file grouping or worker count, so stage 1 and stage 2 manifests sharing a
split seed take complementary halves of the same corpus.
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


def data_subset_ranges(text: str) -> list[tuple[float, float]]:
    """Cerebras' ``data_subset`` (``"0.0-0.1"`` or ``"0.1-0.3,0.7-1.0"``): increasing ranges inside [0, 1].

    Raises ValueError saying what is wrong.
    """
    ranges = []
    prev = 0.0
    for part in text.split(","):
        lo_text, sep, hi_text = part.strip().partition("-")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            raise ValueError(f"must be ranges like '0.0-0.1' separated by commas, got {text!r}") from None
        if not sep or not 0 <= lo <= hi <= 1 or lo < prev:
            raise ValueError(f"ranges must lie in [0, 1], each start <= end, in increasing order; got {text!r}")
        ranges.append((lo, hi))
        prev = hi
    return ranges


def data_subset_rows(n: int, text: str | None) -> list[tuple[int, int]]:
    """The row ranges ``[start, stop)`` of a folder of `n` rows that Cerebras' reader uses for `text`.

    Its arithmetic: rows ``int(n * lo)`` up to ``int(n * hi)`` of the files in sorted order. None: all rows.
    """
    if text is None:
        return [(0, n)]
    return [(int(n * lo), int(n * hi)) for lo, hi in data_subset_ranges(text)]


def file_parity_order(files: list[tuple[str, int, int]], samples_per_file: int, seed: int) -> list[int]:
    """LLM360's split, made independent of the shard plan: the order in which a subset's packed files are
    numbered; number ``n`` goes to half ``n % 2`` (even -> stage 1, odd -> stage 2).

    `files` holds ``(input label, file index within that input's stream, rows)`` per packed file, in any
    order; the result lists indices into `files`. LLM360 shuffled each subset's packed files globally before
    taking even and odd ones, so both halves got about half of every subset. Here the full files come first
    in a seeded shuffle (a hash of label and index, so no file's place depends on which shard made it),
    then the partial ones (each input's last file) by decreasing size, so the alternation also balances
    rows: the two halves differ by at most about two files' worth of rows.
    """
    def key(i: int) -> int:
        label, index, _ = files[i]
        return xxhash.xxh64_intdigest(f"{label}\x00{index}".encode("utf-8", "surrogatepass"), seed=seed)

    full = sorted((i for i, f in enumerate(files) if f[2] >= samples_per_file), key=lambda i: (key(i), files[i]))
    partial = sorted((i for i, f in enumerate(files) if f[2] < samples_per_file),
                     key=lambda i: (-files[i][2], key(i), files[i]))
    return full + partial
