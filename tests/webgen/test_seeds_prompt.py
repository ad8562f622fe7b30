"""Seed loading (ours and Alpaca's layout), seeded sampling, and the Jinja prompt."""

from __future__ import annotations

import pytest

from crystalmix.core.errors import UserError
from sft_builder.webgen.parse import parse_answer
from sft_builder.webgen.prompt import PromptTemplate
from sft_builder.webgen.seeds import load_seeds, sample_seeds


def test_bundled_seeds_are_many_distinct_and_complete():
    seeds = load_seeds()
    assert len(seeds) >= 60
    assert len({s.instruction for s in seeds}) == len(seeds)
    assert all(s.output.strip() for s in seeds)
    assert sum(bool(s.input) for s in seeds) >= 10  # some tasks come with material to work on


def test_alpaca_layout_is_read(realdata):
    seeds = load_seeds(realdata / "stanford_alpaca" / "seed_tasks.jsonl")
    assert len(seeds) == 175 and seeds[0].id == "seed_task_0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "not JSON"),
        ('{"instruction": "x"}\n', "no output"),
        ('{"instruction": "", "output": "y"}\n', "no instruction"),
        ("", "empty"),
    ],
)
def test_bad_seed_files_are_user_errors(tmp_path, content, message):
    p = tmp_path / "s.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_seeds(p)


def test_sampling_depends_only_on_seed_and_request():
    seeds = load_seeds()
    a = [sample_seeds(seeds, 3, 1, r) for r in range(20)]
    assert a == [sample_seeds(seeds, 3, 1, r) for r in range(20)]
    assert len({tuple(t.id for t in s) for s in a}) > 15
    assert a != [sample_seeds(seeds, 3, 2, r) for r in range(20)]
    assert all(len({t.id for t in s}) == 3 for s in a)
    with pytest.raises(UserError):
        sample_seeds(seeds[:2], 3, 1, 0)


def test_prompt_shows_the_seeds_and_leaves_the_next_item_open():
    seeds = load_seeds()
    shown = sample_seeds(seeds, 3, 0, 0)
    text = PromptTemplate().render(shown)
    assert "20" in text and text.rstrip().endswith("4. Instruction:")
    for i, s in enumerate(shown, 1):
        assert f"{i}. Instruction: {s.instruction}" in text
    # The examples in the prompt parse back into the seeds with our own parser.
    body = text[text.index("1. Instruction:") : text.rindex("###")]
    parsed = parse_answer(body, 1, cut_off=False)
    assert [(c.instruction, c.input, c.output) for c in parsed] == [
        (s.instruction, s.input, s.output) for s in shown
    ]


def test_bad_template_is_a_user_error(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("{% for x in seeds %}", encoding="utf-8")
    with pytest.raises(UserError, match="prompt template"):
        PromptTemplate(p)
    p.write_text("{{ nothing_here }}", encoding="utf-8")
    with pytest.raises(UserError, match="prompt template"):
        PromptTemplate(p).render(())


def test_seed_files_in_any_form_the_core_readers_read(tmp_path, realdata):
    """The Alpaca seed file as a one-line JSON array, gzipped: the same tasks (ids are the file's own)."""
    import gzip
    import json

    src = realdata / "stanford_alpaca" / "seed_tasks.jsonl"
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    p = tmp_path / "seeds.json.gz"
    p.write_bytes(gzip.compress(json.dumps(rows).encode()))
    assert load_seeds(p) == load_seeds(src)
    # without ids, a one-line array still gives every task its own id
    p.write_bytes(gzip.compress(json.dumps([{k: v for k, v in r.items() if k != "id"} for r in rows]).encode()))
    ids = [s.id for s in load_seeds(p)]
    assert len(set(ids)) == 175 and ids[:2] == ["line_1#1", "line_1#2"]


def test_a_bad_seed_line_after_good_ones_names_its_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n\n{not json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"s\.jsonl:3: not JSON"):
        load_seeds(p)
