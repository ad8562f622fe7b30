"""The layout's one rule, checked on every run: the floor imports neither wing, the wings never import each other.

Reads every module's imports with `ast` (top level and inside functions alike), so a lazy import cannot hide an
arrow that the layout forbids.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the top-level project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "crystalmix.core": set(),
    "sft_builder": {"crystalmix.core"},
    "pretrain": {"crystalmix.core"},
    "crystalmix.cli": {"crystalmix", "crystalmix.core", "sft_builder", "pretrain"},
}
PROJECT = ("crystalmix", "sft_builder", "pretrain")


def _package_of(module: str) -> str:
    if module.startswith("crystalmix.core") or module.startswith("crystalmix.cli"):
        return ".".join(module.split(".")[:2])
    return module.split(".")[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            # `from crystalmix import core` and the like name a package through the imported name
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if node.module in PROJECT]
    return found


def forbidden_arrows(root: Path = ROOT) -> list[str]:
    bad: list[str] = []
    for owner, allowed in ALLOWED.items():
        folder = root / owner.replace(".", "/")
        for path in sorted(folder.rglob("*.py")):
            for line, target in _imports(path):
                if target.split(".")[0] not in PROJECT:
                    continue
                pkg = _package_of(target)
                if pkg == owner or pkg in allowed or (pkg == "crystalmix" and "crystalmix" in allowed):
                    continue
                if owner != "crystalmix.cli" and pkg == "crystalmix" and target == "crystalmix":
                    continue  # the bare package (its __version__) is part of the floor's namespace
                bad.append(f"{path.relative_to(root)}:{line}: {owner} imports {target}")
    return bad


def test_no_forbidden_import_arrows() -> None:
    assert forbidden_arrows() == []


def test_the_check_sees_an_arrow(tmp_path: Path) -> None:
    """The checker itself must fail on a forbidden import, including one hidden inside a function."""
    for pkg in ("crystalmix/core", "crystalmix/cli", "sft_builder", "pretrain"):
        (tmp_path / pkg).mkdir(parents=True)
    (tmp_path / "pretrain" / "x.py").write_text("def f():\n    from sft_builder.manifest import load\n")
    (tmp_path / "crystalmix" / "core" / "y.py").write_text("import pretrain.fim\n")
    (tmp_path / "sft_builder" / "z.py").write_text("from crystalmix.core import records\n")
    bad = forbidden_arrows(tmp_path)
    assert bad == [
        "crystalmix/core/y.py:1: crystalmix.core imports pretrain.fim",
        "pretrain/x.py:2: pretrain imports sft_builder.manifest",
    ]
