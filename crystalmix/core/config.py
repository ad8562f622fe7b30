"""YAML documents that remember the line of every key, so a bad manifest names its file, line and key path.

Shared by the SFT build manifest and the pretraining stage manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import yaml

from crystalmix.core.errors import UserError

Path_ = tuple[Union[str, int], ...]  # noqa: UP007 - runtime alias


class YamlDoc:
    """Loaded YAML plus the line of every key path, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("manifest not found", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read manifest: {exc}", path=path) from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path, line=line) from None
        self.lines: dict[Path_, int] = {(): 1}
        if node is not None:
            self._walk(node, ())

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


def dotted(at: Path_) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


