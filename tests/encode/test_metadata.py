"""build_metadata / validate_folder: the one metadata schema and folder check for SFT and pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crystalmix.core import hdf5


def _write_folder(folder: Path, n: int = 12, seq_len: int = 8, pad: int = 99) -> dict:
    rng = np.random.default_rng(1)
    toks = rng.integers(3, 90, size=(n, seq_len + 1))
    ones = np.ones((n, seq_len), dtype=np.int64)
    rows = np.stack([toks[:, :-1], ones, toks[:, 1:]], axis=1).astype(np.int32)
    rows[-1, 0, -3:] = pad  # a padded tail: mask 0 there
    rows[-1, 1, -4:] = 0
    rows[-1, 2, -4:] = pad
    w = hdf5.ShardedWriter(folder, seq_len=seq_len, samples_per_file=5)
    for r in rows:
        w.write(r)
    files = w.close()
    meta = hdf5.build_metadata(seq_len=seq_len, vocab_size=100, special_tokens={"eos": 2, "pad": pad},
                               files=[(f, len(hdf5.read_rows(f))) for f in files],
                               stats=hdf5.row_stats(rows, pad), fingerprint="abc", tokenizer="demo")
    hdf5.write_metadata(folder, meta)
    return meta


def test_build_metadata_keys_and_valid_folder(tmp_path: Path) -> None:
    meta = _write_folder(tmp_path / "a" / "epoch-0")
    for key in ("format", "seq_len", "vocab_size", "special_tokens", "files", "num_sequences", "num_tokens",
                "non_pad_tokens", "loss_valid_tokens", "fingerprint", "tokenizer", "pad_id", "eos_id"):
        assert key in meta
    assert [f["n_examples"] for f in meta["files"]] == [5, 5, 2]
    assert meta["non_pad_tokens"] == 12 * 8 - 3
    assert hdf5.data_folders(tmp_path) == [tmp_path / "a" / "epoch-0"]
    n, problems = hdf5.validate_folder(tmp_path / "a" / "epoch-0")
    assert (n, problems) == (12, [])


def test_validate_folder_finds_count_and_listing_problems(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    meta = _write_folder(folder)
    meta["loss_valid_tokens"] += 1
    meta["files"].append({"name": "data-00009.h5", "n_examples": 1})
    (folder / hdf5.METADATA_NAME).write_text(json.dumps(meta))
    _, problems = hdf5.validate_folder(folder)
    assert any("data-00009.h5: listed" in p for p in problems)
    meta["files"].pop()
    (folder / hdf5.METADATA_NAME).write_text(json.dumps(meta))
    _, problems = hdf5.validate_folder(folder)
    assert problems == [f"{folder / hdf5.METADATA_NAME}: loss_valid_tokens={meta['loss_valid_tokens']} "
                        f"but the files give {meta['loss_valid_tokens'] - 1}"]


def test_validate_folder_mask_on_padding(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    _write_folder(folder)
    rows = hdf5.read_rows(folder / "data-00002.h5")
    rows[1, 1, -1] = 1  # mask on a pad input
    hdf5.write_file(folder / "data-00002.h5", rows)
    _, problems = hdf5.validate_folder(folder)
    assert any("loss mask is 1 on padding" in p and "data-00002.h5" in p for p in problems)
