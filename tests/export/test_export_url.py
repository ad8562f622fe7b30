"""`crystalmix export --out URL`: the Hub folder is written in the local --work folder and published to the URL
with the same bytes as a local export, the completion marker last; a rerun uploads nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest

from crystalmix.core.remote import PUBLISHED

from .conftest import add_plots, fake_build


@pytest.fixture
def url(memory_root: str) -> str:
    return f"{memory_root}/hub"


def test_export_to_a_url_publishes_the_local_exports_bytes(tmp_path: Path, url: str,
                                                            run_cli: Callable[..., tuple[int, str]]) -> None:
    build = fake_build(tmp_path / "build", n_train=30, n_test=5, documents=4)
    add_plots(build)
    code, err = run_cli("export", str(build), "--out", str(tmp_path / "local"), "--rows-per-shard", "10", "-q")
    assert code == 0, err
    code, err = run_cli("export", str(build), "--out", url, "--work", str(tmp_path / "w"), "--rows-per-shard",
                        "10", "-q")
    assert code == 0, err
    want = {p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
            for p in (tmp_path / "local").rglob("*") if p.is_file()}
    fs, root = fsspec.core.url_to_fs(url)
    got = {p[len(root) + 1:]: bytes(fs.cat_file(p)) for p in fs.find(root)}
    assert len([n for n in want if n.endswith(".parquet")]) > 2
    assert {k: v for k, v in got.items() if k != PUBLISHED} == want
    assert set(json.loads(got[PUBLISHED])["files"]) == set(want) and json.loads(got[PUBLISHED])["kind"] == "export"
    before = {p: fs.info(p)["created"] for p in fs.find(root)}
    assert run_cli("export", str(build), "--out", url, "--work", str(tmp_path / "w"), "--rows-per-shard", "10",
                   "-q")[0] == 0
    assert {p: fs.info(p)["created"] for p in fs.find(root)} == before  # nothing written again
