"""A bad pretraining manifest stops with one message naming the file, the line and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from pretrain.config import load_manifest

GOOD = """stage: demo
tokenizer: demo
seq_len: 64
sources:
  - name: code
    paths: data/*.jsonl
    fim: {rate: 0.5, spm_rate: 0.5}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stage.yaml"
    p.write_text(text)
    return p


def test_good_manifest_loads(tmp_path: Path) -> None:
    cfg = load_manifest(_write(tmp_path, GOOD))
    assert cfg.sources[0].fim.rate == 0.5 and cfg.seq_len == 64


@pytest.mark.parametrize(("old", "new", "line", "where"), [
    ("    fim: {rate: 0.5", "    colour: red\n    fim: {rate: 0.5", 7, "sources[0].colour"),
    ("rate: 0.5,", "rate: 1.5,", 7, "sources[0].fim"),
    ("seq_len: 64", "seq_len: 4", 3, "seq_len"),
    ("stage: demo\n", "stage: demo\nshards: 3\n", 2, "shards"),
])
def test_errors_name_line_and_key(tmp_path: Path, old: str, new: str, line: int, where: str) -> None:
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(UserError) as exc:
        load_manifest(path)
    assert str(exc.value).startswith(f"{path}:{line}: {where}")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "  - name: [unclosed\n")
    with pytest.raises(UserError, match=r"stage\.yaml:9: not valid YAML"):
        load_manifest(path)
