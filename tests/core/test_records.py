"""The record types: validation on construction, the one interchange line, the one reject line and writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from crystalmix.core.records import (
    Conversation,
    InvalidRecordError,
    Message,
    Rejected,
    RejectWriter,
    build_conversation,
    make_conversation,
    make_messages,
    read_rejects,
)


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


# -- lone surrogates: refused by the record type itself, whichever constructor builds it ------------------
SURROGATE = "Hello \ud800"


@pytest.mark.parametrize("build", [
    lambda: Message("user", SURROGATE),
    lambda: make_messages([("user", SURROGATE), ("assistant", "ok")]),
    lambda: build_conversation("c", "s", ("user", "assistant"), ["hi", "caf\udce9"], {}),
    lambda: Conversation.from_dict({"id": "c", "source": "s", "messages": [
        {"role": "user", "content": "hi \u2013 \U0001f600"}, {"role": "assistant", "content": SURROGATE}]}),
])
def test_lone_surrogates_are_invalid_unicode(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidRecordError) as exc:
        build()
    assert exc.value.reason == "invalid_unicode"


def test_valid_non_ascii_passes_every_constructor() -> None:
    text = "dash \u2013, emoji \U0001f600, CJK \u4e2d\u6587, caf\u00e9"
    a = Conversation("c", "s", (Message("user", text), Message("assistant", text)))
    b = make_conversation("c", "s", make_messages([("user", text), ("assistant", text)]), {})
    c = build_conversation("c", "s", ("user", "assistant"), [text, text], {})
    assert a == b == c and Conversation.from_dict(json.loads(a.to_json_bytes())) == a


# -- meta: the provenance keys later steps compute with are checked when the record is built -------------
@pytest.mark.parametrize(("meta", "bad"), [
    ({"line": "12"}, "meta.line"), ({"line": 1.5}, "meta.line"), ({"line": True}, "meta.line"),
    ({"line": -1}, "meta.line"), ({"file": 3}, "meta.file"), ({"group": ["g"]}, "meta.group"),
])
def test_bad_meta_types_are_rejected(meta: dict[str, object], bad: str) -> None:
    msgs = (Message("user", "hi"), Message("assistant", "ok"))
    for make in (lambda: Conversation("c", "s", msgs, meta),
                 lambda: make_conversation("c", "s", msgs, dict(meta)),
                 lambda: build_conversation("c", "s", ("user", "assistant"), ["hi", "ok"], dict(meta)),
                 lambda: Conversation.from_dict({"id": "c", "source": "s", "meta": meta,
                                                 "messages": [m.to_dict() for m in msgs]})):
        with pytest.raises(InvalidRecordError, match=bad) as exc:
            make()
        assert exc.value.reason == "bad_meta"
    with pytest.raises(InvalidRecordError, match="bad_meta"):
        Conversation.from_dict({"id": "c", "source": "s", "meta": [1], "messages": [m.to_dict() for m in msgs]})


# -- the one interchange writer ----------------------------------------------------------------------------
def test_interchange_line_is_canonical() -> None:
    c = Conversation("x/1", "src", (Message("user", "q \u2013"), Message("assistant", "a")),
                     {"line": 3, "file": "f.json", "group": "g", "orig_id": "o", "extra": {"z": 1, "a": [2]}})
    line = c.to_json_bytes()
    assert line == (b'{"id":"x/1","messages":[{"content":"q \xe2\x80\x93","role":"user"},'
                    b'{"content":"a","role":"assistant"}],"meta":{"extra":{"a":[2],"z":1},"file":"f.json",'
                    b'"group":"g","line":3,"orig_id":"o"},"source":"src"}\n')
    # the same conversation, meta built in another key order: the same bytes
    again = Conversation("x/1", "src", c.messages, dict(reversed(list(c.meta.items()))))
    assert again.to_json_bytes() == line and c.to_json() == line[:-1].decode()
    assert Conversation.from_dict(json.loads(line)) == c


def test_interchange_line_fallbacks() -> None:
    msgs = (Message("user", "q"), Message("assistant", "a"))
    big = Conversation("c", "s", msgs, {"big": 2**70})  # beyond orjson's 64 bits: json writes it, same layout
    assert big.to_json_bytes() == b'{"id":"c","messages":[{"content":"q","role":"user"},' \
                                  b'{"content":"a","role":"assistant"}],"meta":{"big":1180591620717411303424},' \
                                  b'"source":"s"}\n'
    with pytest.raises(InvalidRecordError) as exc:
        Conversation("c", "s", msgs, {"orig_id": "x\udc80"}).to_json_bytes()
    assert exc.value.reason == "invalid_unicode"


# -- the one reject type and its writer --------------------------------------------------------------------
def test_reject_line_is_sorted_compact_and_keeps_broken_unicode() -> None:
    r = Rejected("s", "adapter", "invalid_unicode", "f.jsonl", 2, {"b": "x\ud83d", "a": 1}, "detail")
    line = r.to_json_bytes()
    assert line == (b'{"detail":"detail","file":"f.jsonl","line":2,"reason":"invalid_unicode",'
                    b'"record":{"a":1,"b":"x\\ud83d"},"source":"s","step":"adapter"}\n')
    assert json.loads(line)["record"]["b"] == "x\ud83d"  # escaped, not lost
    ok = Rejected("s", "near_dedup", "near_duplicate", "f", 1, {"k": "\u2013"}, duplicate_of="s/0")
    assert json.loads(ok.to_json_bytes())["duplicate_of"] == "s/0" and "\u2013".encode() in ok.to_json_bytes()


def test_rejected_of_a_conversation_carries_its_provenance() -> None:
    c = Conversation("c", "src", (Message("user", "q"), Message("assistant", "a")), {"file": "in.json", "line": 7})
    r = Rejected.of(c, "quality", "too_short", "3 chars", duplicate_of=None)
    assert (r.source, r.step, r.reason, r.file, r.line, r.detail) == ("src", "quality", "too_short", "in.json", 7,
                                                                       "3 chars")
    assert Conversation.from_dict(r.record) == c


def test_reject_writer_is_atomic_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    rejects = [Rejected("s", "adapter", why, "f", i, {"i": i}) for i, why in enumerate(["a", "b", "a"], 1)]
    with RejectWriter(path) as w:
        w.write_all(rejects)
        assert not path.exists()  # appears only when complete
    assert path.read_bytes() == b"".join(r.to_json_bytes() for r in rejects)
    assert w.counts == {"a": 2, "b": 1} and w.total == 3
    assert [d["line"] for d in read_rejects(path)] == [1, 2, 3]
    with pytest.raises(RuntimeError), RejectWriter(tmp_path / "failed.jsonl") as w2:
        w2.write(rejects[0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [path]  # no partial file, no temporary left behind


# -- documents: the second kind of record, one `text` message -----------------------------------------------
def test_document_round_trips_through_its_own_interchange_line() -> None:
    from crystalmix.core.records import make_document

    d = make_document("d1", "books", "# Chapter 1\n\nText.", {"file": "b.md", "line": 1})
    assert (d.kind, d.text, d.system) == ("document", "# Chapter 1\n\nText.", None)
    line = json.loads(d.to_json_bytes())
    assert line == {"id": "d1", "source": "books", "text": "# Chapter 1\n\nText.", "meta": {"file": "b.md", "line": 1}}
    assert d.to_dict() == line
    assert Conversation.from_dict(line) == d
    # a parquet row of the build holds both columns: empty messages and the text
    assert Conversation.from_dict({**line, "messages": []}) == d
    c = conv(("user", "x"), ("assistant", "y"))
    assert (c.kind, c.text) == ("conversation", None)
    assert Conversation.from_dict({**c.to_dict(), "text": None}) == c


@pytest.mark.parametrize(("record", "reason"), [
    ({"id": "d", "source": "s", "text": "  \n"}, "empty_content"),
    ({"id": "d", "source": "s", "text": 3}, "bad_content"),
    ({"id": "d", "source": "s", "text": "x", "messages": [{"role": "user", "content": "q"}]}, "text_and_messages"),
    ({"id": "d", "source": "s", "messages": [{"role": "user", "content": "q"}, {"role": "text", "content": "t"}]},
     "misplaced_text"),
])
def test_bad_documents_have_reasons(record: dict, reason: str) -> None:
    with pytest.raises(InvalidRecordError) as exc:
        Conversation.from_dict(record)
    assert exc.value.reason == reason


def test_text_is_not_a_chat_role() -> None:
    from crystalmix.core.records import ROLES

    assert "text" not in ROLES  # adapters' role maps cannot send a turn there
    with pytest.raises(InvalidRecordError) as exc:
        build_conversation("c", "s", ("user", "text"), ["q", "t"], {})
    assert exc.value.reason == "misplaced_text"


# -- an empty final answer: refused unless the caller asks for it (LLM360's faithful mode) -------------------
def test_empty_final_answer_only_when_allowed() -> None:
    record = {"id": "c", "source": "s", "messages": [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": ""}]}
    with pytest.raises(InvalidRecordError, match="empty_content"):
        Conversation.from_dict(record)
    c = Conversation.from_dict(record, allow_empty_final_answer=True)
    assert [(m.role, m.content) for m in c.messages] == [("user", "q"), ("assistant", "")]
    assert Conversation.from_dict(c.to_dict(), allow_empty_final_answer=True) == c
    with pytest.raises(InvalidRecordError, match="empty_content"):  # only the last answer may be empty
        Conversation.from_dict({**record, "messages": [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": ""},
                                                       {"role": "user", "content": "q2"},
                                                       {"role": "assistant", "content": "a2"}]},
                               allow_empty_final_answer=True)
    with pytest.raises(InvalidRecordError, match="empty_content"):
        build_conversation("c", "s", ("user", "assistant"), ["q", ""], {})
    assert build_conversation("c", "s", ("user", "assistant"), ["q", ""], {}, allow_empty_final_answer=True) == c
