"""Guanaco text form: only the exact role markers split turns; headings inside replies survive."""

from __future__ import annotations

from .conftest import turns


def test_guanaco_turns_headings_and_rejects(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("guanaco", "guanaco/guanaco.jsonl")
    assert turns(convs[0]) == [
        ("user", "How do I bake bread?"),
        ("assistant", "### Ingredients\n- flour\n- water\n\n### Steps\nMix and bake."),
        ("user", "How long?"),
        ("assistant", "About 40 minutes."),
    ]
    assert turns(convs[1]) == [("user", "Hi there"), ("assistant", "Hello!")]
    assert turns(convs[2]) == [("user", "Then me."), ("assistant", "And me again.")]
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "no_turn_markers"), (4, "text_outside_turns"), (6, "missing_field")]
    assert adapter.stats.fixes == {"dropped_trailing_user": 1, "dropped_leading_assistant": 1}
