"""Property tests: random and corrupted records never crash an adapter and are always accounted for.

Two levels: `adapter.run` on raw records, and every adapter through the paths `crystalmix convert`
(`convert_source`) and `crystalmix build` (`run_ingest`, with the clean step) take from a file on disk, with
valid and broken shapes mixed: no exception escapes (a bad file is a `UserError` naming it), ``read == kept +
rejected``, ids are unique, and what was kept reads back through the interchange adapter unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystalmix.core.errors import UserError
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
# the folder-record keys in a JSON file (a KeyError once) and the JSON form with odd values
rosetta = alpaca | st.fixed_dictionaries({}, optional={"task": maybe, "code": maybe, "language": maybe,
                                                       "description": maybe, "instruction": maybe})

# -- well-formed records with the faults real files have (blank turns, turns out of order, repeats) -----------
# Shapes above are mostly broken; these are mostly valid, so the repair and the kept side get exercised.
words = st.text(st.sampled_from("abc xyz\u00e9\u4e2d\n"), min_size=1, max_size=12).filter(lambda t: t.strip())
# a blank now and then (None, the simplest value to hypothesis, keeps the words)
content = st.tuples(words, st.sampled_from([None, None, None, None, None, None, None, None, "", " ", "\n\t"])).map(
    lambda t: t[0] if t[1] is None else t[1])


@st.composite
def rounds(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(role, content) turns: user/assistant rounds, then perhaps a system turn first, a leading answer, a
    repeated role, a trailing question."""
    turns: list[tuple[str, str]] = []
    for q, a in draw(st.lists(st.tuples(content, content), min_size=1, max_size=5)):
        turns += [("user", q), ("assistant", a)]
    if draw(st.booleans()):
        turns.insert(draw(st.integers(0, len(turns))), (draw(st.sampled_from(["user", "assistant"])),
                                                        draw(content)))
    if draw(st.booleans()):
        turns.insert(0, ("system", draw(content)))
    return turns


SHAREGPT_NAMES = {"user": ["human", "user"], "assistant": ["gpt", "assistant", "chatgpt"], "system": ["system"]}
small_ids = st.sampled_from(["x1_0", "x1_4", "x2", "x3"])  # repeats: ids must stay unique all the same


@st.composite
def sharegpt_ok(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(["conversations", "messages"]))
    turns = [{"from": draw(st.sampled_from(SHAREGPT_NAMES[r])), "value": c} if key == "conversations"
             else {"role": r, "content": c} for r, c in draw(rounds())]
    return {"id": draw(small_ids), key: turns}


def _guanaco_text(turns: list[tuple[str, str]]) -> str:
    names = {"user": "Human", "assistant": "Assistant", "system": "Human"}
    return "".join(f"### {names[r]}: {c}" for r, c in turns)


@st.composite
def conversations_ok(draw: st.DrawFn) -> dict[str, Any]:
    return {"id": draw(small_ids), "source": draw(st.sampled_from(["s", "t"])),
            "messages": [{"role": r, "content": c} for r, c in draw(rounds())],
            "meta": draw(st.sampled_from([{}, {"file": "f.json", "line": 3}, {"group": "g"}]))}


@st.composite
def oasst_ok(draw: st.DrawFn) -> dict[str, Any]:
    """A nested tree with alternating roles and unique message ids; its tree id from a small set, so a tree
    may come twice (the same, or another version)."""
    tree_id = draw(st.sampled_from(["T1", "T2", "T3"]))
    shape = draw(st.lists(st.recursive(st.just([]), lambda kids: st.lists(kids, max_size=3), max_leaves=6),
                          min_size=1, max_size=3))

    def node(children: list[Any], path: str, depth: int) -> dict[str, Any]:
        return {"message_id": f"{tree_id}{path}", "role": "prompter" if depth % 2 == 0 else "assistant",
                "text": draw(content), "rank": draw(st.none() | st.integers(0, 2)),
                "replies": [node(c, f"{path}.{i}", depth + 1) for i, c in enumerate(children)]}

    root = node(shape, "", 0)
    return {"message_tree_id": tree_id, "prompt": root} if draw(st.booleans()) else {**root,
                                                                                     "message_tree_id": tree_id}


alpaca_ok = st.fixed_dictionaries({"instruction": content, "output": content}, optional={"input": content})
rosetta_ok = st.fixed_dictionaries({"instruction": content, "output": content,
                                    "input": st.sampled_from(["Python", "Go", "C++", "", " "])})
sharegpt = sharegpt_ok() | sharegpt
alpaca = alpaca_ok | alpaca
guanaco = rounds().map(_guanaco_text).map(lambda t: {"text": t}) | guanaco
conversations = conversations_ok() | conversations
oasst = oasst_ok() | oasst
rosetta = rosetta_ok | rosetta



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
    assert len({c.id for c in kept}) == len(kept)
    if one_to_one:
        assert len(outs) == len(recs)
        if name != "conversations":  # an interchange record keeps its own provenance
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
@given(values=st.lists(st.one_of(rosetta, anything), max_size=6), unparsed=flags)
def test_rosetta_json_records_never_crash(values: list[Any], unparsed: list[bool]) -> None:
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


