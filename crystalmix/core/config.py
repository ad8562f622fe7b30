"""The one config loader: YAML with the line of every key, turned into frozen dataclasses.

Both wings' manifests, the adapters' options (from a manifest or ``key=value`` on the command line) and the
tokenize section are read here, so every bad value fails the same way: one `UserError` naming the file, the
line and the key path (``sources[2].weight``), or the option, before any work starts.

A config class declares everything about a value on its own fields:

- the type (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]``,
  ``dict[str, X]``, a nested config dataclass, or ``tuple[tuple[str, X], ...]`` read from a mapping);
- its range or other rule, ``field(default=..., metadata=spec(at_least(1)))``;
- whether it is a path read from the manifest's folder, ``spec(path="always" | "exists")``.

Rules between fields go in a method ``problems(self) -> Iterable[tuple[str, str]]`` yielding
(key, message) pairs; `build` raises the first at that key's line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from crystalmix.core.errors import UserError

Path_ = tuple[Union[str, int], ...]  # noqa: UP007 - runtime alias
T = TypeVar("T")

# A manifest is small: aliases (``&code`` ... ``*code``) that expand past this many nodes are an alias bomb
# (a 518-byte one expands to billions of nodes), not a configuration.
ALIAS_NODE_LIMIT = 10_000


# -- YAML with lines -----------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """A safe loader that counts the nodes aliases expand to while composing, and stops past the limit."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(stream)
        self.limit = limit
        self.expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self.expanded += _expanded_size(target, self._sizes)
                if self.expanded > self.limit:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand to more than {self.limit:,} nodes; write the values out",
                        event.start_mark)
        return super().compose_node(parent, index)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in `node` with every alias expanded (memoised: shared subtrees are counted once each use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a node met again while being sized is a recursive alias; found and refused later
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(v, memo) for v in node.value)
    memo[key] = size
    return size


def _find_cycle(node: yaml.Node) -> yaml.Node | None:
    """A node that contains itself through an alias (``&a [*a]``), or None."""
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done

    def visit(n: yaml.Node) -> yaml.Node | None:
        s = state.get(id(n))
        if s == 1:
            return n
        if s == 2:
            return None
        state[id(n)] = 1
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            children = [x for kv in n.value for x in kv]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        for c in children:
            found = visit(c)
            if found is not None:
                return found
        state[id(n)] = 2
        return None

    return visit(node)


