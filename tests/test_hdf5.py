from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from crystalmix.core import hdf5


def _rows(n: int, seq_len: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    toks = rng.integers(3, 100, size=(n, seq_len + 1))
    rows = np.stack([toks[:, :-1], np.ones((n, seq_len), dtype=np.int64), toks[:, 1:]], axis=1)
    return rows.astype(np.int32)


def test_sharded_writer_layout_and_bytes(tmp_path: Path) -> None:
    rows = _rows(700, 16)
    digests = []
    for run in ("a", "b"):
        w = hdf5.ShardedWriter(tmp_path / run, seq_len=16, samples_per_file=300)
        for r in rows:
            w.write(r)
        files = w.close()
        assert [f.name for f in files] == ["data-00000.h5", "data-00001.h5", "data-00002.h5"]
        digests.append([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    assert digests[0] == digests[1], "same rows must give byte-identical files"
    with h5py.File(tmp_path / "a" / "data-00002.h5") as fh:
        assert fh["data"].shape == (100, 3, 16)
        assert fh["data"].dtype == np.int32
        assert fh["data"].chunks == (1, 3, 16)
        assert fh["data"].compression == "gzip"
        assert int(fh.attrs["n_examples"]) == 100
    back = np.concatenate([hdf5.read_rows(f) for f in sorted((tmp_path / "a").glob("*.h5"))])
    np.testing.assert_array_equal(back, rows)
    assert not list((tmp_path / "a").glob(".*tmp")), "no temporaries left behind"


def test_validate_finds_problems(tmp_path: Path) -> None:
    rows = _rows(10, 8)
    hdf5.write_file(tmp_path / "ok.h5", rows)
    n, problems = hdf5.validate_file(tmp_path / "ok.h5", vocab_size=100)
    assert n == 10 and problems == []
    bad = rows.copy()
    bad[3, 2, 4] += 1  # labels no longer the shifted input
    bad[5, 0, 0] = 500  # out of vocabulary
    hdf5.write_file(tmp_path / "bad.h5", bad)
    _, problems = hdf5.validate_file(tmp_path / "bad.h5", vocab_size=100)
    assert any("outside vocabulary" in p for p in problems)
    assert any("row 3 labels[4]" in p for p in problems)
    data = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 2])
    _, problems = hdf5.validate_file(tmp_path / "trunc.h5")
    assert problems and "trunc.h5" in problems[0]


def test_attention_row_is_optional_and_validated(tmp_path: Path) -> None:
    """The 4th row (Cerebras' attention mask) only when asked for; the 3-row files stay byte-identical."""
    rows = _rows(20, 8)
    plain = hdf5.ShardedWriter(tmp_path / "plain", seq_len=8, samples_per_file=50)
    for r in rows:
        plain.write(r)
    [f3] = plain.close()
    hdf5.write_file(tmp_path / "direct.h5", rows)
    assert f3.read_bytes() == (tmp_path / "direct.h5").read_bytes()
    padding = np.zeros((20, 8), dtype=bool)
    padding[:, 6:] = True
    four = np.concatenate([rows, hdf5.attention_row(padding)[:, None, :]], axis=1)
    w = hdf5.ShardedWriter(tmp_path / "four", seq_len=8, samples_per_file=50, attention_mask=True)
    for r in four:
        w.write(r)
    [f4] = w.close()
    with h5py.File(f4) as fh:
        assert fh["data"].shape == (20, 4, 8) and fh["data"].chunks == (1, 4, 8)
    np.testing.assert_array_equal(hdf5.read_rows(f4)[:, 3], padding.astype(np.int32))
    assert hdf5.validate_file(f4, vocab_size=100) == (20, [])
    with pytest.raises(ValueError, match="4 x L"):
        w.write(rows[0])  # a 3-row row never goes into a 4-row file
    bad = four.copy()
    bad[2, 3, 1] = 2
    hdf5.write_file(tmp_path / "bad4.h5", bad)
    _, problems = hdf5.validate_file(tmp_path / "bad4.h5", vocab_size=100)
    assert any("attention mask (row 3)" in p for p in problems)
