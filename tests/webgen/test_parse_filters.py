"""Parsing numbered answers with format drift, and each per-candidate filter's named reason."""

from __future__ import annotations

import pytest

from sft_builder.webgen.filters import FilterConfig, first_rejection, needs_markup, scan_markup
from sft_builder.webgen.parse import Candidate, parse_answer
from sft_builder.webgen.seeds import load_seeds


def test_completion_style_answer_continues_the_open_item():
    text = (
        " Build a footer.\n4. Input:\n<noinput>\n4. Output:\n<footer>x</footer>\n###\n"
        "5. Instruction: Style a button.\n5. Input:\n<button>Go</button>\n"
        "5. Output:\n.btn { color: red; }\n###"
    )
    c = parse_answer(text, 4, cut_off=False)
    assert [(x.number, x.instruction, x.input, x.problem) for x in c] == [
        (4, "Build a footer.", "", None),
        (5, "Style a button.", "<button>Go</button>", None),
    ]
    assert c[0].output == "<footer>x</footer>"


@pytest.mark.parametrize(
    "header",
    [
        "4. Instruction:",
        "4) Instruction:",
        "**4. Instruction:**",
        "4. **Instruction:**",
        "### 4. instruction:",
        "4.Instruction :",
    ],
)
def test_small_format_drift_is_tolerated(header):
    text = f'{header} Make a card.\n4. Input: <No Input>\n4. Output:\n<div class="card">A</div>'
    (c,) = parse_answer(text, 4, cut_off=False)
    assert (c.instruction, c.input, c.output, c.problem) == (
        "Make a card.",
        "",
        '<div class="card">A</div>',
        None,
    )


def test_cut_off_drops_only_the_last_block_and_malformed_blocks_are_reported():
    text = (
        "4. Instruction: A b c d.\n4. Output:\n<p>ok</p>\n###\n"
        "5. Instruction: Only an instruction here.\n###\n"
        "6. Instruction: Twice.\n6. Instruction: Again.\n6. Output: x\n###\n"
        "7. Instruction: Cut here.\n7. Input:\n<noinput>\n7. Output:\n<div"
    )
    got = [(c.number, c.problem) for c in parse_answer(text, 4, cut_off=True)]
    assert got == [(4, None), (5, "malformed_block"), (6, "malformed_block"), (7, "cut_off")]
    assert parse_answer(text, 4, cut_off=False)[-1].problem is None


def cand(instruction: str, output: str = "<div>ok</div>") -> Candidate:
    return Candidate(4, instruction, "", output)


@pytest.mark.parametrize(
    ("instruction", "output", "reason"),
    [
        ("Make a nav.", "<nav></nav>", "instruction_too_short"),
        (" ".join(["word"] * 151), "<p>x</p>", "instruction_too_long"),
        ('"Quoted" start for a footer element please', "<footer>x</footer>", "starts_with_punctuation"),
        ("Écrire une page web en HTML", "<p>x</p>", "starts_non_ascii"),
        ("Sketch a wireframe for the home page layout", "<p>x</p>", "text_model_cannot_do"),
        ("Deploy the landing page to a server", "<p>x</p>", "text_model_cannot_do"),
        ("Write the HTML for a newsletter box", "   ", "empty_output"),
        ("Write the HTML for a newsletter box", "Use an input and a button.", "missing_markup"),
        ("Create a contact form with two fields", "<form><label>Name <input></label>", "broken_markup"),
        ("Wrap the text in a card component", "<div><span>x</div>", "broken_markup"),
    ],
)
def test_each_filter_names_its_reason(instruction, output, reason):
    assert first_rejection(cand(instruction, output), FilterConfig()) == reason


@pytest.mark.parametrize(
    ("instruction", "output"),
    [
        ("Write CSS for the page background and text colour", "body { background: #fff; }"),  # CSS-only task
        ("Show a list where items may omit end tags", "<ul><li>a<li>b</ul><p>one<p>two"),
        (
            "Embed an image and a video in the page markup",
            '<img src="a.png" alt="A"><video src="b.mp4"></video>',
        ),
        ("Write JavaScript that compares two numbers on the page", "```js\nif (a<b && c>d) {}\n```"),
    ],
)
def test_valid_answers_pass(instruction, output):
    assert first_rejection(cand(instruction, output), FilterConfig()) is None