class YamlDoc:
    """Loaded YAML plus the line of every key path, for error messages; also the folder paths resolve from."""

    def __init__(self, path: Path, *, alias_limit: int = ALIAS_NODE_LIMIT) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("manifest not found", path=path) from None
        except IsADirectoryError:
            raise UserError("is a folder, not a manifest file", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read manifest: {exc}", path=path) from None
        self.lines: dict[Path_, int] = {(): 1}
        loader = _Loader(text, alias_limit)
        try:
            node = loader.get_single_node()
            if node is not None:
                loop = _find_cycle(node)
                if loop is not None:
                    raise UserError("an alias refers to a value that contains it", path=path,
                                    line=loop.start_mark.line + 1)
                self._walk(node, ())  # before constructing, which merges ``<<`` keys into the nodes
            self.data: Any = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise UserError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                            line=line) from None
        finally:
            loader.dispose()

    @property
    def base(self) -> Path:
        """The manifest's folder: relative paths in it are read from here, wherever the command runs."""
        return self.path.resolve().parent

    def _walk(self, node: yaml.Node, at: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                key = str(k.value)
                if key in seen:
                    raise self.error(at, f"duplicate key {key!r}", line=k.start_mark.line + 1)
                seen.add(key)
                self.lines[(*at, key)] = k.start_mark.line + 1
                self._walk(v, (*at, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*at, i)] = item.start_mark.line + 1
                self._walk(item, (*at, i))

    def line(self, at: Path_) -> int:
        while at not in self.lines:
            at = at[:-1]
        return self.lines[at]

    def error(self, at: Path_, msg: str, line: int | None = None) -> UserError:
        where = dotted(at)
        return UserError(f"{where + ': ' if where else ''}{msg}", path=self.path, line=line or self.line(at))

    def unknown(self, at: Path_, key: str, valid: Collection[str]) -> UserError:
        return self.error((*at, key), unknown_message(key, valid))

    def invalid(self, at: Path_, value: Any, why: str) -> UserError:
        return self.error(at, why)


def dotted(at: Path_) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def unknown_message(key: Any, valid: Collection[str], noun: str = "key", where: str = "") -> str:
    near = difflib.get_close_matches(str(key), list(valid), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown {noun} {key!r}{where}{hint}; valid {noun}s: {', '.join(sorted(valid)) or '(none)'}"


# -- where errors point --------------------------------------------------------------------------------
class Site(Protocol):
    """Turns a problem at a key path into the `UserError` the user sees (a file line, or an option name)."""

    def error(self, at: Path_, msg: str) -> UserError: ...

    def unknown(self, at: Path_, key: str, valid: Collection[str]) -> UserError: ...

    def invalid(self, at: Path_, value: Any, why: str) -> UserError: ...


class Inline:
    """Errors for values that come from no file: ``tokenize.packing: ...`` (a prefix and the key path)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def error(self, at: Path_, msg: str) -> UserError:
        where = ".".join(p for p in (self.prefix, dotted(at)) if p)
        return UserError(f"{where}: {msg}" if where else msg)

    def unknown(self, at: Path_, key: str, valid: Collection[str]) -> UserError:
        return self.error((*at, key), unknown_message(key, valid))

    def invalid(self, at: Path_, value: Any, why: str) -> UserError:
        return self.error(at, why)


class OptionText:
    """Errors for ``key=value`` options of a command: ``unknown option 'x' for adapter 'alpaca'; ...``."""

    def __init__(self, context: str) -> None:
        self.context = context

    def error(self, at: Path_, msg: str) -> UserError:
        return UserError(f"{self.context}: {dotted(at) + ': ' if at else ''}{msg}")

    def unknown(self, at: Path_, key: str, valid: Collection[str]) -> UserError:
        if at:
            return self.error((*at, key), unknown_message(key, valid))
        return UserError(unknown_message(key, valid, "option", f" for {self.context}"))

    def invalid(self, at: Path_, value: Any, why: str) -> UserError:
        return UserError(f"bad value {value!r} for option {dotted(at)!r} of {self.context}: {why}")


# -- field declarations --------------------------------------------------------------------------------
Check = Callable[[Any], "str | None"]  # a rule: None if the value is fine, else what it must be


PathKind = Literal["always", "exists", "named"]


def spec(*checks: Check, path: PathKind | None = None) -> dict[str, Any]:
    """Field metadata: rules the value must pass, and whether it is a path read from the manifest's folder.

    ``path="always"``: a relative path is made absolute against the manifest's folder (``~`` and ``$VARS``
    expanded). ``path="exists"``: only when that file exists there, so a name such as ``demo`` or a hub id
    (``owner/name``) is kept as written. ``path="named"``: a bare word (``crystalchat``) is a name, anything
    with a ``/`` or a suffix (``t.jinja``) is a path.
    """
    out: dict[str, Any] = {}
    if checks:
        out["checks"] = checks
    if path is not None:
        out["path"] = path
    return out


class Range:
    """A number in [lo, hi] (either end open or absent)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, text: str = "") -> None:
        self.lo, self.hi, self.lo_open, self.hi_open, self.text = lo, hi, lo_open, hi_open, text

    def __call__(self, value: Any) -> str | None:
        if value is None:
            return None
        lo, hi = self.lo, self.hi
        bad = (lo is not None and (value <= lo if self.lo_open else value < lo)) or (
            hi is not None and (value >= hi if self.hi_open else value > hi))
        return f"must be {self.describe()}, got {_number(value)}" if bad else None

    def describe(self) -> str:
        if self.text:
            return self.text
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_number(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_number(self.hi)}")
        return " and ".join(parts)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else repr(value)


def at_least(lo: float) -> Range:
    return Range(lo)


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo, hi, lo_open=lo_open, hi_open=hi_open)


