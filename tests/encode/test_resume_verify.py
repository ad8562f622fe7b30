"""The tokenize stage reuses only what is intact: a finished folder, an interrupted run's data files and its
spilled rows are each checked against the sizes and digests recorded when they were written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crystalmix.core import hdf5
from crystalmix.core.records import Conversation
from sft_builder import encode as tokenize_stage
from sft_builder.encode import run_tokenize

from .test_stage import cfg, conversations, digest


def must_not_read() -> Iterator[Conversation]:
    raise AssertionError("encoding should resume from the spilled rows")
    yield


def interrupted(out: Path, tok: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped while writing its third data file: two files written, the rows spilled."""
    real = tokenize_stage._write_h5
    calls = []

    def crash_on_third(*args: object, **kw: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args, **kw)

    monkeypatch.setattr(tokenize_stage, "_write_h5", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_tokenize(conversations(300), cfg(tok), out, seed=1, fingerprint="f")
    monkeypatch.setattr(tokenize_stage, "_write_h5", real)
    assert len(list(out.glob("data-*.h5"))) == 2


@pytest.fixture
def ref(demo_tokenizer_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ref"
    run_tokenize(conversations(300), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    return out


def test_a_damaged_file_of_a_finished_folder_is_written_again(ref: Path, demo_tokenizer_dir: Path,
                                                              tmp_path: Path) -> None:
    ref_digest = digest(ref)
    assert run_tokenize(must_not_read(), cfg(demo_tokenizer_dir), ref, seed=1, fingerprint="f")["skipped"]
    for damage in (lambda b: b[:1000], lambda b: b[:-1] + bytes([b[-1] ^ 1])):  # truncated; one byte flipped
        f = ref / "data-00001.h5"
        f.write_bytes(damage(f.read_bytes()))
        rep = run_tokenize(conversations(300), cfg(demo_tokenizer_dir), ref, seed=1, fingerprint="f")
        assert rep["skipped"] is False
        assert digest(ref) == ref_digest


def test_an_interrupted_run_keeps_only_intact_data_files(ref: Path, demo_tokenizer_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    interrupted(out, demo_tokenizer_dir, monkeypatch)
    first = out / "data-00000.h5"
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    run_tokenize(must_not_read(), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    assert digest(out) == digest(ref)
    assert hdf5.validate_folder(out)[1] == []


def test_damaged_spilled_rows_are_encoded_again(ref: Path, demo_tokenizer_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    interrupted(out, demo_tokenizer_dir, monkeypatch)
    (spill,) = out.glob(".rows-*.bin")
    spill.write_bytes(spill.read_bytes()[:-4096])
    with pytest.raises(AssertionError, match="should resume"):  # the rows are not trusted: encoding again
        run_tokenize(must_not_read(), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    run_tokenize(conversations(300), cfg(demo_tokenizer_dir), out, seed=1, fingerprint="f")
    assert digest(out) == digest(ref)
