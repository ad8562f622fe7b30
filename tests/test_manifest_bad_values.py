"""Bad values in either manifest stop the run when it is read: one `UserError` naming the file, line and key.

Each case edits one line of a good manifest; the expected line is the line of the edited key, so a message
that names the wrong place fails too. The values come from issue 13's reliability pass: each of them gave a
traceback, ran away or was silently ignored before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError

SFT = """\
seed: 7
sources:
  - name: chat
    adapter: alpaca
    inputs: data.json
    weight: 2
    options: {join: "\\n\\n"}
steps:
  clean: {}
  near_dedup: {threshold: 0.9}
  decontaminate:
    benchmarks:
      - {name: mbpp, path: bench.jsonl, fields: [text]}
split: {test_fraction: 0.1}
tokenize:
  tokenizer: demo
  seq_len: 2048
"""

# (old text, new text, line, key path, start of the message)
SFT_CASES = [
    ("weight: 2", "weight: .nan", 6, "sources[0].weight", "must be a finite number"),
    ("weight: 2", "weight: .inf", 6, "sources[0].weight", "must be a finite number"),
    ("weight: 2", "weight: -.inf", 6, "sources[0].weight", "must be a finite number"),
    ("weight: 2", "weight: 1e300", 6, "sources[0].weight", "must be >= 0 and <= 1,000"),
    ("weight: 2", "weight: 1.0e+300", 6, "sources[0].weight", "must be >= 0 and <= 1,000"),
    ("weight: 2", "weight: -1", 6, "sources[0].weight", "must be >= 0"),
    ("weight: 2", "weight: heavy", 6, "sources[0].weight", "must be a number"),
    ("weight: 2", "epochs: 0", 6, "sources[0].epochs", "must be >= 1"),
    ("weight: 2", "max_samples: -5", 6, "sources[0].max_samples", "must be >= 0"),
    ("weight: 2", "priority: first", 6, "sources[0].priority", "must be an integer"),
    ("seed: 7", "seed: -1", 1, "seed", "must be >= 0"),
    ("seed: 7", "seed: 1.5", 1, "seed", "must be an integer"),
    ('options: {join: "\\n\\n"}', "options: {join: [1, 2]}", 7, "sources[0].options.join", "must be a string"),
    ('options: {join: "\\n\\n"}', "options: {column_map: {output: [a, b]}}", 7,
     "sources[0].options.column_map.output", "must be a string"),
    ('options: {join: "\\n\\n"}', "options: {column_map: [output]}", 7, "sources[0].options.column_map",
     "must be a mapping"),
    ('options: {join: "\\n\\n"}', "options: {jion: x}", 7, "sources[0].options.jion",
     "unknown key 'jion' (did you mean 'join'?)"),
    ('options: {join: "\\n\\n"}', "options: [join]", 7, "sources[0].options", "must be a mapping"),
    ("name: chat", "name: ../../x", 3, "sources[0].name", "must be a word"),
    ("split: {test_fraction: 0.1}", "split: {test_fraction: .nan}", 14, "split.test_fraction", "must be a finite"),
    ("split: {test_fraction: 0.1}", "split: {test_fraction: 1}", 14, "split.test_fraction", "must be >= 0 and < 1"),
    ("split: {test_fraction: 0.1}", "split: {test_fractoin: 0.1}", 14, "split.test_fractoin", "unknown key"),
    ("near_dedup: {threshold: 0.9}", "near_dedup: {threshold: .nan}", 10, "steps.near_dedup.threshold",
     "must be a finite"),
    ("near_dedup: {threshold: 0.9}", "near_dedup: {threshold: 0}", 10, "steps.near_dedup.threshold",
     "must be > 0 and <= 1"),
    ("near_dedup: {threshold: 0.9}", "near_dedup: {bands: 4}", 10, "steps.near_dedup.bands",
     "give bands and rows together"),
    ("clean: {}", "clean: {html_roles: [bot]}", 9, "steps.clean.html_roles[0]", "must be one of system"),
    ("clean: {}", "clean: {leftover_lines: [yes]}", 9, "steps.clean.leftover_lines[0]", "must be a string"),
    ("clean: {}", "clena: {}", 9, "steps.clena", "unknown key 'clena' (did you mean 'clean'?)"),
    ("path: bench.jsonl", "path: missing.jsonl", 13, "steps.decontaminate.benchmarks[0].path",
     "benchmark file not found"),
    ("path: bench.jsonl, fields: [text]", "path: bench.jsonl", 13, "steps.decontaminate.benchmarks[0].fields",
     "name the keys"),
    ("path: bench.jsonl", "builtin: mmlu", 13, "steps.decontaminate.benchmarks[0].builtin", "must be one of"),
    ("  seq_len: 2048", "  seq_len: 4", 17, "tokenize.seq_len", "must be >= 8"),
    ("  seq_len: 2048", "  seq_len: long", 17, "tokenize.seq_len", "must be an integer"),
    ("  seq_len: 2048", "  workers: -1", 17, "tokenize.workers", "must be >= 0"),
    ("  seq_len: 2048", "  packing: sideways", 17, "tokenize.packing", "must be one of llm360, bfd, none"),
    ("  seq_len: 2048", "  template: mine.jinja", 17, "tokenize.template", "template file not found"),
    ("  tokenizer: demo", "  tokenizer: nottok.json", 16, "tokenize.tokenizer", "{dir}/nottok.json: not a "
     "tokenizer.json"),
    ("  tokenizer: demo", "  tokenizer: empty_dir", 16, "tokenize.tokenizer", "{dir}/empty_dir: a tokenizer folder"),
]

PRETRAIN = """\
stage: demo
tokenizer: demo
seq_len: 64
max_doc_chars: 1000
split: {method: hash, seed: 360}
mixture: {offline: true, shuffle_buffer: 16}
sources:
  - name: code
    paths: data/*.jsonl
    weight: 0.5
    fim: {rate: 0.5, spm_rate: 0.5}
  - name: web
    paths: [data/*.jsonl]
    subset_field: meta.set
    subsets:
      A: {name: a, weight: 0.3}
"""

PRETRAIN_CASES = [
    # wrong types: each gave a bare TypeError or a traceback deep in a worker
    ("stage: demo", "stage: [demo]", 1, "stage", "must be a string"),
    ("tokenizer: demo", "tokenizer: 5", 2, "tokenizer", "must be a string"),
    ("seq_len: 64", "seq_len: long", 3, "seq_len", "must be an integer"),
    ("seq_len: 64", "seq_len: [64]", 3, "seq_len", "must be an integer"),
    ("seq_len: 64", "seq_len: 4", 3, "seq_len", "must be >= 8"),
    ("seq_len: 64", "seed: x", 3, "seed", "must be an integer"),
    ("seq_len: 64", "seed: -1", 3, "seed", "must be >= 0"),
    ("seq_len: 64", "samples_per_file: []", 3, "samples_per_file", "must be an integer"),
    ("seq_len: 64", "tail: 3", 3, "tail", "must be one of pad, drop"),
    ("seq_len: 64", "normalize: maybe", 3, "normalize", "must be true or false"),
    ("seq_len: 64", "min_sequence_len: 1.5", 3, "min_sequence_len", "must be an integer"),
    ("seq_len: 64", "shards: 3", 3, "shards", "unknown key 'shards'"),
    ("max_doc_chars: 1000", "max_doc_chars: -1", 4, "max_doc_chars", "must be >= 1"),
    ("max_doc_chars: 1000", "max_doc_chars: 0", 4, "max_doc_chars", "must be >= 1"),
    ("max_doc_chars: 1000", "max_doc_chars: big", 4, "max_doc_chars", "must be an integer"),
    # typos and bad values under split: and mixture: (ignored silently before)
    ("split: {method: hash, seed: 360}", "split: {method: hash, seed: x}", 5, "split.seed", "must be an integer"),
    ("split: {method: hash, seed: 360}", "split: {methd: hash}", 5, "split.methd",
     "unknown key 'methd' (did you mean 'method'?)"),
    ("split: {method: hash, seed: 360}", "split: {method: halves}", 5, "split.method", "must be one of hash"),
    ("split: {method: hash, seed: 360}", "split: hash", 5, "split", "must be a mapping"),
    ("mixture: {offline: true, shuffle_buffer: 16}", "mixture: {ofline: true}", 6, "mixture.ofline",
     "unknown key 'ofline' (did you mean 'offline'?)"),
    ("mixture: {offline: true, shuffle_buffer: 16}", "mixture: {shuffle_buffer: x}", 6,
     "mixture.shuffle_buffer", "must be an integer"),
    ("mixture: {offline: true, shuffle_buffer: 16}", "mixture: {shuffle_buffer: 0}", 6,
     "mixture.shuffle_buffer", "must be >= 1"),
    # weights: negative or NaN reached mixture.yaml
    ("weight: 0.5", "weight: -1", 10, "sources[0].weight", "must be >= 0"),
    ("weight: 0.5", "weight: .nan", 10, "sources[0].weight", "must be a finite number"),
    ("weight: 0.5", "weight: .inf", 10, "sources[0].weight", "must be a finite number"),
    ("weight: 0.5", "weight: heavy", 10, "sources[0].weight", "must be a number"),
    ("A: {name: a, weight: 0.3}", "A: {name: a, weight: -0.3}", 16, "sources[1].subsets.A.weight", "must be >= 0"),
    ("A: {name: a, weight: 0.3}", "A: {name: a, weight: .nan}", 16, "sources[1].subsets.A.weight",
     "must be a finite"),
    ("A: {name: a, weight: 0.3}", "A: {name: a}", 16, "sources[1].subsets.A", "missing required key 'weight'"),
    ("A: {name: a, weight: 0.3}", "A: 0.3", 16, "sources[1].subsets.A", "must be a mapping"),
    ("A: {name: a, weight: 0.3}", "A: {name: ../a, weight: 0.3}", 16, "sources[1].subsets.A.name",
     "must be a word"),
    ("fim: {rate: 0.5, spm_rate: 0.5}", "fim: {rate: x}", 11, "sources[0].fim.rate", "must be a number"),
    ("fim: {rate: 0.5, spm_rate: 0.5}", "fim: {rate: 1.5}", 11, "sources[0].fim.rate", "must be >= 0 and <= 1"),
    ("fim: {rate: 0.5, spm_rate: 0.5}", "fim: {mode: sideways}", 11, "sources[0].fim.mode", "must be one of"),
    ("fim: {rate: 0.5, spm_rate: 0.5}", "fim: {rtae: 0.5}", 11, "sources[0].fim.rtae", "unknown key"),
    ("fim: {rate: 0.5, spm_rate: 0.5}", "fim: 0.5", 11, "sources[0].fim", "must be a mapping"),
    ("name: code", "name: ../../x", 8, "sources[0].name", "must be a word"),
    ("name: code", "name: /abs", 8, "sources[0].name", "must be a word"),
    ("paths: data/*.jsonl", "paths: 5", 9, "sources[0].paths", "must be a list"),
    ("paths: data/*.jsonl", "hub: 5", 9, "sources[0].hub", "must be a string"),
    ("weight: 0.5", "half: 2", 10, "sources[0].half", "must be one of 0, 1"),
    ("weight: 0.5", "fraction: 0", 10, "sources[0].fraction", "must be > 0 and <= 1"),
    ("weight: 0.5", "epochs: 0", 10, "sources[0].epochs", "must be >= 1"),
    ("weight: 0.5", "files_per_shard: 0", 10, "sources[0].files_per_shard", "must be >= 1"),
    ("weight: 0.5", "text_fild: content", 10, "sources[0].text_fild", "unknown key 'text_fild'"),
    ("subset_field: meta.set", "subset_field: ''", 14, "sources[1].subset_field", "must not be empty"),
]


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "a.jsonl").write_text('{"text": "x"}\n')
    (folder / "data.json").write_text("[]")
    (folder / "bench.jsonl").write_text('{"text": "a benchmark prompt"}\n')
    (folder / "nottok.json").write_text('{"hello": 1}')
    (folder / "empty_dir").mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _check(exc: UserError, path: Path, line: int, key: str, message: str) -> None:
    text = str(exc)
    assert exc.path == str(path) and exc.line == line, text
    want = f"{path}:{line}: {key}: {message.format(dir=path.parent)}"
    assert text.startswith(want), f"\n got: {text}\nwant: {want}"


@pytest.mark.parametrize(("old", "new", "line", "key", "message"), SFT_CASES)
def test_sft_manifest_bad_values(tmp_path: Path, old: str, new: str, line: int, key: str, message: str) -> None:
    from sft_builder.manifest import load_manifest

    assert old in SFT
    path = _write(tmp_path.resolve(), "m.yaml", SFT.replace(old, new, 1))
    with pytest.raises(UserError) as exc:
        load_manifest(path)
    _check(exc.value, path, line, key, message)


@pytest.mark.parametrize(("old", "new", "line", "key", "message"), PRETRAIN_CASES)
def test_pretrain_manifest_bad_values(tmp_path: Path, old: str, new: str, line: int, key: str,
                                      message: str) -> None:
    from pretrain.config import load_manifest

    assert old in PRETRAIN
    path = _write(tmp_path, "stage.yaml", PRETRAIN.replace(old, new, 1))
    with pytest.raises(UserError) as exc:
        load_manifest(path)
    _check(exc.value, path, line, key, message)


def test_the_good_manifests_load(tmp_path: Path) -> None:
    from pretrain.config import load_manifest as load_stage
    from sft_builder.manifest import load_manifest

    m = load_manifest(_write(tmp_path, "m.yaml", SFT))
    assert m.sources[0].weight == 2.0 and m.sources[0].options.join == "\n\n"
    cfg = load_stage(_write(tmp_path, "stage.yaml", PRETRAIN))
    assert cfg.max_doc_chars == 1000 and cfg.offline_mix and cfg.shuffle_buffer == 16


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.mark.parametrize("wing", ["sft", "pretrain"])
def test_alias_bomb_is_refused_by_both_manifests(tmp_path: Path, wing: str) -> None:
    text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB
    assert len(text.encode()) < 600
    path = _write(tmp_path, "m.yaml", text)
    if wing == "sft":
        from sft_builder.manifest import load_manifest
    else:
        from pretrain.config import load_manifest  # type: ignore[assignment]
    with pytest.raises(UserError, match="aliases expand to more than 10,000 nodes"):
        load_manifest(path)


def test_check_refuses_an_alias_bomb_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crystalmix.cli import main

    path = _write(tmp_path, "m.yaml", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB)
    monkeypatch.setattr(sys, "argv", ["crystalmix", "build", "--check", str(path)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and "m.yaml:" in err and "aliases expand" in err
