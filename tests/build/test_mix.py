from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sft_builder.manifest import SourceConfig
from sft_builder.mix import KEPT, MAX_SAMPLES, WEIGHT, select


def src(**kw: object) -> SourceConfig:
    return SourceConfig(name=str(kw.pop("name", "s")), adapter="alpaca", inputs=(str(Path("x")),), **kw)  # type: ignore[arg-type]


MEMBERS = np.arange(100, 120)  # 20 records at file positions 100..119


@pytest.mark.parametrize(
    ("cfg", "samples", "unique", "reasons"),
    [
        (src(), 20, 20, {KEPT: 20}),
        (src(weight=0.5), 10, 10, {KEPT: 10, WEIGHT: 10}),
        (src(weight=1.5), 30, 20, {KEPT: 20}),
        (src(epochs=3), 60, 20, {KEPT: 20}),
        (src(max_samples=5), 5, 5, {KEPT: 5, MAX_SAMPLES: 15}),
        (src(weight=0.5, max_samples=4), 4, 4, {KEPT: 4, MAX_SAMPLES: 6, WEIGHT: 10}),
        (src(epochs=2, max_samples=30), 30, 20, {KEPT: 20}),
        (src(weight=0.0), 0, 0, {WEIGHT: 20}),
    ],
)
def test_select_counts(cfg: SourceConfig, samples: int, unique: int, reasons: dict[int, int]) -> None:
    seq, r = select(cfg, MEMBERS, seed=1)
    assert len(seq) == samples and len(set(seq.tolist())) == unique
    assert set(seq.tolist()) <= set(MEMBERS.tolist())
    assert dict(Counter(r.tolist())) == reasons
    assert set(MEMBERS[r == KEPT].tolist()) == set(seq.tolist())  # kept = exactly what was sampled


def test_repeats_are_whole_passes() -> None:
    seq, _ = select(src(weight=1.5), MEMBERS, seed=1)
    counts = Counter(seq.tolist())
    assert set(counts.values()) == {1, 2} and sum(v == 2 for v in counts.values()) == 10


def test_selection_is_seeded() -> None:
    a, _ = select(src(weight=0.5), MEMBERS, seed=1)
    b, _ = select(src(weight=0.5), MEMBERS, seed=1)
    c, _ = select(src(weight=0.5), MEMBERS, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
