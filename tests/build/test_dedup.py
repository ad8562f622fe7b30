from __future__ import annotations

import random

import numpy as np

from sft_builder.sources.base import Rejected
from sft_builder.steps.dedup import (
    ExactDedup,
    ExactDedupConfig,
    MinHasher,
    NearDedup,
    NearDedupConfig,
    optimal_params,
)

from .helpers import conv

rng = random.Random(5)
VOCAB = [f"w{i}" for i in range(3000)]


def text(n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def shingles(t: str, k: int = 5) -> set[tuple[str, ...]]:
    w = t.lower().split()
    return {tuple(w[i : i + k]) for i in range(len(w) - k + 1)}


def edit(t: str, every: int) -> str:
    w = t.split()
    for i in range(0, len(w), every):
        w[i] = "edited"
    return " ".join(w)


def test_signature_agreement_estimates_jaccard() -> None:
    h = MinHasher(num_perm=256, shingle_size=5, seed=3)
    base = text(400)
    for every in (200, 60, 25, 10):
        other = edit(base, every)
        a, b = shingles(base), shingles(other)
        true = len(a & b) / len(a | b)
        sa, sb = h.signatures([base, other])
        assert abs(float((sa == sb).mean()) - true) < 0.08, (every, true)


def test_signatures_do_not_depend_on_batching() -> None:
    docs = [text(rng.randint(3, 300)) for _ in range(40)]
    h = MinHasher(chunk=100)
    together = h.signatures(docs)
    alone = np.vstack([h.signatures([d]) for d in docs])
    assert np.array_equal(together, alone)
    assert np.array_equal(together, MinHasher(chunk=10**6).signatures(docs))


def test_optimal_params_fit_and_favour_the_threshold() -> None:
    b, r = optimal_params(0.8, 128)
    assert b * r <= 128
    p = lambda j: 1 - (1 - j**r) ** b  # noqa: E731
    assert p(0.95) > 0.95 and p(0.3) < 0.05


def test_exact_dedup_normalises_and_points_to_first() -> None:
    step = ExactDedup(ExactDedupConfig())
    items = list(
        step.run(
            [
                conv("Hello  there", "General Kenobi", cid="a"),
                conv("hello there", "GENERAL   kenobi ", cid="b", system="You are helpful."),
                conv("hello there", "general kenobi!", cid="c"),
            ]
        )
    )
    assert [getattr(i, "id", None) for i in items] == ["a", None, "c"]
    assert isinstance(items[1], Rejected) and items[1].duplicate_of == "a" and items[1].reason == "duplicate"


def test_exact_dedup_can_include_system() -> None:
    step = ExactDedup(ExactDedupConfig(include_system=True))
    out = list(step.run([conv("q", "a", cid="a", system="S1"), conv("q", "a", cid="b", system="S2")]))
    assert not any(isinstance(i, Rejected) for i in out)


def test_near_dedup_finds_edits_keeps_unrelated_and_order() -> None:
    base = [text(200) for _ in range(30)]
    items: list = [conv("question", t, cid=f"o{i}") for i, t in enumerate(base)]
    items.append(Rejected("s", "adapter", "bad", "f", 3, {}))
    items += [conv("question", edit(base[i], 100), cid=f"n{i}") for i in (3, 17)]
    items.append(
        conv("question", edit(base[5], 3), cid="far")
    )  # a third of the words changed: not a duplicate
    out = list(NearDedup(NearDedupConfig(batch_size=7)).run(items))
    assert len(out) == len(items)
    assert isinstance(out[30], Rejected) and out[30].step == "adapter"
    dups = {r.record["id"]: r.duplicate_of for r in out if isinstance(r, Rejected) and r.step == "near_dedup"}
    assert dups == {"n3": "o3", "n17": "o17"}


def test_shared_system_prompts_do_not_make_duplicates() -> None:
    system = "You are an AI assistant. " + text(300)
    items = [conv(text(8), text(12), cid=f"c{i}", system=system) for i in range(20)]
    out = list(NearDedup(NearDedupConfig()).run(items))
    assert not any(isinstance(i, Rejected) for i in out)


def test_near_dedup_skips_sources_switched_off() -> None:
    t = text(200)
    out = list(
        NearDedup(NearDedupConfig(), skip_sources=["code"]).run(
            [conv("q", t, cid="a"), conv("q", t, cid="b", source="code")]
        )
    )
    assert not any(isinstance(i, Rejected) for i in out)
