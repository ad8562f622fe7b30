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
