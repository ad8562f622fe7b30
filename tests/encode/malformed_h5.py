"""Malformed training folders for `validate` and `inspect`: each case a folder holding one `data-00000.h5` and a
`metadata.json`, broken in one way (issue 13's list and more)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from crystalmix.core import hdf5

SEQ, ROWS, VOCAB, PAD, EOS = 16, 4, 8278, 8259, 2  # the bundled demo tokenizer's sizes
FILE = "data-00000.h5"


def good_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 200, size=(ROWS, SEQ + 1)).astype(np.int32)
    rows = np.stack([ids[:, :-1], np.ones((ROWS, SEQ), np.int32), ids[:, 1:]], axis=1)
    return np.ascontiguousarray(rows, dtype=np.int32)


def good_folder(folder: Path) -> Path:
    """A valid folder: four rows of 16 tokens, its metadata written by the library."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = good_rows()
    hdf5.write_file(folder / FILE, rows)
    meta = hdf5.build_metadata(seq_len=SEQ, vocab_size=VOCAB, special_tokens={"eos": EOS, "pad": PAD},
                               files=[(FILE, ROWS)], stats=hdf5.row_stats(rows, PAD), fingerprint="f",
                               tokenizer="demo")
    hdf5.write_metadata(folder, meta)
    return folder


def _raw_file(folder: Path, make: Callable[[h5py.File], None], n_examples: object = ROWS) -> None:
    (folder / FILE).unlink(missing_ok=True)
    with h5py.File(folder / FILE, "w") as fh:
        make(fh)
        if n_examples is not None:
            fh.attrs["n_examples"] = n_examples


def _meta(folder: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads((folder / hdf5.METADATA_NAME).read_text())
    (folder / hdf5.METADATA_NAME).write_text(json.dumps(change(meta)))


def _set(key: str, value: object) -> Callable[[dict], dict]:
    def change(meta: dict) -> dict:
        meta[key] = value
        return meta
    return change


def _truncate(folder: Path) -> None:
    p = folder / FILE
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _rows_with(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        rows = change(good_rows())
        _raw_file(folder, lambda fh: fh.create_dataset("data", data=rows, chunks=(1, *rows.shape[1:])))
    return make


def _out_of_vocab(rows: np.ndarray) -> np.ndarray:
    rows[0, 0, 3] = VOCAB + 5
    rows[0, 2, 2] = VOCAB + 5
    return rows


def _negative(rows: np.ndarray) -> np.ndarray:
    rows[0, 0, 0] = -7
    return rows


# name -> (how to break a good folder, what validate says, what inspect says)
CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "data_is_a_group": (lambda f: _raw_file(f, lambda fh: fh.create_group("data")),
                        "'data' is a group, not a dataset", "'data' is a group, not a dataset"),
    "data_is_1d": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("data", data=np.arange(10, dtype=np.int32))),
                   "'data' has shape (10,)", "'data' has shape (10,)"),
    "data_is_2d": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("data", data=np.zeros((4, 16), np.int32))),
                   "'data' has shape (4, 16)", "'data' has shape (4, 16)"),
    "data_has_5_rows": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("data", data=np.zeros((4, 5, 16),
                                                                                                np.int32))),
                        "expected (n, 3, L) or (n, 4, L)", "expected (n, 3, L) or (n, 4, L)"),
    "data_is_float": (_rows_with(lambda r: r.astype(np.float32)), "dtype float32, expected int32",
                      "dtype float32, expected int32"),
    "data_is_text": (lambda f: _raw_file(f, lambda fh: fh.create_dataset(
        "data", data=np.full((4, 3, 16), "tok", dtype=h5py.string_dtype()))), "expected int32", "expected int32"),
    "no_data": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("other", data=[1])), "no 'data' dataset",
                "no 'data' dataset"),
    "not_hdf5": (lambda f: (f / FILE).write_text("this is not HDF5\n"), "cannot be read as HDF5",
                 "cannot be read as HDF5"),
    "empty_file": (lambda f: (f / FILE).write_bytes(b""), "cannot be read as HDF5", "cannot be read as HDF5"),
    "truncated": (_truncate, "cannot be read", "cannot be read"),
    "a_folder_named_h5": (lambda f: ((f / FILE).unlink(), (f / FILE).mkdir()), "cannot be read as HDF5",
                          "cannot be read as HDF5"),
    "ids_out_of_vocab": (_rows_with(_out_of_vocab), "outside vocabulary 0..8277", "outside the tokenizer's"),
    "negative_ids": (_rows_with(_negative), "outside vocabulary", "outside the tokenizer's"),
    "no_n_examples": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("data", data=good_rows(),
                                                                           chunks=(1, 3, SEQ)), n_examples=None),
                      "attribute n_examples=None", ""),
    "n_examples_text": (lambda f: _raw_file(f, lambda fh: fh.create_dataset("data", data=good_rows(),
                                                                             chunks=(1, 3, SEQ)), n_examples="four"),
                        "attribute n_examples='four'", ""),
    "segments_a_group": (lambda f: _raw_file(f, lambda fh: (fh.create_dataset("data", data=good_rows(),
                                                                              chunks=(1, 3, SEQ)),
                                                            fh.create_group("segment_ids"))),
                         "'segment_ids' is a group, not a dataset", "'segment_ids'"),
    "segments_wrong_shape": (lambda f: _raw_file(f, lambda fh: (fh.create_dataset("data", data=good_rows(),
                                                                                  chunks=(1, 3, SEQ)),
                                                                fh.create_dataset("segment_ids",
                                                                                  data=np.zeros(3, np.int32)))),
                             "'segment_ids' has shape (3,)", "'segment_ids' has shape (3,)"),
    "metadata_a_list": (lambda f: _meta(f, lambda m: [m]), "not a JSON object", "not a JSON object"),
    "metadata_not_json": (lambda f: (f / hdf5.METADATA_NAME).write_text("{nope"), "not valid JSON",
                          "not valid JSON"),
    "metadata_not_utf8": (lambda f: (f / hdf5.METADATA_NAME).write_bytes(b"\xff\xfe{}"), "not valid JSON",
                          "not valid JSON"),
    "metadata_missing": (lambda f: (f / hdf5.METADATA_NAME).unlink(), "no metadata.json", "no metadata.json"),
    "files_not_a_list": (lambda f: _meta(f, _set("files", "data-00000.h5")), "'files' must be a list",
                         ""),
    "files_entry_bad": (lambda f: _meta(f, _set("files", [{"file": FILE, "n_examples": "x"}])),
                        "'files' must be a list of {name, n_examples}", ""),
    "vocab_size_text": (lambda f: _meta(f, _set("vocab_size", "big")), "vocab_size must be a positive integer",
                        ""),
    "special_tokens_a_list": (lambda f: _meta(f, lambda m: {**m, "special_tokens": [1, 2], "pad_id": None}),
                              "missing vocab_size or pad id", ""),
    "pad_id_text": (lambda f: _meta(f, _set("pad_id", "pad")), "pad_id must be an integer", ""),
    "tokenizer_missing": (lambda f: _meta(f, lambda m: {k: v for k, v in m.items() if k != "tokenizer"}), "",
                          "names no tokenizer; pass --tokenizer"),
    "stats_text": (lambda f: _meta(f, _set("num_tokens", "many")), "num_tokens='many' but the files give 64", ""),
}


def make_case(root: Path, name: str) -> Path:
    folder = good_folder(root / name)
    CASES[name][0](folder)
    return folder


def copy_cases(root: Path) -> Path:
    for name in CASES:
        make_case(root, name)
    return root

