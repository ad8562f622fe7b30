"""Small builders for conversations used across the filter and build tests."""

from __future__ import annotations

from crystalmix.core.records import Conversation, Message


def conv(
    *turns: str, system: str | None = None, cid: str = "c1", source: str = "s", **meta: object
) -> Conversation:
    """A conversation from alternating user/assistant texts."""
    msgs = [Message("system", system)] if system else []
    msgs += [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return Conversation(cid, source, tuple(msgs), {"file": "f.jsonl", "line": 1, **meta})
