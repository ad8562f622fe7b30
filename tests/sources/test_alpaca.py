"""Alpaca adapter: the documented instruction/input join, column_map, record meta, and rejects."""

from __future__ import annotations

import pytest

from crystalmix.core.errors import UserError
from sft_builder.sources.alpaca import user_turn
from sft_builder.sources.base import make_adapter

from .conftest import turns


def test_code_alpaca_forms_and_rejects(run_adapter) -> None:
    convs, rejects, _ = run_adapter("alpaca", "alpaca/code_alpaca.json")
    assert [turns(c) for c in convs] == [
        [("user", "Write a function that adds two numbers."),
         ("assistant", "def add(a, b):\n    return a + b")],
        [("user", "Reverse the given list.\n\n[1, 2, 3]"), ("assistant", "[3, 2, 1]")],
        [("user", "Say hi."), ("assistant", "Hi!")],
    ]
    assert [(r.line, r.reason) for r in rejects] == [
        (5, "empty_content"), (6, "missing_field"), (7, "bad_field"), (8, "empty_content")]
    assert [c.id for c in convs] == ["alpaca/code_alpaca.json:2", "alpaca/code_alpaca.json:3",
                                     "alpaca/code_alpaca.json:4"]


def test_instruction_output_only_jsonl(run_adapter) -> None:
    convs, rejects, _ = run_adapter("alpaca", "alpaca/evol_codealpaca.jsonl")
    assert not rejects
    assert turns(convs[0]) == [("user", "Write a SQL query that selects every employee."),
                               ("assistant", "SELECT * FROM employees;")]


def test_webgen_meta_is_carried_and_a_bad_meta_rejected(run_adapter) -> None:
    convs, rejects, _ = run_adapter("alpaca", "alpaca/webgen.jsonl")
    assert convs[0].meta["record_meta"] == {"seed_tasks": ["seed_1", "seed_7"], "batch": 0,
                                            "most_similar": {"Make a page": 0.31}}
    assert [(r.line, r.reason) for r in rejects] == [(2, "bad_field")]


def test_column_map(run_adapter) -> None:
    convs, rejects, _ = run_adapter("alpaca", "alpaca/response_column.json",
                                    column_map="instruction:prompt,output:response,input:context")
    assert not rejects
    assert [turns(c)[0][1] for c in convs] == ["Add 1 and 2.", "Sort these.\n\n3 1 2"]
    _, rejects, _ = run_adapter("alpaca", "alpaca/response_column.json")
    assert {r.reason for r in rejects} == {"missing_field"}


def test_user_turn_join() -> None:
    assert user_turn("Do it.", "") == "Do it."
    assert user_turn("Do it.", "  <noinput> ") == "Do it."
    assert user_turn("Do it.", "data", join="\n") == "Do it.\ndata"


def test_unknown_column_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown fields answer"):
        make_adapter("alpaca", {"column_map": {"answer": "output"}})


def test_ids_stay_unique_across_files_with_the_same_name(tmp_path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.jsonl").write_text('{"instruction": "i", "output": "o"}\n')
    adapter = make_adapter("alpaca", {})
    ids = [c.id for c in adapter.stream([str(tmp_path / "a"), str(tmp_path / "b")])]
    assert ids == ["alpaca/train.jsonl:1", "alpaca/train.jsonl~2:1"]
