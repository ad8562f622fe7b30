from __future__ import annotations

import pytest

from sft_builder.steps.base import Drop
from sft_builder.steps.quality import Quality, QualityConfig

from .helpers import conv


@pytest.mark.parametrize(
    ("cfg", "turns", "reason"),
    [
        (QualityConfig(min_chars=50), ("hi", "hello"), "too_short"),
        (QualityConfig(max_chars=10), ("a long question", "a long answer"), "too_long"),
        (QualityConfig(min_rounds=2), ("q", "a"), "too_few_rounds"),
        (QualityConfig(max_rounds=1), ("q", "a", "q2", "a2"), "too_many_rounds"),
        (QualityConfig(), ("Tell me a joke", "As an  AI Language Model, I can't joke."), "refusal"),
        (QualityConfig(), ("Tell me", "I\u2019m sorry, but as an AI I have no views."), "refusal"),
        (QualityConfig(blocked_words=("casino",)), ("Best Casino?", "Try the library."), "blocked_word"),
    ],
)
def test_drop_reasons(cfg: QualityConfig, turns: tuple[str, ...], reason: str) -> None:
    out = Quality(cfg).apply(conv(*turns))
    assert isinstance(out, Drop) and out.reason == reason


def test_kept_cases() -> None:
    q = Quality(QualityConfig(blocked_words=("casino",)))
    assert not isinstance(q.apply(conv("What is occasional?", "Occasional means now and then.")), Drop)
    # a refusal phrase in the user turn is a question, not a refusal
    assert not isinstance(q.apply(conv("Are you an AI language model?", "Yes, I am an assistant.")), Drop)


def test_system_prompt_does_not_count_towards_length() -> None:
    c = conv("q", "a", system="x" * 500)
    assert isinstance(Quality(QualityConfig(min_chars=10)).apply(c), Drop)