def test_markup_scan_ignores_non_elements_and_reads_fenced_html():
    assert scan_markup("use <noinput> when a<b") == (0, 0)
    assert scan_markup("```html\n<div><p>x</div>\n```\n```css\na > b {}\n```") == (2, 0)
    assert needs_markup("Build an accessible form") and not needs_markup("Write CSS for the form inputs")


def test_every_bundled_seed_passes_the_filters():
    seeds = load_seeds()
    assert len(seeds) >= 60
    rejected = {
        s.id: first_rejection(Candidate(1, s.instruction, s.input, s.output), FilterConfig()) for s in seeds
    }
    assert {k: v for k, v in rejected.items() if v} == {}
    assert sum(needs_markup(s.instruction) for s in seeds) >= 10  # the markup rule is exercised by the seeds


def _six_seven_eight(seven_header: str, sep: str = "###\n") -> str:
    return (
        "6. Instruction: Build a pricing table for a bakery.\n6. Input:\n<noinput>\n6. Output:\n<table></table>\n"
        + sep
        + f"{seven_header} Write a landing page for a florist SEVEN.\n7. Input:\n<noinput>\n"
        "7. Output:\n<main>SEVEN</main>\n"
        + sep
        + "8. Instruction: Style a button for a florist shop.\n8. Input:\n<noinput>\n8. Output:\n.b { c: red; }\n"
    )


@pytest.mark.parametrize("header", ["7. Instruction", "7) Instruction", "**7. Instruction**", "7.Instruction"])
@pytest.mark.parametrize("sep", ["###\n", ""])
def test_a_header_without_its_colon_is_rejected_whole_and_leaks_nowhere(header, sep):
    got = parse_answer(_six_seven_eight(header, sep), 6, cut_off=False)
    assert [(c.number, c.problem) for c in got] == [(6, None), (7, "malformed_block"), (8, None)]
    assert got[0].output == "<table></table>"
    assert got[2].instruction == "Style a button for a florist shop."
    for c in got:
        if c.problem is None:
            assert "SEVEN" not in c.instruction + c.input + c.output


def test_an_output_or_input_header_without_colon_ends_the_field_before_it():
    text = (
        "4. Instruction: Make a card with a title.\n4. Input:\n<noinput>\n4. Output:\n<div>A</div>\n"
        "5. Instruction: Make a footer with links.\n5. Input\n<noinput>\n5. Output:\n<footer>LEAK</footer>\n"
    )
    got = parse_answer(text, 4, cut_off=False)
    assert [(c.number, c.problem) for c in got] == [(4, None), (5, "malformed_block")]
    assert got[0].output == "<div>A</div>"
    text = "4. Instruction: Make a card with a title.\n4. Output\n<div>A</div>\n"
    assert [c.problem for c in parse_answer(text, 4, cut_off=False)] == ["malformed_block"]


def test_a_numbered_list_inside_an_output_is_content():
    out = "<p>Steps:</p>\n1. Input validation runs first.\n2. Output is escaped.\n<p>Done</p>"
    text = f"4. Instruction: Make a form with validation.\n4. Input:\n<noinput>\n4. Output:\n{out}\n###\n"
    (c,) = parse_answer(text, 4, cut_off=False)
    assert (c.output, c.problem) == (out, None)


def test_text_after_a_separator_that_no_header_names_is_its_own_rejected_block():
    text = (
        "4. Instruction: Make a card with a title.\n4. Output:\n<div>A</div>\n###\n"
        "Write a navigation bar STRAY.\n5. Input:\n<noinput>\n5. Output:\n<nav>STRAY</nav>\n###\n"
        "6. Instruction: Make a footer with links.\n6. Output:\n<footer>F</footer>\n###\n"
        "I hope these tasks help STRAY!"
    )
    got = parse_answer(text, 4, cut_off=False)
    assert got[0].output == "<div>A</div>" and got[0].problem is None
    assert [c.number for c in got if c.problem is None] == [4, 6]
    assert all("STRAY" not in c.instruction + c.input + c.output for c in got if c.problem is None)
    assert sum(c.problem == "malformed_block" for c in got) == len(got) - 2
