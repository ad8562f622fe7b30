"""`tokenize.attention_mask: true` adds Cerebras' 4th row (1 on padding) to the SFT HDF5 files; off, nothing changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from crystalmix.core import hdf5
from crystalmix.core.errors import UserError
from sft_builder.build import build
from sft_builder.encode import TokenizeConfig
from sft_builder.manifest import load_manifest

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo.yaml"


def test_attention_row_marks_padding_only(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    assert "\ntokenize:\n" in text
    shutil.copytree(DEMO.parent / "demo_data", tmp_path / "demo_data")
    (tmp_path / "demo.yaml").write_text(text.replace("\ntokenize:\n", "\ntokenize:\n  attention_mask: true\n"),
                                        encoding="utf-8")
    build(load_manifest(tmp_path / "demo.yaml"), tmp_path / "out")
    files = sorted((tmp_path / "out" / "tokenized" / "train").glob("data-*.h5"))
    assert files
    for f in files:
        rows = hdf5.read_rows(f)
        with h5py.File(f, "r") as fh:
            segments = fh["segment_ids"][:]
        assert rows.shape[1] == 4
        attention = rows[:, 3]
        assert set(np.unique(attention)) <= {0, 1}
        np.testing.assert_array_equal(attention, (segments == 0).astype(np.int32))
        assert attention.sum() < attention.size  # real tokens are attended to
        assert hdf5.validate_file(f)[1] == []


def test_attention_row_needs_hdf5() -> None:
    with pytest.raises(UserError, match="attention_mask"):
        TokenizeConfig.from_mapping({"attention_mask": True, "output": "megatron-jsonl"})
