"""Every record step on documents (issue 11): what makes sense for plain text, and nothing that assumes turns."""

from __future__ import annotations

import json
from pathlib import Path

from crystalmix.core.records import Conversation, Rejected, make_document
from sft_builder.steps.base import Drop
from sft_builder.steps.clean import Clean, CleanConfig
from sft_builder.steps.decontaminate import BenchmarkConfig, Decontaminate, DecontaminateConfig
from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig
from sft_builder.steps.language import Language, LanguageConfig
from sft_builder.steps.quality import Quality, QualityConfig

from .helpers import conv

PROSE = ("Graph theory studies graphs, which are mathematical structures used to model pairwise relations "
         "between objects. A graph is made up of vertices which are connected by edges, and the edges may be "
         "directed or undirected depending on the problem that is being modelled. ")
FRENCH = ("La théorie des graphes est la discipline mathématique et informatique qui étudie les graphes, "
          "lesquels sont des modèles abstraits de dessins de réseaux reliant des objets entre eux. ")


def doc(text: str, cid: str = "d1", source: str = "books") -> Conversation:
    return make_document(cid, source, text, {"file": "b.md", "line": 1})


def test_clean_rewrites_a_document_as_one_text() -> None:
    step = Clean(CleanConfig())
    out = step.apply(doc("\n\n# Title\u00a0here  \n\n\n\nBody.\n"))
    assert isinstance(out, Conversation) and out.kind == "document"
    assert out.text == "# Title here\n\nBody."
    assert step.changes["rewritten"] == 1
    assert step.apply(doc("Already clean.")) == doc("Already clean.")
    gone = step.apply(doc("\u200b \u200b"))
    assert isinstance(gone, Drop) and gone.reason == "empty_after_clean"


def test_language_decides_on_the_documents_prose() -> None:
    step = Language(LanguageConfig())
    assert step.apply(doc(PROSE * 3)) == doc(PROSE * 3)
    fr = step.apply(doc(FRENCH * 3))
    assert isinstance(fr, Drop) and fr.reason == "fr"
    code_only = doc("def f(x):\n    return x + 1\n\nprint(f(2))\n")
    assert step.apply(code_only) == code_only and step.changes["undecided"] == 1
    assert step.languages["en"] == 1 and step.languages["fr"] == 1


def test_quality_bounds_a_documents_length_not_its_rounds() -> None:
    step = Quality(QualityConfig(min_chars=20, max_chars=500, min_rounds=1))
    assert step.apply(doc(PROSE)) == doc(PROSE)
    short = step.apply(doc("tiny"))
    assert isinstance(short, Drop) and short.reason == "too_short"
    long = step.apply(doc(PROSE * 5))
    assert isinstance(long, Drop) and long.reason == "too_long"
    refusing = doc(PROSE + " As an AI language model, I cannot.")
    assert Quality(QualityConfig()).apply(refusing) == refusing  # refusals are looked for in answers ...
    hit = Quality(QualityConfig(refusals_in=("assistant", "text"))).apply(refusing)  # ... or where asked
    assert isinstance(hit, Drop) and hit.reason == "refusal"


def test_exact_and_near_dedup_on_documents() -> None:
    a = doc(PROSE * 2, "a")
    same = doc("  " + (PROSE * 2).upper(), "b", source="other")  # normalised equal
    near = doc(PROSE * 2 + "One more closing sentence.", "c")
    different = doc(FRENCH * 3, "d")
    as_chat = conv("Tell me about graphs.", PROSE * 2, cid="e")  # a conversation is never a document's twin
    out = list(ExactDedup(ExactDedupConfig(), priorities={"books": 0, "other": 1}).run([a, same, near, different,
                                                                                         as_chat]))
    dropped = [o for o in out if isinstance(o, Rejected)]
    assert [(r.record["id"], r.reason, r.duplicate_of) for r in dropped] == [("b", "duplicate", "a")]
    assert dropped[0].record["text"] == same.text, "rejects keep the document's interchange form"
    out = list(NearDedup(NearDedupConfig()).run([a, near, different]))
    dropped = [o for o in out if isinstance(o, Rejected)]
    # the longer document is kept (more trained text), the other points at it
    assert [(r.record["id"], r.reason, r.duplicate_of) for r in dropped] == [("a", "near_duplicate", "c")]
    kept = [o for o in out if isinstance(o, Conversation)]
    assert [k.id for k in kept] == ["c", "d"] and all(k.kind == "document" for k in kept)


def test_decontaminate_looks_into_documents(tmp_path: Path) -> None:
    problem = "Write a function to find the length of the longest run of consecutive equal characters in a string."
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"task_id": 7, "text": problem}) + "\n")
    step = Decontaminate(DecontaminateConfig(benchmarks=(BenchmarkConfig(name="mini", path=str(bench),
                                                                         fields=("text",), id_field="task_id"),)))
    hit = step.apply(doc(PROSE + "Exercise: " + problem))
    assert isinstance(hit, Drop) and hit.reason == "mini"
    assert step.apply(doc(PROSE)) == doc(PROSE)
