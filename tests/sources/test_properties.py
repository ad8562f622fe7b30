"""Property tests: random and corrupted records never crash an adapter and are always accounted for."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalmix.core.records import Conversation
from sft_builder.sources.base import RawRecord, Rejected, UnparsedRecord, make_adapter

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=12)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
texts = st.text(max_size=30) | st.sampled_from(["", "   ", "hello", "### Human:", "### Assistant: x"])
maybe = st.one_of(texts, anything)
roles = st.sampled_from(["human", "gpt", "user", "assistant", "system", "chatgpt", "bing", "model",
                         "function_call", "observation", "prompter", "", "GPT"]) | st.text(max_size=5)
turn = st.fixed_dictionaries({}, optional={"from": roles, "value": maybe, "role": roles, "content": maybe,
                                           "weight": anything})
sharegpt = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=10) | st.integers() | anything, "idx": maybe, "system": maybe,
    "conversations": st.lists(turn, max_size=6) | anything, "messages": st.lists(turn, max_size=6)})
alpaca = st.fixed_dictionaries({}, optional={"instruction": maybe, "input": maybe, "output": maybe,
                                             "system": maybe, "meta": anything, "id": anything})
guanaco = st.fixed_dictionaries({"text": st.lists(st.sampled_from(
    ["### Human: ", "### Assistant: ", "### Heading\n", "text ", "", " "]) | texts,
    max_size=8).map("".join) | maybe})
conversations = st.fixed_dictionaries({}, optional={
    "id": maybe, "source": maybe, "meta": anything,
    "messages": st.lists(st.fixed_dictionaries({}, optional={"role": roles | st.sampled_from(
        ["user", "assistant", "system"]), "content": maybe}), max_size=5) | anything})
ids = st.sampled_from(["a", "b", "c", "d", "e"]) | st.none() | anything
oasst_row = st.fixed_dictionaries({"message_id": ids, "parent_id": ids}, optional={
    "message_tree_id": st.sampled_from(["t1", "t2"]) | anything, "role": st.sampled_from(
        ["prompter", "assistant"]) | anything, "text": maybe, "rank": st.integers(0, 3) | anything,
    "deleted": anything, "review_result": anything, "synthetic": anything, "lang": maybe})
oasst_tree = st.recursive(
    st.fixed_dictionaries({"role": st.sampled_from(["prompter", "assistant"]), "text": maybe,
                           "message_id": st.text(max_size=4)}),
    lambda inner: st.fixed_dictionaries({"role": st.sampled_from(["prompter", "assistant"]) | anything,
                                         "text": maybe, "message_id": st.text(max_size=4),
                                         "rank": st.integers(0, 2) | st.none(),
                                         "replies": st.lists(inner, max_size=3) | anything}),
    max_leaves=12)
oasst = oasst_row | oasst_tree | st.fixed_dictionaries({"message_tree_id": maybe,
                                                       "prompt": oasst_tree | anything})
flags = st.lists(st.booleans(), max_size=8)



def _records(values: list[Any], unparsed: list[bool]) -> list[RawRecord]:
    out = []
    unparsed = unparsed + [False] * (len(values) - len(unparsed))
    for i, (v, bad) in enumerate(zip(values, unparsed, strict=False)):
        data = UnparsedRecord(json.dumps(v, default=str)[:-1], "cut") if bad else v
        out.append(RawRecord(data, "prop.jsonl", i + 1))
    return out


def _check(name: str, values: list[Any], unparsed: list[bool], one_to_one: bool) -> None:
    adapter = make_adapter(name, {"paths": "all"} if name == "oasst1" else {})
    recs = _records(values, unparsed)
    outs = list(adapter.run(recs))
    kept = [o for o in outs if isinstance(o, Conversation)]
    rejected = [o for o in outs if isinstance(o, Rejected)]
    assert len(kept) + len(rejected) == len(outs) == adapter.stats.candidates
    lines = {r.line for r in recs}
    for r in rejected:
        assert r.reason and r.reason.replace("_", "").isalnum() and r.step == "adapter"
        assert r.file == "prop.jsonl" and r.line in lines
        json.dumps(r.to_dict(), default=str)  # a reject can always be written
    for c in kept:
        assert json.loads(c.to_json())["id"] == c.id
    if one_to_one:
        assert len(outs) == len(recs)
        assert {r.line for r in rejected}.isdisjoint({c.meta["line"] for c in kept if "line" in c.meta})


@SETTINGS
@given(values=st.lists(st.one_of(sharegpt, anything), max_size=6), unparsed=flags)
def test_sharegpt_never_crashes(values: list[Any], unparsed: list[bool]) -> None:
    _check("sharegpt", values, unparsed, one_to_one=True)


@SETTINGS
@given(values=st.lists(st.one_of(alpaca, anything), max_size=6), unparsed=flags)
def test_alpaca_and_rosetta_never_crash(values: list[Any], unparsed: list[bool]) -> None:
    _check("alpaca", values, unparsed, one_to_one=True)
    _check("rosetta", values, unparsed, one_to_one=True)


@SETTINGS
@given(values=st.lists(st.one_of(guanaco, anything), max_size=6), unparsed=flags)
def test_guanaco_never_crashes(values: list[Any], unparsed: list[bool]) -> None:
    _check("guanaco", values, unparsed, one_to_one=True)


@SETTINGS
@given(values=st.lists(st.one_of(conversations, anything), max_size=6),
       unparsed=flags)
def test_conversations_never_crash(values: list[Any], unparsed: list[bool]) -> None:
    _check("conversations", values, unparsed, one_to_one=True)


@SETTINGS
@given(values=st.lists(st.one_of(oasst, anything), max_size=8), unparsed=flags)
def test_oasst1_never_crashes(values: list[Any], unparsed: list[bool]) -> None:
    _check("oasst1", values, unparsed, one_to_one=False)
    adapter = make_adapter("oasst1", {"paths": "best", "lang": "en"})
    outs = list(adapter.run(_records(values, unparsed)))
    assert len(outs) == adapter.stats.candidates


@SETTINGS
@given(values=st.lists(st.one_of(sharegpt, alpaca), min_size=1, max_size=5))
def test_every_record_is_kept_or_rejected_by_line(values: list[Any]) -> None:
    """The lines of kept and rejected records are exactly the input lines: nothing vanishes."""
    for name in ("sharegpt", "alpaca"):
        adapter = make_adapter(name, {})
        outs = list(adapter.run(_records(values, [])))
        seen = sorted(o.meta["line"] if isinstance(o, Conversation) else o.line for o in outs)
        assert seen == list(range(1, len(values) + 1))


GOOD_LINES = [json.dumps({"id": f"x{i}_0", "conversations": [{"from": "human", "value": f"q{i} \u00e9"},
                                                           {"from": "gpt", "value": f"a{i}"}]})
              for i in range(6)]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), max_size=4),
       truncate=st.integers(0, 10**6), as_array=st.booleans(), compress=st.sampled_from(["", ".gz", ".zst"]))
def test_corrupted_files_stop_cleanly_or_account_for_every_record(
        tmp_path_factory, cuts: list[tuple[int, bytes]], truncate: int, as_array: bool, compress: str) -> None:
    """Bytes flipped or cut anywhere: the reader raises `UserError` or every record is kept or rejected."""
    import gzip

    import zstandard

    from crystalmix.core.errors import UserError

    text = ("[\n" + ",\n".join(GOOD_LINES) + "\n]\n") if as_array else "\n".join(GOOD_LINES) + "\n"
    blob = bytearray(text.encode())
    for pos, junk in cuts:
        pos %= len(blob)
        blob[pos:pos + len(junk)] = junk
    blob = blob[: max(1, truncate % (len(blob) + 1))]
    if compress == ".gz":
        packed = gzip.compress(bytes(blob))
    elif compress == ".zst":
        packed = zstandard.ZstdCompressor().compress(bytes(blob))
    else:
        packed = bytes(blob)
    path = tmp_path_factory.mktemp("corrupt") / (("data.json" if as_array else "data.jsonl") + compress)
    path.write_bytes(packed)
    adapter = make_adapter("sharegpt", {})
    try:
        outs = list(adapter.stream([str(path)]))
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert len(outs) == adapter.stats.records == adapter.stats.candidates
