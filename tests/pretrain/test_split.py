"""Document selection: halves are complementary and balanced, subsets are seeded and independent."""

from __future__ import annotations

from pretrain.split import file_parity_order, keep_document

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


def test_file_parity_order_is_a_seeded_shuffle_of_full_files_then_partials_by_size() -> None:
    files = [(f"in{i % 7}", i // 7, 100) for i in range(40)] + [(f"in{i}", 9, 10 + 7 * i) for i in range(7)]
    order = file_parity_order(files, 100, seed=360)
    assert sorted(order) == list(range(len(files)))
    assert order[:40] != list(range(40)) and set(order[:40]) == set(range(40))  # shuffled full files
    assert [files[i][2] for i in order[40:]] == sorted((f[2] for f in files[40:]), reverse=True)
    # Independent of the order the files arrive in (shards finish in any order).
    shuffled = files[::-1]
    assert [shuffled[i] for i in file_parity_order(shuffled, 100, seed=360)] == [files[i] for i in order]
    assert file_parity_order(files, 100, seed=361)[:40] != order[:40]  # the seed matters
    rows = [sum(files[i][2] for i in order[h::2]) for h in (0, 1)]
    assert abs(rows[0] - rows[1]) <= 100 + 52  # within a full file plus the largest partial one


def test_data_subset_follows_cerebras_arithmetic() -> None:
    import pytest

    from pretrain.split import data_subset_ranges, data_subset_rows

    assert data_subset_rows(95, "0.0-0.1") == [(0, 9)]
    assert data_subset_rows(100, "0.1-0.3,0.7-1.0") == [(10, 30), (70, 100)]
    assert data_subset_rows(7, None) == [(0, 7)]
    for bad in ("0.2-0.1", "0.5-0.7,0.1-0.2", "a-b", "0.1", "0.0-1.5"):
        with pytest.raises(ValueError):
            data_subset_ranges(bad)
