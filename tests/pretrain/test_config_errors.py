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


def test_numbers_written_as_strings_are_read_as_numbers(tmp_path: Path) -> None:
    """`rate: "0.9"` and `seq_len: "2048"` were a bare TypeError deep in the build."""
    text = GOOD.replace("seq_len: 64", 'seq_len: "2048"').replace("rate: 0.5,", 'rate: "0.9",')
    cfg = load_manifest(_write(tmp_path, text))
    assert cfg.seq_len == 2048 and cfg.sources[0].fim.rate == 0.9


def test_split_and_mixture_sections(tmp_path: Path) -> None:
    text = GOOD + "split: {method: file_parity, seed: 3}\nmixture: {offline: true, shuffle_buffer: 8}\n"
    cfg = load_manifest(_write(tmp_path, text))
    assert (cfg.split_method, cfg.split_seed, cfg.offline_mix, cfg.shuffle_buffer) == ("file_parity", 3, True, 8)
    # the fields those sections fill are not top-level keys
    with pytest.raises(UserError, match=r"stage\.yaml:\d+: offline_mix: unknown key"):
        load_manifest(_write(tmp_path, GOOD + "offline_mix: true\n"))


def test_paths_resolve_against_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").mkdir()
    monkeypatch.setenv("CM_CORPUS", "/corpus")
    text = GOOD.replace("tokenizer: demo", "tokenizer: tok").replace(
        "    paths: data/*.jsonl", "    paths: [data/*.jsonl, \"${CM_CORPUS}/*.zst\"]")
    path = _write(tmp_path, text)
    monkeypatch.chdir("/")
    cfg = load_manifest(path)
    assert cfg.tokenizer == str(tmp_path / "tok") and cfg.tokenizer_name == "tok"
    assert cfg.sources[0].paths == (str(tmp_path / "data/*.jsonl"), "/corpus/*.zst")


def test_command_line_overrides_are_checked_and_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    assert load_manifest(path, seq_len=128, seed=5).seq_len == 128
    with pytest.raises(UserError, match=r"^--seq-len: must be >= 8 and <= 1,048,576, got 4$"):
        load_manifest(path, seq_len=4)
    with pytest.raises(UserError, match=r"^--seed: must be >= 0"):
        load_manifest(path, seed=-3)


def test_weights_that_sum_to_zero(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"stage\.yaml:4: sources: the weights of the outputs sum to 0"):
        load_manifest(_write(tmp_path, GOOD + "    weight: 0\n"))


def test_plan_with_a_bad_value_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from crystalmix.cli import main

    path = _write(tmp_path, GOOD.replace("rate: 0.5,", "rate: .nan,"))
    monkeypatch.setattr(sys, "argv", ["crystalmix", "pretrain", "plan", str(path)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert f"{path}:7: sources[0].fim.rate: must be a finite number" in err
