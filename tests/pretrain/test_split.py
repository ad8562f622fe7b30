"""Document selection: halves are complementary and balanced, subsets are seeded and independent."""

from __future__ import annotations

from pretrain.split import keep_document, keep_row_by_file_parity

TEXTS = [f"document number {i} with some text" for i in range(4000)]


def test_halves_partition_the_corpus() -> None:
    first = {t for t in TEXTS if keep_document(t, 360, 0, 1.0)[0]}
    second = {t for t in TEXTS if keep_document(t, 360, 1, 1.0)[0]}
    assert first.isdisjoint(second) and first | second == set(TEXTS)
    assert abs(len(first) - 2000) < 200
    other = {t for t in TEXTS if keep_document(t, 361, 0, 1.0)[0]}
    assert other != first  # the seed matters


def test_subset_fraction_and_reason() -> None:
    kept = [t for t in TEXTS if keep_document(t, 5, None, 0.1)[0]]
    assert 300 < len(kept) < 500
    assert keep_document(TEXTS[0], 5, None, 1.0) == (True, "")
    reasons = {keep_document(t, 5, 1, 0.5)[1] for t in TEXTS}
    assert reasons == {"", "other_half", "not_in_subset"}


def test_file_parity_alternates_blocks() -> None:
    kept = [i for i in range(20) if keep_row_by_file_parity(i, 5, 0)]
    assert kept == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
