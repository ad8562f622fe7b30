"""The ROUGE-L pool gives rouge_score's scores and Alpaca's keep/reject decisions exactly."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, tokenize

from sft_builder.webgen.similarity import RougePool, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
WORDS = "create a the page form html css button nav grid flex card modal menu footer for with and".split()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_tokens_match_rouge_score(text):
    assert rouge_tokens(text) == tokenize.tokenize(text, None)


def plain_decisions(pool: list[str], candidates: list[str], threshold: float) -> list[tuple[bool, float]]:
    """Alpaca's loop with rouge_score, the reference."""
    toks = [SCORER._tokenizer.tokenize(p) for p in pool]
    out = []
    for c in candidates:
        ct = SCORER._tokenizer.tokenize(c)
        scores = [rouge_scorer._score_lcs(ct, t).fmeasure for t in toks]
        best = max(scores) if scores else 0.0
        keep = best <= threshold
        out.append((keep, best))
        if keep:
            toks.append(ct)
    return out


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.3, 0.5, 0.7]))
def test_decisions_and_scores_equal_rouge_score(seed, threshold):
    rng = random.Random(seed)
    pool = [sentence(rng) for _ in range(rng.randint(0, 15))]
    cands = [sentence(rng) for _ in range(rng.randint(1, 30))]
    index = RougePool(threshold)
    index.extend(pool)
    got = index.check_and_add(cands)
    want = plain_decisions(pool, cands, threshold)
    assert [(k, s.max_score) for k, s in got] == want  # exact floats, not approx


def test_score_exactly_at_the_threshold_is_kept():
    # 10 tokens each, LCS 7: P = R = 0.7 so F is 0.7 up to rouge_score's own rounding; strict ">" keeps it.
    base = "one two three four five six seven eight nine ten"
    near = "one two three four five six seven x y z"
    f = SCORER.score(base, near)["rougeL"].fmeasure
    pool = RougePool(threshold=f)
    pool.extend([base])
    ((keep, sim),) = pool.check_and_add([near])
    assert keep and sim.max_score == f
    tighter = RougePool(threshold=f - 1e-12)
    tighter.extend([base])
    assert tighter.check_and_add([near])[0][0] is False


def test_candidates_in_one_batch_are_checked_against_each_other_and_limit_stops_early():
    pool = RougePool(0.7)
    out = pool.check_and_add(
        ["build a red nav bar", "build a red nav bar now", "write a grid card", "x y z"], limit=2
    )
    assert [k for k, _ in out] == [True, False, True]  # the fourth was never judged: the limit was reached
    assert len(pool) == 2
    assert out[1][1].most_similar[0][0] == "build a red nav bar"


def test_metadata_lists_the_most_similar_first():
    pool = RougePool(0.99, top_k=2)
    pool.extend(["make a blue footer", "make a blue footer with links", "unrelated words here"])
    ((_, sim),) = pool.check_and_add(["make a blue footer with two links"])
    assert [t for t, _ in sim.most_similar] == ["make a blue footer with links", "make a blue footer"]
    scores = [
        SCORER.score("make a blue footer with two links", p)["rougeL"].fmeasure
        for p in ["make a blue footer", "make a blue footer with links", "unrelated words here"]
    ]
    assert sim.mean_score == sum(scores) / 3 or abs(sim.mean_score - sum(scores) / 3) < 1e-12
