"""The one config builder: coercion, unknown keys, ranges, rules between fields, paths, and YAML aliases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from crystalmix.core.config import (
    ALIAS_NODE_LIMIT,
    Inline,
    OptionText,
    YamlDoc,
    at_least,
    between,
    build,
    spec,
)
from crystalmix.core.errors import UserError


@dataclass(frozen=True, slots=True)
class Inner:
    name: str
    weight: float = field(default=1.0, metadata=spec(at_least(0)))


@dataclass(frozen=True, slots=True)
class Cfg:
    count: int = field(default=1, metadata=spec(at_least(1)))
    rate: float = field(default=0.5, metadata=spec(between(0, 1)))
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    label: str | None = None
    items: tuple[str, ...] = ()
    table: dict[str, str] = field(default_factory=dict)
    inner: Inner = field(default_factory=lambda: Inner("x"))
    many: tuple[Inner, ...] = ()
    pairs: tuple[tuple[str, Inner], ...] = ()
    low: int = 0
    high: int = 10

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.low > self.high:
            yield "high", "must be >= low"


def test_values_are_coerced_to_the_declared_types() -> None:
    c = build(Cfg, {"count": "3", "rate": "0.25", "flag": "yes", "mode": "b", "items": ["p", "q"],
                    "table": {"k": "v"}, "inner": {"name": "n", "weight": 2},
                    "many": [{"name": "m"}], "pairs": {"z": {"name": "zz"}, "a": {"name": "aa"}}})
    assert (c.count, c.rate, c.flag, c.mode, c.items, c.table) == (3, 0.25, True, "b", ("p", "q"), {"k": "v"})
    assert c.inner == Inner("n", 2.0) and c.many == (Inner("m"),)
    assert c.pairs == (("a", Inner("aa")), ("z", Inner("zz")))  # a mapping, kept sorted by key
    assert build(Cfg, None) == Cfg()


def test_a_string_for_a_list_is_one_item_from_a_manifest_and_comma_separated_from_a_command_line() -> None:
    assert build(Cfg, {"items": "I'm sorry, but"}).items == ("I'm sorry, but",)
    assert build(Cfg, {"items": "en, de"}, text=True).items == ("en", "de")
    assert build(Cfg, {"table": "a:b,c:d"}, text=True).table == {"a": "b", "c": "d"}
    with pytest.raises(UserError, match="table: must be a mapping"):
        build(Cfg, {"table": "a:b"})


@pytest.mark.parametrize(("raw", "message"), [
    ({"count": "many"}, "count: must be an integer, got 'many'"),
    ({"count": 2.5}, "count: must be an integer, got 2.5"),
    ({"count": True}, "count: must be an integer, got true"),
    ({"count": 0}, "count: must be >= 1, got 0"),
    ({"rate": float("nan")}, "rate: must be a finite number, got nan"),
    ({"rate": float("inf")}, "rate: must be a finite number, got inf"),
    ({"rate": "1e300"}, "rate: must be >= 0 and <= 1, got 1e+300"),
    ({"flag": "maybe"}, "flag: must be true or false, got 'maybe'"),
    ({"mode": "c"}, "mode: must be one of a, b, got 'c'"),
    ({"label": [1, 2]}, "label: must be a string, got a list [1, 2]"),
    ({"label": False}, "label: must be a string, got false (quote it"),
    ({"items": [1]}, "items[0]: must be a string, got 1"),
    ({"table": {"k": ["v"]}}, "table.k: must be a string, got a list"),
    ({"table": ["k"]}, "table: must be a mapping, got a list"),
    ({"inner": {"weight": 1}}, "inner: missing required key 'name'"),
    ({"inner": {"name": "n", "weight": -1}}, "inner.weight: must be >= 0, got -1"),
    ({"many": [{"name": "m"}, {"nmae": "m"}]}, "many[1].nmae: unknown key 'nmae' (did you mean 'name'?)"),
    ({"pairs": ["a"]}, "pairs: must be a mapping, got a list"),
    ({"pairs": {"a": {"name": 5}}}, "pairs.a.name: must be a string, got 5"),
    ({"low": 5, "high": 1}, "high: must be >= low"),
    ({"cuont": 1}, "cuont: unknown key 'cuont' (did you mean 'count'?); valid keys: count, flag, high, "),
])
def test_bad_values_name_the_key_path(raw: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as exc:
        build(Cfg, raw, Inline("cfg"))
    assert str(exc.value).startswith("cfg." + message), str(exc.value)


def test_option_text_errors_read_as_command_line_options() -> None:
    with pytest.raises(UserError, match=r"^unknown option 'cuont' for adapter 'x' \(did you mean 'count'\?\); "
                                        r"valid options: count, "):
        build(Cfg, {"cuont": "1"}, OptionText("adapter 'x'"), text=True)
    with pytest.raises(UserError, match=r"^bad value 'c' for option 'mode' of adapter 'x': must be one of a, b"):
        build(Cfg, {"mode": "c"}, OptionText("adapter 'x'"), text=True)


@dataclass(frozen=True, slots=True)
class Paths:
    always: str = field(default="", metadata=spec(path="always"))
    many: tuple[str, ...] = field(default=(), metadata=spec(path="always"))
    exists: str = field(default="", metadata=spec(path="exists"))
    named: str = field(default="", metadata=spec(path="named"))


def test_paths_resolve_against_the_base_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").mkdir()
    monkeypatch.setenv("CM_TEST_DIR", "/data")
    p = build(Paths, {"always": "a/b.jsonl", "many": ["x/*.gz", "$CM_TEST_DIR/y", "/abs/z"], "exists": "tok",
                      "named": "t.jinja"}, base=tmp_path)
    assert p.always == str(tmp_path / "a/b.jsonl") and p.exists == str(tmp_path / "tok")
    assert p.many == (str(tmp_path / "x/*.gz"), "/data/y", "/abs/z") and p.named == str(tmp_path / "t.jinja")
    kept = build(Paths, {"exists": "owner/model", "named": "crystalchat"}, base=tmp_path)
    assert (kept.exists, kept.named) == ("owner/model", "crystalchat")  # a hub id and a bundled name


def _doc(tmp_path: Path, text: str) -> YamlDoc:
    p = tmp_path / "m.yaml"
    p.write_text(text, encoding="utf-8")
    return YamlDoc(p)


def test_yaml_doc_keeps_lines_and_refuses_duplicate_keys(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "a: 1\nb:\n  - x: 2\n    y: 3\n")
    assert doc.data == {"a": 1, "b": [{"x": 2, "y": 3}]}
    assert doc.line(("b", 0, "y")) == 4 and doc.line(("b", 0, "missing")) == 3
    with pytest.raises(UserError, match=r"m\.yaml:2: duplicate key 'a'"):
        _doc(tmp_path, "a: 1\na: 2\n")


def test_small_aliases_are_fine(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: {<<: *b, y: 3}\n")
    assert doc.data["one"] == {"x": 1, "y": [1, 2]} and doc.data["two"] == {"x": 1, "y": 3}


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(lines) + "\n"
    assert len(text.encode()) < 1_000  # nine levels: 9**9 (387 million) strings once expanded
    with pytest.raises(UserError, match=rf"m\.yaml:\d+: not valid YAML: aliases expand to more than "
                                        rf"{ALIAS_NODE_LIMIT:,} nodes"):
        _doc(tmp_path, text)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"m\.yaml:1: an alias refers to a value that contains it"):
        _doc(tmp_path, "a: &a [1, *a]\n")


def test_a_manifest_that_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="manifest not found"):
        YamlDoc(tmp_path / "none.yaml")
    with pytest.raises(UserError, match="is a folder"):
        YamlDoc(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"a: caf\xe9\n")
    with pytest.raises(UserError, match="cannot read manifest"):
        YamlDoc(tmp_path / "latin1.yaml")
