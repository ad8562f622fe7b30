"""Benchmark: the webgen ROUGE-L filter vs rouge_score in Alpaca's plain loop. Prints ONE JSON line.

5,000 candidate instructions are decided, in order, against a pool that starts at 15,000 and grows with every
kept candidate (up to 20,000). Ours: `RougePool.check_and_add`. Plain: Alpaca's loop - pre-tokenised pool,
`rouge_scorer._score_lcs` for every (candidate, pool item) pair, keep when the max F is <= 0.7. The plain loop
is timed on a sample of candidates (each against the pool exactly as it stood at that point) and scaled by the
total number of pairs. `agreement` is checked over ALL 5,000 decisions with rouge_score itself: every pair
whose exact upper bound (F <= 2*|bag intersection|/(m+n)) could pass the threshold is scored by `_score_lcs`.
Run: .venv/bin/python bench/webgen.py [--candidates 5000 --pool 15000 --sample 40 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sft_builder.webgen.similarity import RougePool  # noqa: E402

THRESHOLD = 0.7
VERBS = "create build write design code make add implement style show lay render refactor fix convert".split()
ADJ = (
    "responsive accessible sticky animated minimal dark light compact fluid semantic collapsible "
    "keyboard-friendly printable lazy-loaded gradient rounded bordered centered nested"
).split()
NOUNS = (
    "navbar footer header sidebar card modal tooltip carousel gallery table form button menu breadcrumb "
    "tabs accordion timeline banner hero dashboard pricing-table login-page signup-form search-box "
    "dropdown toast spinner progress-bar pagination badge avatar grid layout landing-page blog-post "
    "comment-section chat-widget calendar countdown stepper slider toggle checkbox radio-group"
).split()
CONTEXT = (
    "for a bakery, for a law firm, for a museum, for a gym, for a podcast, for an airline, for a school, "
    "for a bike shop, for a bank, for a hotel, for a dentist, for a zoo, for a charity, for a cinema, "
    "for a library, for a florist, for a startup, for a newspaper, for a recipe site, for a portfolio"
).split(", ")
TECH = (
    "using HTML and CSS, with flexbox, with CSS grid, in plain JavaScript, with ARIA attributes, "
    "with CSS variables, with a media query for phones, with keyframe animations, without JavaScript, "
    "with semantic landmarks, with form validation, with localStorage"
).split(", ")
EXTRA = (
    "that shows a badge, that closes on Escape, with three columns, with a hover effect, that loads data, "
    "with a dark mode, with an empty state, with icons, with a focus ring, that remembers its state"
).split(", ")


COLORS = "red blue teal amber violet slate olive coral navy crimson mint peach indigo ivory sand".split()
NAMES = (
    "Aster Birch Cedar Dune Ember Fjord Grove Harbor Iris Juniper Kestrel Lumen Maple Nimbus Orchid Pebble "
    "Quartz Raven Sage Tundra Umber Vale Willow Yarrow Zephyr"
).split()
OPENERS = [
    "{v} a {a} {n} {c}",
    "How would you {lv} a {a} {n} {c}?",
    "Please {lv} the {n} {c} so it is {a}",
    "I need a {a} {n} {c}; {lv} it",
    "For the {name} site, {lv} a {n} that is {a}",
]


def instruction(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    text = rng.choice(OPENERS).format(
        v=verb.capitalize(),
        lv=verb,
        a=rng.choice(ADJ),
        n=rng.choice(NOUNS).replace("-", " "),
        c=rng.choice(CONTEXT),
        name=rng.choice(NAMES),
    )
    clauses = [
        rng.choice(TECH),
        rng.choice(EXTRA),
        f"in {rng.choice(COLORS)} and {rng.choice(COLORS)}",
        f"showing {rng.randint(2, 12)} items",
        f"named {rng.choice(NAMES)} {rng.choice(NAMES)}",
    ]
    rng.shuffle(clauses)
    return text.rstrip("?") + " " + " ".join(clauses[: rng.randint(1, 4)]) + "."


def mutate(rng: random.Random, text: str) -> str:
    """A near-duplicate: a few words replaced, dropped or inserted (scores land around the threshold)."""
    words = text.rstrip(".").split()
    for _ in range(rng.randint(1, 5)):
        op, i = rng.random(), rng.randrange(len(words))
        if op < 0.5:
            words[i] = rng.choice(ADJ + NOUNS)
        elif op < 0.75 and len(words) > 4:
            del words[i]
        else:
            words.insert(i, rng.choice(ADJ + VERBS))
    return " ".join(words) + "."


def make_data(seed: int, n_pool: int, n_cand: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pool = [instruction(rng) for _ in range(n_pool)]
    cands: list[str] = []
    for _ in range(n_cand):
        r = rng.random()
        if r < 0.35:
            cands.append(mutate(rng, rng.choice(pool + cands)))
        elif r < 0.40:
            # 10 tokens with 3 replaced: LCS 7 of 10, F exactly at the threshold (kept under a strict ">")
            base = " ".join(f"w{rng.randrange(10**6)}" for _ in range(10))
            pool.append(base)
            w = base.split()
            for i in rng.sample(range(10), 3):
                w[i] = f"z{rng.randrange(10**6)}"
            cands.append(" ".join(w))
        else:
            cands.append(instruction(rng))
    return pool[:n_pool], cands


def plain_max(scorer: rouge_scorer.RougeScorer, cand: str, pool_tokens: list[list[str]]) -> float:
    ct = scorer._tokenizer.tokenize(cand)
    return max(rouge_scorer._score_lcs(ct, t).fmeasure for t in pool_tokens)


def levels(token_lists: list[list[str]], vocab: dict[str, int], depth: int) -> list[sparse.csr_matrix]:
    """Indicator matrices [count(token) >= k] for k = 1..depth; their products sum to the bag intersection."""
    mats = []
    for k in range(1, depth + 1):
        rows, cols = [], []
        for r, toks in enumerate(token_lists):
            counts: dict[int, int] = {}
            for t in toks:
                counts[vocab[t]] = counts.get(vocab[t], 0) + 1
            for c, n in counts.items():
                if n >= k:
                    rows.append(r)
                    cols.append(c)
        mats.append(
            sparse.csr_matrix(
                (np.ones(len(rows), np.int32), (rows, cols)), shape=(len(token_lists), len(vocab))
            )
        )
    return mats


def verify_all(scorer, pool0: list[str], cands: list[str], decisions: list[bool]) -> tuple[int, int]:
    """How many of our decisions rouge_score confirms (each candidate against the pool as it stood)."""
    tok = scorer._tokenizer.tokenize
    pool_t = [tok(p) for p in pool0]
    cand_t = [tok(c) for c in cands]
    vocab: dict[str, int] = {}
    for toks in pool_t + cand_t:
        for t in toks:
            vocab.setdefault(t, len(vocab))
    depth = max(max(np.unique(t, return_counts=True)[1], default=1) for t in pool_t + cand_t if t)
    everything = pool_t + cand_t  # pool order: the initial pool, then candidates (only kept ones count)
    lv_all = levels(everything, vocab, depth)
    lens = np.array([len(t) for t in everything], dtype=np.float64)
    kept_mask = np.concatenate([np.ones(len(pool_t), bool), np.array(decisions, bool)])
    agree = 0
    for start in range(0, len(cands), 500):
        idx = np.arange(start, min(start + 500, len(cands)))
        rows = len(pool_t) + idx
        overlap = sum((m[rows] @ m.T).toarray() for m in lv_all)
        bound = 2 * overlap / (lens[rows][:, None] + lens[None, :])
        for r, i in zip(rows, idx, strict=True):
            visible = kept_mask.copy()
            visible[r:] = False  # only the pool and the candidates kept before this one
            check = np.nonzero(visible & (bound[r - rows[0]] > THRESHOLD - 1e-9))[0]
            best = max(
                (rouge_scorer._score_lcs(cand_t[i], everything[j]).fmeasure for j in check), default=0.0
            )
            agree += (best <= THRESHOLD) == decisions[i]
    return agree, len(cands)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=5000)
    ap.add_argument("--pool", type=int, default=15000)
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pool0, cands = make_data(args.seed, args.pool, args.candidates)

    t0 = time.perf_counter()
    index = RougePool(THRESHOLD)
    index.extend(pool0)
    results = index.check_and_add(cands)
    fast_s = time.perf_counter() - t0
    decisions = [k for k, _ in results]
    kept_before = np.concatenate([[0], np.cumsum(decisions)[:-1]])
    pairs_total = int(sum(len(pool0) + kept_before))

    # Plain loop on a sample: random candidates plus the ones closest to the threshold.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(args.seed + 1)
    near = sorted(range(len(cands)), key=lambda i: abs(results[i][1].max_score - THRESHOLD))[
        : args.sample // 2
    ]
    sample = sorted(set(rng.sample(range(len(cands)), args.sample - len(near))) | set(near))
    pool_tokens = [scorer._tokenizer.tokenize(p) for p in pool0]
    kept_tokens = [
        scorer._tokenizer.tokenize(c) if k else None for c, k in zip(cands, decisions, strict=True)
    ]
    plain_s = 0.0
    pairs_timed = 0
    sample_agree = 0
    for i in sample:
        visible = pool_tokens + [t for t in kept_tokens[:i] if t is not None]
        t0 = time.perf_counter()
        best = plain_max(scorer, cands[i], visible)
        plain_s += time.perf_counter() - t0
        pairs_timed += len(visible)
        sample_agree += (best <= THRESHOLD) == decisions[i] and best == results[i][1].max_score
    plain_est = plain_s / pairs_timed * pairs_total

    agree, total = verify_all(scorer, pool0, cands, decisions)
    at_threshold = sum(1 for _, s in results if s.max_score == THRESHOLD)
    print(
        json.dumps(
            {
                "speedup": round(plain_est / fast_s, 1),
                "agreement": agree / total,
                "sample_agreement": sample_agree / len(sample),
                "fast_seconds": round(fast_s, 3),
                "plain_seconds_estimated": round(plain_est, 1),
                "plain_sample_candidates": len(sample),
                "pairs": pairs_total,
                "candidates": len(cands),
                "pool_start": len(pool0),
                "pool_end": len(index),
                "kept": int(sum(decisions)),
                "scores_at_threshold": at_threshold,
                "threshold": THRESHOLD,
            }
        )
    )


if __name__ == "__main__":
    main()
