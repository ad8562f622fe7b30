from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from crystalmix.core.records import Conversation
from sft_builder.build import build
from sft_builder.manifest import load_manifest
from sft_builder.sources.base import Rejected, make_adapter
from sft_builder.steps.dedup import (
    DECIDERS,
    ExactDedup,
    ExactDedupConfig,
    KeepOrder,
    Members,
    MinHasher,
    NearDedup,
    NearDedupConfig,
    choose,
    keep_order,
    optimal_params,
    rank_key,
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


def test_exact_dedup_normalises_and_points_to_the_kept_member() -> None:
    step = ExactDedup(ExactDedupConfig())
    items = list(
        step.run(
            [
                conv("Hello  there", "General Kenobi", cid="a"),
                conv("hello there", "general kenobi", cid="b", system="You are helpful."),
                conv("hello there", "general kenobi!", cid="c"),
            ]
        )
    )
    assert [getattr(i, "id", None) for i in items] == ["a", None, "c"]  # the rejected one stays in place
    assert isinstance(items[1], Rejected) and items[1].duplicate_of == "a" and items[1].reason == "duplicate"
    assert "kept a (id)" in items[1].detail  # same source, no ranks, same length: the smaller id


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
    # earlier rejects pass straight through; conversations keep their order
    assert isinstance(out[0], Rejected) and out[0].step == "adapter"
    dups = {r.record["id"]: r.duplicate_of for r in out if isinstance(r, Rejected) and r.step == "near_dedup"}
    # same source, no ranks: the twin with more assistant text stays, whichever came first
    expect = {}
    for i in (3, 17):
        o, n = items[i], items[31 + (i == 17)]
        short, long_ = (o, n) if len(o.messages[1].content) < len(n.messages[1].content) else (n, o)
        expect[short.id] = long_.id
    assert dups == expect
    kept = [c.id for c in out if isinstance(c, Conversation)]
    assert kept == [c.id for c in items if isinstance(c, Conversation) and c.id not in dups]


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


# -- which member of a cluster is kept ------------------------------------------------------------------------
def test_rank_key_compares_rank_lists_where_branches_part() -> None:
    r = lambda *ranks: rank_key({"ranks": list(ranks)})  # noqa: E731
    assert r(0, 1) < r(0, 2) < r(1, 0)  # decided by the first answer that differs
    assert r(0, 0) < r(0)  # the branch that goes on beats the same branch cut short
    assert r(0, 3) < r(0, None)  # an unranked answer is worse than any rank
    assert r(9, 9) < rank_key({}) == rank_key({"ranks": "0"})  # no ranks: after every ranked conversation
    assert r(True) == r(None)  # a boolean is not a rank


def _members(keys: list[tuple[int, int, int, str]]) -> Members:
    m = Members()
    for k in keys:
        m.add(k)
    return m


def test_choose_follows_priority_rank_length_id_never_arrival() -> None:
    no = rank_key({})
    cases = {  # cluster -> (members, expected winner id)
        "priority": ([(1, 0, -900, "a"), (0, no, -5, "b")], "b"),
        "rank": ([(0, rank_key({"ranks": [1]}), -900, "a"), (0, rank_key({"ranks": [0]}), -5, "b")], "b"),
        "length": ([(0, no, -26, "a"), (0, no, -2078, "b")], "b"),
        "id": ([(0, no, -7, "b"), (0, no, -7, "a"), (0, no, -7, "c")], "a"),
    }
    rng_ = random.Random(0)
    for _ in range(5):  # any arrival order, clusters interleaved: the same winners
        rows = [(label, k) for label, (ks, _) in enumerate(cases.values()) for k in ks]
        rng_.shuffle(rows)
        members = _members([k for _, k in rows])
        winner = choose(np.array([label for label, _ in rows]), members)
        got = {label: members.id(int(winner[i])) for i, (label, _) in enumerate(rows)}
        assert got == {label: want for label, (_, want) in enumerate(cases.values())}
        # the total order near dedup walks agrees: sorted keys, ids breaking the ties
        assert [members.key(int(i)) for i in keep_order(members)] == sorted(k for _, k in rows)


def test_keep_order_puts_unknown_sources_after_known_ones() -> None:
    order = KeepOrder({"x": 0, "y": 1})
    assert [order.priority(s) for s in ("z", "y", "w", "z")] == [2, 1, 3, 2]


def test_exact_dedup_keeps_the_higher_priority_source_arriving_later() -> None:
    step = ExactDedup(ExactDedupConfig(), priorities={"best": 0, "other": 1})
    out = list(step.run([conv("q", "same answer", cid="o1", source="other"),
                         conv("q", "same answer", cid="b1", source="best")]))
    assert isinstance(out[0], Rejected) and out[0].duplicate_of == "b1" and "source priority" in out[0].detail
    assert isinstance(out[1], Conversation) and out[1].id == "b1"
    summary = step.log.summary()
    assert summary["clusters"] == 1 and summary["removed"] == 1 and summary["kept_later_arrival"] == 1
    assert summary["decided_by"]["source_priority"] == 1
    (sample,) = summary["samples"]
    assert sample["kept"]["id"] == "b1" and not sample["kept"]["first_seen"]
    assert [d["id"] for d in sample["dropped"]] == ["o1"] and sample["decided_by"] == "source_priority"


def test_near_dedup_keeps_the_full_answer_over_a_greeting() -> None:
    prompt = text(300)
    greeting = conv(prompt, "Hi, How can I help you?", cid="t/1", group="t")
    code = conv(prompt, "def f(xs):\n    return sorted(set(xs))[-2]  # " + text(20), cid="t/2", group="t")
    for items in ([greeting, code], [code, greeting]):
        out = list(NearDedup(NearDedupConfig()).run(items))
        kept = [c.id for c in out if isinstance(c, Conversation)]
        gone = [r for r in out if isinstance(r, Rejected)]
        assert kept == ["t/2"] and gone[0].record["id"] == "t/1" and "assistant chars" in gone[0].detail


def test_cluster_log_samples_say_what_was_kept_and_why() -> None:
    rng_ = random.Random(3)
    items = []
    for c in range(12):  # 12 clusters of 2-3 near copies, with and without ranks
        body = text(150)
        for k in range(rng_.randint(2, 3)):
            ranks = [k] if c % 2 else None
            items.append(conv("q", body + " x" * k, cid=f"c{c}-{k}", **({"ranks": ranks} if ranks else {})))
    items.append(conv("q", text(150), cid="alone"))
    step = NearDedup(NearDedupConfig())
    out = list(step.run(items))
    summary = step.log.summary()
    removed = [r for r in out if isinstance(r, Rejected)]
    assert summary["clusters"] == 12 and summary["removed"] == len(removed) == len(items) - 13
    assert sum(summary["decided_by"].values()) == 12
    assert summary["decided_by"]["oasst_rank"] == 6 and summary["decided_by"]["assistant_chars"] == 6
    assert len(summary["samples"]) == 5
    assert {s["decided_by"] for s in summary["samples"]} == {"oasst_rank", "assistant_chars"}
    for s in summary["samples"]:
        assert s["decided_by"] in DECIDERS and s["dropped"] and s["dropped_total"] >= len(s["dropped"])
        assert all(d["assistant_chars"] <= s["kept"]["assistant_chars"] or s["kept"]["ranks"] for d in s["dropped"])


# -- on the real OpenAssistant trees (../shared/realdata) ----------------------------------------------------
QUANTUM_SHORT = "oasst1/ab7cc949-0f4f-4f07-a824-ec381f0ab2ed"  # one round: a 3,002-char answer, follow-up unanswered
QUANTUM_FULL = "oasst1/c1bd4135-3679-4d66-8250-232fcfdda195"  # the same round and the follow-up's rank-0 answer
SHEETS_RANK0 = "oasst1/43e1f65f-4078-4002-a9c1-fcd3361040d7"  # "Yes, here it is in code blocks: ..." (rank 0)
SHEETS_RANK2 = "oasst1/97925c4d-fc7d-4058-97c9-80ffebba8486"  # the code alone (rank 2)


def _reverse_replies(msg: dict) -> dict:
    return {**msg, "replies": [_reverse_replies(r) for r in reversed(msg.get("replies") or [])]}


def _dedup(convs: list[Conversation]) -> tuple[set[str], dict[str, str | None]]:
    out = list(NearDedup(NearDedupConfig()).run(ExactDedup(ExactDedupConfig()).run(convs)))
    kept = {c.id for c in out if isinstance(c, Conversation)}
    return kept, {r.record["id"]: r.duplicate_of for r in out if isinstance(r, Rejected)}


def test_real_oasst_sibling_branches_keep_the_best_twin_in_any_order(realdata: Path, tmp_path: Path) -> None:
    """All branches of the real trees, as exported (siblings by rank) and with every sibling list reversed
    (as an export in creation order can have them): the same conversations survive."""
    src = realdata / "open_assistant" / "en_100_message.jsonl"
    flipped = tmp_path / "reversed.jsonl"
    flipped.write_text("".join(json.dumps(_reverse_replies(json.loads(line))) + "\n"
                               for line in src.read_text().splitlines()))
    runs = []
    for path in (src, flipped):
        convs = [o for o in make_adapter("oasst1", {"paths": "all"}).stream([str(path)])
                 if isinstance(o, Conversation)]
        runs.append((convs, *_dedup(convs)))
    (convs, kept, dups), (convs_r, kept_r, dups_r) = runs
    assert {c.id for c in convs} == {c.id for c in convs_r} and kept == kept_r and dups == dups_r
    assert len(dups) >= 30
    # first-seen-wins kept the conversation cut short and dropped its continuation; now the continuation stays
    assert QUANTUM_FULL in kept and dups[QUANTUM_SHORT] == QUANTUM_FULL
    # reversed, the rank-2 branch arrives first; the rank-0 branch is kept all the same
    order_r = [c.id for c in convs_r]
    assert order_r.index(SHEETS_RANK2) < order_r.index(SHEETS_RANK0)
    assert SHEETS_RANK0 in kept and dups[SHEETS_RANK2] == SHEETS_RANK0
    # every removed branch lost to a member at least as good by the documented order
    by_id = {c.id: c for c in convs}
    assert by_id[SHEETS_RANK0].meta["ranks"] == [0, 0] and by_id[SHEETS_RANK2].meta["ranks"] == [0, 2]
    order = KeepOrder()
    for gone, winner in dups.items():
        assert winner is not None and order.key(by_id[winner]) < order.key(by_id[gone])


OASST_MANIFEST = """\
seed: 1
sources:
  - {{name: msg, adapter: oasst1, inputs: {r}/open_assistant/en_100_message.jsonl, options: {{paths: all}}}}
  - {{name: tree, adapter: oasst1, inputs: {r}/open_assistant/en_100_tree.jsonl, options: {{paths: all}}}}
steps:
  exact_dedup: {{}}
  near_dedup: {{}}
"""


def test_real_oasst_build_reports_sampled_clusters_same_for_any_worker_count(
    realdata: Path, tmp_path: Path
) -> None:
    (tmp_path / "m.yaml").write_text(OASST_MANIFEST.format(r=realdata))
    m = load_manifest(tmp_path / "m.yaml")
    one = build(m, tmp_path / "w1", workers=1).report
    build(m, tmp_path / "w2", workers=2)
    for name in ("report.json", "report.md", "rejects/near_dedup.jsonl", "rejects/exact_dedup.jsonl"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    exact, near = one["dedup"]["exact_dedup"], one["dedup"]["near_dedup"]
    # the tree export repeats the message export: every exact cluster is decided by the sources' order
    assert exact["decided_by"]["source_priority"] == exact["clusters"] == exact["removed"] > 500
    assert all(s["kept"]["source"] == "msg" and s["dropped"][0]["source"] == "tree" for s in exact["samples"])
    assert near["removed"] == one["sources"]["msg"]["dropped"]["near_dedup:near_duplicate"]
    assert near["kept_later_arrival"] >= 1 and 1 <= len(near["samples"]) <= 5
    for s in near["samples"]:
        assert s["kept"]["ranks"] is not None and s["decided_by"] == "oasst_rank"
    md = (tmp_path / "w1" / "report.md").read_text()
    assert "## Duplicate clusters" in md and "(oasst rank)" in md and near["samples"][0]["kept"]["id"] in md
    rejects = [json.loads(line) for line in (tmp_path / "w1" / "rejects" / "near_dedup.jsonl").open()]
    short = next(r for r in rejects if r["record"]["id"] == QUANTUM_SHORT.replace("oasst1/", "msg/"))
    assert short["duplicate_of"] == QUANTUM_FULL.replace("oasst1/", "msg/") and "oasst rank" in short["detail"]


def _stage_file(path: Path, convs: list[Conversation]) -> Path:
    path.write_bytes(b"".join(c.to_json_bytes() for c in convs))
    return path


def _outcome(items: list[object]) -> list[tuple[str, str, str]]:
    return [(type(i).__name__, i.source, i.to_json() if isinstance(i, Conversation) else i.detail)  # type: ignore[attr-defined]
            for i in items]


def test_exact_dedup_over_stage_files_gives_what_run_gives(tmp_path: Path, monkeypatch: Any) -> None:
    """`run_files` (the first pass in blocks, as the workers do it) against `run` over the same records:
    the same stream out, the same clusters logged; skipped sources and the system prompt setting included."""
    import sft_builder.steps.dedup as dedup_mod

    monkeypatch.setattr(dedup_mod, "BLOCK_BYTES", 700)  # many blocks, lines cut across block reads
    base = [conv(f"q{i % 40}", f"answer {i % 40} " + "x" * (i // 100), source=("a", "b", "c")[i % 3], cid=f"id{i}",
                 system="be brief" if i % 5 == 0 else None) for i in range(300)]
    first = _stage_file(tmp_path / "one.jsonl", base[:170])
    second = _stage_file(tmp_path / "two.jsonl", base[170:])
    for cfg in (ExactDedupConfig(), ExactDedupConfig(include_system=True)):
        ref, files = (ExactDedup(cfg, skip_sources=["c"], priorities={"b": 0, "a": 1}) for _ in range(2))
        expected = list(ref.run(iter(base)))
        loaded: list[int] = []
        got = list(files.run_files([first, second], loaded.append))
        assert _outcome(got) == _outcome(expected)
        assert sum(isinstance(i, Rejected) for i in got) > 50
        assert sum(loaded) == len(base) and len(loaded) > 4
        assert files.log.summary() == ref.log.summary()
