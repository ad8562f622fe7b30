from __future__ import annotations

import pytest

from crystalmix.core.records import Conversation, InvalidRecordError, Message


def conv(*pairs: tuple[str, str]) -> Conversation:
    return Conversation("c1", "test", tuple(Message(r, c) for r, c in pairs))  # type: ignore[arg-type]


def test_valid_conversation_round_trips() -> None:
    c = conv(("system", "be nice"), ("user", "hi"), ("assistant", "hello"))
    assert c.system == "be nice"
    assert [m.role for m in c.turns] == ["user", "assistant"]
    assert Conversation.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ((("assistant", "x"),), "bad_alternation"),
        ((("user", "x"),), "no_final_assistant"),
        ((("user", "x"), ("user", "y"), ("assistant", "z")), "bad_alternation"),
        ((("user", "x"), ("system", "y"), ("assistant", "z")), "misplaced_system"),
        ((("system", "x"),), "no_turns"),
    ],
)
def test_invalid_shapes_have_reasons(pairs: tuple[tuple[str, str], ...], reason: str) -> None:
    with pytest.raises(InvalidRecordError) as exc:
        conv(*pairs)
    assert exc.value.reason == reason


def test_message_validation() -> None:
    with pytest.raises(InvalidRecordError, match="empty_content"):
        Message("user", "  ")
    with pytest.raises(InvalidRecordError, match="unknown_role"):
        Message("tool", "x")  # type: ignore[arg-type]


def test_frozen() -> None:
    c = conv(("user", "x"), ("assistant", "y"))
    with pytest.raises(AttributeError):
        c.id = "other"  # type: ignore[misc]
    assert c.with_meta(group="g").group == "g" and c.group == "c1"