def one_of(*choices: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None or value in choices else (
            f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    return check


def non_empty(value: Any) -> str | None:
    return "must not be empty" if value is not None and len(value) == 0 else None


def matches(pattern: str, what: str) -> Check:
    rx = re.compile(pattern)

    def check(value: Any) -> str | None:
        return None if value is None or rx.fullmatch(value) else f"must be {what}, got {value!r}"
    return check


def each(rule: Check) -> Check:
    """A rule applied to every item of a tuple."""
    def check(value: Any) -> str | None:
        for item in value or ():
            why = rule(item)
            if why:
                return why
        return None
    return check


SEED = Range(0, 2**63 - 1, text=">= 0 and < 2**63")  # numpy takes no negative seed, xxhash none past 64 bits
NAME = matches(r"[A-Za-z0-9][\w.-]*", "a word of letters, digits, '_', '-' or '.' (it names a folder)")


# -- the builder ---------------------------------------------------------------------------------------
class _Bad(Exception):
    """A value that does not fit, at a path below the field being read."""

    def __init__(self, why: str, at: Path_ = (), value: Any = None) -> None:
        super().__init__(why)
        self.why, self.at, self.value = why, at, value


@dataclasses.dataclass(frozen=True, slots=True)
class _Ctx:
    site: Site
    base: Path | None
    text: bool


def build(cls: type[T], raw: Any, site: Site | None = None, at: Path_ = (), *, base: Path | None = None,
          fixed: Mapping[str, Any] | None = None, keys: Collection[str] | None = None, text: bool = False) -> T:
    """A frozen config `cls` from a mapping: keys checked, values coerced, ranges and `problems` checked.

    `site` turns problems into `UserError`s (a `YamlDoc` gives file and line); `at` is the key path of `raw`;
    `base` is the folder relative paths are read from (default: the `YamlDoc`'s folder); `fixed` are values
    the caller sets (not read from `raw`); `keys` limits which fields `raw` may set (default: all but those
    in `fixed`). With `text` (values typed on a command line), a string is also read as a comma-separated
    list (``en,de``) or mapping (``a:b,c:d``); from a manifest, a string given for a list is one item.
    """
    site = site if site is not None else Inline()
    if base is None and isinstance(site, YamlDoc):
        base = site.base
    return _build(cls, raw, _Ctx(site, base, text), at, fixed, keys)


def _build(cls: type[T], raw: Any, ctx: _Ctx, at: Path_, fixed: Mapping[str, Any] | None = None,
           keys: Collection[str] | None = None) -> T:
    site, base = ctx.site, ctx.base
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise site.error(at, f"must be a mapping of settings, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    fixed = dict(fixed or {})
    allowed = set(keys) if keys is not None else set(fields) - set(fixed)
    for key in raw:
        if not isinstance(key, str) or key not in allowed:
            raise site.unknown(at, str(key), allowed)
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = dict(fixed)
    for key, value in raw.items():
        f = fields[key]
        try:
            v = _coerce(value, hints[key], ctx, (*at, key))
            v = _resolve_paths(v, f.metadata.get("path"), base)
            for rule in f.metadata.get("checks", ()):
                why = rule(v)
                if why:
                    raise _Bad(why)
        except _Bad as bad:
            where = (*at, key, *bad.at)
            raise site.invalid(where, value if not bad.at else bad.value, bad.why) from None
        kwargs[key] = v
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise site.error(at, f"missing required key {missing[0]!r}")
    obj = cls(**kwargs)
    problems = getattr(obj, "problems", None)
    if problems is not None:
        for key, why in problems():
            raise site.error((*at, key) if key else at, why)
    return obj


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list {value!r}" if len(repr(value)) < 60 else "a list"
    return repr(value)


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _coerce(value: Any, tp: Any, ctx: _Ctx, at: Path_) -> Any:
    """`value` as type `tp`; strings are parsed (options typed on a command line arrive as text)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if _is_union(origin):
        if value is None and type(None) in args:
            return None
        whys = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, ctx, at)
            except _Bad as bad:
                whys.append(bad.why)
        raise _Bad(" or ".join(dict.fromkeys(whys)))
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise _Bad(f"must be one of {', '.join(map(str, args))}, got {_show(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, ctx, at)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise _Bad(f"must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d[\d_]*\s*", value):
            return int(value)
        raise _Bad(f"must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                raise _Bad(f"must be a number, got {_show(value)}") from None
        else:
            raise _Bad(f"must be a number, got {_show(value)}")
        if not math.isfinite(out):
            raise _Bad(f"must be a finite number, got {_show(value)}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        hint = " (quote it: YAML reads yes/no/on/off as true/false)" if isinstance(value, bool) else ""
        raise _Bad(f"must be a string, got {_show(value)}{hint}")
    if origin in (tuple, list):
        if value is None:
            return ()
        inner = args[0] if args else Any
        if get_origin(inner) is tuple and len(get_args(inner)) == 2 and get_args(inner)[1] is not Ellipsis:
            # (key, value) pairs, written as a mapping; kept sorted by key
            if not isinstance(value, Mapping):
                raise _Bad(f"must be a mapping, got {_show(value)}")
            k_tp, v_tp = get_args(inner)
            return tuple(sorted(
                (_item(k, k_tp, ctx, at, k), _item(v, v_tp, ctx, at, k)) for k, v in value.items()))
        if isinstance(value, str):  # "a,b" from a command line; one item from a manifest
            value = [v.strip() for v in value.split(",") if v.strip()] if ctx.text else [value]
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"must be a list, got {_show(value)}")
        if not args or len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_item(v, inner, ctx, at, i) for i, v in enumerate(value))
        if len(args) != len(value):
            raise _Bad(f"must be a list of {len(args)} values, got {_show(value)}")
        return tuple(_item(v, a, ctx, at, i) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if value is None:
            return {}
        if isinstance(value, str) and ctx.text:  # "a:b,c:d" from a command line
            pairs = {}
            for part in value.split(","):
                k, sep, v = part.partition(":")
                if not sep or not k.strip():
                    raise _Bad("must be key:value pairs separated by commas")
                pairs[k.strip()] = v.strip()
            value = pairs
        if not isinstance(value, Mapping):
            raise _Bad(f"must be a mapping, got {_show(value)}")
        v_tp = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Bad(f"keys must be strings, got {_show(k)}", (), value)
            out[k] = _item(v, v_tp, ctx, at, k)
        return out
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Bad(f"must be {getattr(tp, '__name__', tp)}, got {_show(value)}")


def _item(value: Any, tp: Any, ctx: _Ctx, at: Path_, key: str | int) -> Any:
    """One element of a list or mapping; a problem in it is reported at its own path."""
    try:
        return _coerce(value, tp, ctx, (*at, key))
    except _Bad as bad:
        raise _Bad(bad.why, (key, *bad.at), value if not bad.at else bad.value) from None


def _resolve_paths(value: Any, how: str | None, base: Path | None) -> Any:
    if how is None or base is None or value is None:
        return value
    if isinstance(value, tuple):
        return tuple(_resolve_paths(v, how, base) for v in value)
    if how == "named" and "/" not in value and os.sep not in value and not Path(value).suffix:
        return value
    return resolve_path(value, base, only_if_exists=how == "exists")


def resolve_path(spec: str, base: Path, *, only_if_exists: bool = False) -> str:
    """`spec` with ``~`` and ``$VARS`` expanded, made absolute against `base` (the manifest's folder); a URL
    (``s3://...``) is kept as written, ``$VARS`` expanded."""
    from crystalmix.core.remote import is_url

    if is_url(os.path.expandvars(spec)):
        return os.path.expandvars(spec)
    expanded = os.path.expandvars(os.path.expanduser(spec))
    p = Path(expanded)
    if p.is_absolute():
        return expanded
    if only_if_exists and not (base / p).exists():
        return spec
    return str(base / p)


def as_data(obj: Any) -> Any:
    """JSON-able form of configs, for fingerprints and reports."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_data(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_each(items: Iterable[tuple[str, str | None]]) -> Iterable[tuple[str, str]]:
    """`problems` helper: the (key, message) pairs whose message is set."""
    return [(k, why) for k, why in items if why]