# -- through convert and build, from a file on disk ----------------------------------------------------------

RECORDS = {"sharegpt": sharegpt, "alpaca": alpaca, "guanaco": guanaco, "conversations": conversations,
           "oasst1": oasst, "rosetta": rosetta}
OPTIONS = {"sharegpt": [{}, {"trim_trailing_user": "false"}], "alpaca": [{}],
           "guanaco": [{}, {"trim_trailing_user": "false"}], "conversations": [{}, {"keep_source": "false"}],
           "oasst1": [{"paths": "all"}, {"paths": "best", "lang": "en"}], "rosetta": [{}, {"languages": "go"}]}


def _write_jsonl(path: Path, values: list[Any], unparsed: list[bool]) -> None:
    lines = []
    for v, bad in zip(values, unparsed + [False] * len(values), strict=False):
        line = json.dumps(v, default=str)
        lines.append("{" + line if bad else line)  # "{" before any JSON value is never JSON
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _read_back(out: Path, n_kept: int) -> None:
    """Kept conversations: unique ids, and the interchange adapter reads them back unchanged, unrepaired."""
    kept = [json.loads(x) for x in out.read_bytes().split(b"\n") if x]  # not splitlines: U+0085 is text
    assert len(kept) == n_kept and len({c["id"] for c in kept}) == n_kept
    adapter = make_adapter("conversations", {})
    again = list(adapter.stream([str(out)])) if kept else []
    assert [c.to_dict() if isinstance(c, Conversation) else c.reason for c in again] == kept
    assert not adapter.stats.fixes


def _through_convert(name: str, options: dict[str, str], path: Path, work: Path) -> None:
    from crystalmix.cli.convert import convert_source

    adapter = make_adapter(name, options)
    out = work / "out.jsonl"
    try:
        report = convert_source(adapter, [str(path)], out)
    except UserError as exc:  # a file the reader refuses (a bad first line): one line naming it
        assert str(path) in str(exc)
        return
    assert report["read"] == report["kept"] + report["rejected"] == sum(report["reasons"].values()) + report["kept"]
    rejects = [json.loads(x) for x in (work / "out.rejects.jsonl").read_bytes().split(b"\n") if x]
    assert len(rejects) == report["rejected"] and all(r["reason"] and r["file"] == str(path) for r in rejects)
    _read_back(out, report["kept"])


def _through_build(name: str, options: dict[str, str], path: Path, work: Path) -> None:
    from sft_builder.build import run_ingest
    from sft_builder.manifest import load_manifest

    manifest = {"seed": 1, "sources": [{"name": "s", "adapter": name, "inputs": path.name, "options": options}],
                "steps": {"clean": {}}}
    (work / "m.yaml").write_text(json.dumps(manifest))  # JSON is YAML
    loaded = load_manifest(work / "m.yaml")
    folder = work / "ingest"
    folder.mkdir()
    try:
        stats = run_ingest(loaded, loaded.source("s"), folder)
    except UserError as exc:
        assert str(path.name) in str(exc)
        return
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    _read_back(folder / "kept.jsonl", stats["kept"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(RECORDS)), data=st.data())
def test_every_adapter_through_convert_and_build(tmp_path_factory, name: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.one_of(RECORDS[name], anything), max_size=6), label="records")
    unparsed = data.draw(flags, label="unparsed")
    options = data.draw(st.sampled_from(OPTIONS[name]), label="options")
    work = tmp_path_factory.mktemp(name)
    path = work / "in.jsonl"
    _write_jsonl(path, values, unparsed)
    _through_convert(name, options, path, work)
    _through_build(name, options, path, work)


names = st.text(st.sampled_from("abcXYZ-_09"), min_size=1, max_size=6)
solution_bytes = st.binary(max_size=20) | st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass"))
tasks = st.dictionaries(names, st.tuples(st.none() | solution_bytes, st.dictionaries(
    names, st.dictionaries(names, solution_bytes, max_size=3), max_size=3)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=tasks, copies=st.integers(1, 2))
def test_rosetta_folders_through_convert_and_build(tmp_path_factory, layout: dict, copies: int) -> None:
    """Random RosettaCodeData layouts (missing descriptions, non-UTF-8 or empty files, a second checkout)."""
    work = tmp_path_factory.mktemp("rosetta")
    roots = [work / f"checkout{k}" for k in range(copies)]
    for root in roots:
        for task, (description, langs) in layout.items():
            folder = root / "Task" / task
            folder.mkdir(parents=True)
            if description is not None:
                (folder / "00DESCRIPTION").write_bytes(description)
            for lang, files in langs.items():
                (folder / lang).mkdir(exist_ok=True)
                for fname, body in files.items():
                    (folder / lang / fname).write_bytes(body)
    from crystalmix.cli.convert import convert_source

    adapter = make_adapter("rosetta", {})
    report = convert_source(adapter, [str(r) for r in roots], work / "out.jsonl")
    n_files = copies * sum(len(files) for _, langs in layout.values() for files in langs.values())
    assert report["records"] == report["read"] == n_files == report["kept"] + report["rejected"]
    _read_back(work / "out.jsonl", report["kept"])
