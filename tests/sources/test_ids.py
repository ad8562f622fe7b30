"""Ids are unique within a run: a file read twice stops the run with one line; the record ids are checked."""

from __future__ import annotations

import json

import pytest

from crystalmix.core.errors import UserError
from sft_builder.sources.base import make_adapter

from .conftest import FIX


@pytest.mark.parametrize(("name", "rel"), [
    ("sharegpt", "sharegpt/sharegpt_v43.json"), ("alpaca", "alpaca/code_alpaca.json"),
    ("guanaco", "guanaco/guanaco.jsonl"), ("conversations", "conversations/interchange.jsonl"),
    ("oasst1", "oasst1/flat.jsonl"), ("rosetta", "rosetta/rosetta_alpaca.json"), ("rosetta", "rosetta"),
])
def test_a_file_read_twice_is_a_user_error_naming_it(name: str, rel: str) -> None:
    """Ids come from file and line: a second pass over a file would repeat every id."""
    path = str(FIX / rel)
    with pytest.raises(UserError, match="read twice") as err:
        list(make_adapter(name, {}).stream([path, str(FIX / "guanaco" / "guanaco.jsonl"), path]
                                           if name != "guanaco" else [path, path]))
    assert str(err.value).startswith(str(FIX / rel.split("/")[0]))


def test_same_file_back_to_back_is_caught_too() -> None:
    path = str(FIX / "sharegpt" / "sharegpt_v43.json")
    with pytest.raises(UserError, match=f"{path}: read twice"):
        list(make_adapter("sharegpt", {}).stream([path, path]))


def test_sharegpt_records_sharing_an_id_field_get_distinct_ids(run_adapter, tmp_path) -> None:
    convs, _, _ = run_adapter("sharegpt", "sharegpt/evol.json")
    assert len({c.id for c in convs}) == len(convs)
    same = '{"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n'
    (tmp_path / "same.jsonl").write_text(same * 3)
    outs = list(make_adapter("sharegpt", {}).stream([str(tmp_path / "same.jsonl")]))
    assert [o.id for o in outs] == ["sharegpt/same.jsonl:1", "sharegpt/same.jsonl:2", "sharegpt/same.jsonl:3"]
    assert {o.meta["orig_id"] for o in outs} == {"x"}


def test_a_one_line_array_read_twice_back_to_back_is_caught(tmp_path) -> None:
    """Records sharing a line are told apart by their array position: a second pass repeats those too."""
    row = {"instruction": "q", "output": "a"}
    path = tmp_path / "one_line.json"
    path.write_text(json.dumps([row, row, row]))
    outs = list(make_adapter("alpaca", {}).stream([str(path)]))
    assert len({o.id for o in outs}) == 3
    with pytest.raises(UserError, match="read twice"):
        list(make_adapter("alpaca", {}).stream([str(path), str(path)]))
