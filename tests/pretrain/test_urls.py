"""`crystalmix pretrain build` with file:// inputs, to a file:// folder and to a memory:// URL: the same bytes as
the reference build from local paths (the URL copy without the local resumable state, the marker last)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import pytest
import yaml

from crystalmix.cli import run
from crystalmix.core.remote import OWNER, PUBLISHED

from .conftest import DEMO, stage_manifest, tree_hashes


@pytest.fixture
def url(memory_root: str) -> str:
    return f"{memory_root}/stage"


def _url_manifest(folder: Path) -> Path:
    path = stage_manifest(folder)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    urls = {"slimpajama": (DEMO / "slimpajama").as_uri() + "/*.jsonl.zst",
            "starcoder": (DEMO / "starcoder").as_uri() + "/*/*.parquet"}
    for src in raw["sources"]:
        src["paths"] = [urls[src["name"]]]
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_file_url_inputs_and_outputs_build_the_reference(reference_build: tuple[Path, dict[str, str], dict],
                                                         tmp_path: Path, url: str) -> None:
    _, want, _ = reference_build
    m = _url_manifest(tmp_path)
    out = tmp_path / "out"
    assert run(["pretrain", "build", str(m), "--out", out.as_uri(), "-q"]) == 0
    assert tree_hashes(out) == want

    assert run(["pretrain", "build", str(m), "--out", url, "--work", str(tmp_path / "work"), "-q"]) == 0
    fs, root = fsspec.core.url_to_fs(url)
    got = {p[len(root) + 1:]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(root)}
    marker = json.loads(fs.cat_file(f"{root}/{PUBLISHED}"))
    assert marker["kind"] == "pretrain build" and set(marker["files"]) == set(want) | {OWNER}
    assert {k: v for k, v in got.items() if k not in (PUBLISHED, OWNER)} == want  # .state stays local
