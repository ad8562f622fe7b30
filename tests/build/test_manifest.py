from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crystalmix.cli import main
from crystalmix.core.errors import UserError
from sft_builder.manifest import load_manifest
from sft_builder.steps.dedup import NearDedupConfig
from sft_builder.steps.language import LanguageConfig

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
seed: 7
sources:
  - name: chat
    adapter: sharegpt
    inputs: data.json
    weight: 2
  - name: code
    adapter: alpaca
    inputs: [data.json]
    epochs: 3
    max_samples: 10
    priority: -1
    steps:
      language: false
      clean: {html_to_markdown: false}
steps:
  clean: {}
  language: {languages: [en, zh]}
  exact_dedup: {}
  near_dedup: {threshold: 0.9}
  mix: {shuffle: false}
split: {test_fraction: 0.1}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data.json").write_text("[]")
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


def test_good_manifest(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, GOOD))
    assert m.seed == 7 and m.order == ("clean", "language", "exact_dedup", "near_dedup")
    assert [s.name for s in m.sources] == ["code", "chat"]  # priority -1 first
    code, chat = m.sources
    assert "language" not in code.steps and code.steps["clean"].html_to_markdown is False
    assert chat.steps["language"] == LanguageConfig(languages=("en", "zh"))
    assert m.steps["near_dedup"] == NearDedupConfig(threshold=0.9)
    assert code.inputs == (str(tmp_path / "data.json"),) and chat.weight == 2.0 and code.epochs == 3
    assert m.split.test_fraction == 0.1 and m.mix.shuffle is False


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("    weight: 2\n", "    weight: -1\n", r"m\.yaml:6: sources\[0\]\.weight: must be >= 0 and <= 1,000, got -1$"),
        ("    weight: 2\n", "    wieght: 2\n", r"m\.yaml:6: sources\[0\]\.wieght: unknown key"),
        (
            "adapter: sharegpt",
            "adapter: sharegtp",
            r"m\.yaml:4: sources\[0\]\.adapter: unknown adapter 'sharegtp'",
        ),
        (
            "inputs: data.json",
            "inputs: missing.json",
            r"m\.yaml:5: sources\[0\]\.inputs\[0\]: file not found",
        ),
        (
            "near_dedup: {threshold: 0.9}",
            "near_dedup: {threshold: 1.5}",
            r"m\.yaml:20: steps\.near_dedup\.threshold",
        ),
        (
            "near_dedup: {threshold: 0.9}",
            "near_dedup: {treshold: 0.9}",
            r"m\.yaml:20: steps\.near_dedup\.treshold",
        ),
        (
            "language: {languages: [en, zh]}",
            "language: {decide_on: sometimes}",
            r"steps\.language\.decide_on",
        ),
        ("  mix: {shuffle: false}\n", "", None),
        ("seed: 7", "seed: seven", r"m\.yaml:1: seed: must be an integer"),
        (
            "    epochs: 3\n",
            "    epochs: 3\n    weight: 1\n",
            r"sources\[1\]\.epochs: give either weight or epochs",
        ),
        ("  - name: code", "  - name: chat", r"sources\[1\]\.name: duplicate source name"),
        ("split: {test_fraction: 0.1}", "split: {test_fraction: 1.0}", r"m\.yaml:22: split\.test_fraction"),
        (
            "  mix: {shuffle: false}\n",
            "  mix: {shuffle: false}\n  quality: {}\n",
            r"m\.yaml:21: steps\.mix: mix is always",
        ),
        (
            "    weight: 2\n",
            "    weight: 2\n    options: {colour: red}\n",
            r"m\.yaml:7: sources\[0\]\.options\.colour: unknown key 'colour'; valid keys: "
            "allow_empty_final_answer, group_chunks, ",
        ),
    ],
)
def test_bad_manifests_name_line_and_key(tmp_path: Path, old: str, new: str, where: str | None) -> None:
    text = GOOD.replace(old, new)
    assert text != GOOD
    if where is None:  # a change that is fine: mix may be left out
        load_manifest(write(tmp_path, text))
        return
    with pytest.raises(UserError, match=where):
        load_manifest(write(tmp_path, text))


def test_per_source_override_of_a_step_not_in_steps(tmp_path: Path) -> None:
    text = GOOD.replace("      language: false\n", "      quality: {min_chars: 3}\n")
    with pytest.raises(
        UserError, match=r"m\.yaml:14: sources\[1\]\.steps\.quality: step 'quality' is not enabled"
    ):
        load_manifest(write(tmp_path, text))


def test_dedup_settings_cannot_differ_per_source(tmp_path: Path) -> None:
    text = GOOD.replace("      language: false\n", "      near_dedup: {threshold: 0.5}\n")
    with pytest.raises(UserError, match="only `enabled`"):
        load_manifest(write(tmp_path, text))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"m\.yaml:\d+: not valid YAML"):
        load_manifest(write(tmp_path, "seed: 1\nsources:\n  - [unclosed\n"))


def test_hub_ids_are_kept_as_written(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, GOOD.replace("inputs: data.json", "inputs: Open-Orca/SlimOrca")))
    assert m.sources[1].inputs == ("Open-Orca/SlimOrca",)


def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, GOOD.replace("    weight: 2\n", "    weight: -1\n"))
    monkeypatch.setattr(sys, "argv", ["crystalmix", "build", "--check", str(p)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "sources[0].weight" in err and ":6:" in err


@pytest.mark.parametrize("name", ["demo.yaml", "stage3a.yaml"])
def test_bundled_manifests_validate(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["crystalmix", "build", "--check", str(ROOT / "manifests" / name)])
    main()
    assert "OK" in capsys.readouterr().out


def test_tokenize_section_errors_name_the_line(tmp_path: Path) -> None:
    pytest.importorskip("sft_builder.encode")
    text = GOOD + "tokenize:\n  tokenizer: demo\n  packing: sideways\n"
    with pytest.raises(UserError, match=r"m\.yaml:25: tokenize\.packing"):
        load_manifest(write(tmp_path, text))
    m = load_manifest(write(tmp_path, GOOD + "tokenize:\n  tokenizer: demo\n"))
    assert m.tokenize is not None and m.tokenize_raw == {"tokenizer": "demo"}


def test_check_resolves_hub_ids_when_online(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    from types import SimpleNamespace

    from crystalmix.cli.build import check_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    files = [SimpleNamespace(rfilename="data/a.jsonl"), SimpleNamespace(rfilename="b.json")]
    monkeypatch.setattr(hub.HfApi, "dataset_info", lambda self, name, **kw: SimpleNamespace(siblings=files))
    assert check_hub("owner/name", ("b.json", "data/*.jsonl")) == ""
    with pytest.raises(UserError, match="no file matching c.json"):
        check_hub("owner/name", ("c.json",))

    def offline(self: object, name: str, **kw: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(hub.HfApi, "dataset_info", offline)
    assert "checked for form only" in check_hub("owner/name", ())


# -- paths in a manifest are read from its folder, wherever the command runs ---------------------------
TEMPLATES = ROOT / "templates"


def _small(tmp_path: Path, tokenize: str) -> Path:
    """A one-source manifest with a tokenize section, in its own folder."""
    rows = [{"instruction": f"Question number {i} about sorting lists?", "output": f"Answer {i}: use sorted()."}
            for i in range(40)]
    import json

    (tmp_path / "data.json").write_text(json.dumps(rows))
    p = tmp_path / "m.yaml"
    p.write_text("seed: 1\nsources:\n  - {name: a, adapter: alpaca, inputs: data.json}\nsteps: {}\n" + tokenize)
    return p


def test_tokenize_paths_resolve_against_the_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copy(TEMPLATES / "crystalchat.jinja", tmp_path / "t.jinja")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    p = _small(tmp_path, "tokenize: {template: t.jinja, tokenizer: tok}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    m = load_manifest(p)
    assert m.tokenize.template == str(tmp_path / "t.jinja") and m.tokenize.tokenizer == str(tmp_path / "tok")
    # names stay names: a bundled template, the demo tokenizer, a hub id
    m = load_manifest(_small(tmp_path, "tokenize: {template: crystalchat, tokenizer: LLM360/CrystalCoder}\n"))
    assert (m.tokenize.template, m.tokenize.tokenizer) == ("crystalchat", "LLM360/CrystalCoder")


def test_a_template_beside_the_manifest_builds_with_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: the relative template failed in each worker's initializer, and the pool respawned forever."""
    import shutil

    from sft_builder.build import build

    shutil.copy(TEMPLATES / "crystalchat.jinja", tmp_path / "t.jinja")
    p = _small(tmp_path, "tokenize: {template: t.jinja, tokenizer: demo, seq_len: 256, workers: 2}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = build(load_manifest(p), tmp_path / "out").report
    assert report["tokenize"]["train"]["conversations"] == 40
    assert (tmp_path / "out" / "tokenized" / "train" / "data-00000.h5").is_file()


def test_a_json_that_is_not_a_tokenizer_is_a_user_error_naming_it(tmp_path: Path) -> None:
    from crystalmix.core.tokenizer import load_tokenizer

    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(UserError, match=rf"^{tmp_path}/tokenizer\.json: not a tokenizer\.json"):
        load_tokenizer(bad)
    bad.write_text('{"model": {"type": "Nonsense"}}')  # the shape, but not one the library can read
    with pytest.raises(UserError, match=rf"^{tmp_path}/tokenizer\.json: not a tokenizer\.json the tokenizers"):
        load_tokenizer(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match=r"m\.yaml:\d+: tokenize\.tokenizer: .*not a tokenizer\.json"):
        load_manifest(_small(tmp_path, "tokenize: {tokenizer: tokenizer.json}\n"))


def test_a_benchmark_that_is_not_utf8_is_a_user_error_naming_it(tmp_path: Path) -> None:
    from sft_builder.steps.decontaminate import BenchmarkConfig, iter_benchmark

    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    with pytest.raises(UserError, match=rf"^{tmp_path}/bench\.jsonl:1: not UTF-8 text"):
        list(iter_benchmark(BenchmarkConfig(name="b", path=str(bench), fields=("text",))))


def test_benchmark_paths_resolve_against_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    text = GOOD.replace("  mix: {shuffle: false}\n", "  decontaminate: {benchmarks: [{name: b, path: b.jsonl, "
                        "fields: [text]}]}\n  mix: {shuffle: false}\n")
    monkeypatch.chdir("/")
    m = load_manifest(write(tmp_path, text))
    assert m.steps["decontaminate"].benchmarks[0].path == str(tmp_path / "b.jsonl")


# -- adapter options: the same builder from a manifest and from key=value ------------------------------
def test_adapter_options_from_the_command_line_and_from_a_manifest(tmp_path: Path) -> None:
    from sft_builder.sources.base import make_adapter, parse_options
    from sft_builder.sources.oasst1 import OASST1Options

    opts = parse_options(OASST1Options, {"lang": "en,de", "paths": "all", "include_deleted": "true"},
                         context="adapter 'oasst1'")
    assert (opts.lang, opts.paths, opts.include_deleted) == (("en", "de"), "all", True)
    with pytest.raises(UserError, match="bad value \\[1, 2\\] for option 'join' of adapter 'alpaca': must be a str"):
        make_adapter("alpaca", {"join": [1, 2]})
    m = load_manifest(write(tmp_path, GOOD.replace("    weight: 2\n", "    options: {role_map: {bot: assistant}}\n")))
    chat = m.source("chat")
    assert chat.options.role_map == {"bot": "assistant"}
    assert make_adapter("sharegpt", chat.options).options is chat.options  # the build reuses the parsed options


# -- the step table: one row is all the manifest, the build and the report need -----------------------
def test_every_step_is_in_the_table_with_a_config_and_a_scope() -> None:
    import dataclasses

    from sft_builder.steps.table import STEPS, stage_order

    assert list(STEPS) == ["clean", "language", "quality", "exact_dedup", "near_dedup", "decontaminate"]
    for name, s in STEPS.items():
        assert s.name == name and s.scope in ("record", "global")
        assert dataclasses.fields(s.config)[0].name == "enabled"  # every step can be turned off
    assert stage_order() == ("adapter", *STEPS, "mix")


def test_adding_a_step_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new record step, registered by one row, is read from the manifest, run by the build and reported."""
    import json
    from dataclasses import dataclass, field

    from crystalmix.core.config import at_least, spec
    from crystalmix.core.records import Conversation
    from sft_builder.build import build
    from sft_builder.steps.base import Drop, FilterStep
    from sft_builder.steps.table import STEPS, StepSpec

    @dataclass(frozen=True, slots=True)
    class ShortConfig:
        enabled: bool = True
        max_words: int = field(default=5, metadata=spec(at_least(1)))

    class Short(FilterStep):
        name = "short"

        def __init__(self, cfg: ShortConfig) -> None:
            super().__init__()
            self.cfg = cfg

        def apply(self, conv: Conversation) -> Conversation | Drop:
            words = len(conv.messages[-1].content.split())
            return conv if words <= self.cfg.max_words else Drop("too_many_words")

    monkeypatch.setitem(STEPS, "short", StepSpec("short", ShortConfig, Short, "record"))
    rows = [{"instruction": f"Question {i}?", "output": "word " * (3 if i % 2 else 9)} for i in range(10)]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    p = tmp_path / "m.yaml"
    p.write_text("sources:\n  - {name: a, adapter: alpaca, inputs: data.json}\nsteps:\n  short: {max_words: 4}\n")
    report = build(load_manifest(p), tmp_path / "out").report
    assert report["sources"]["a"]["dropped"] == {"short:too_many_words": 5}
    assert list(report["steps"])[-2:] == ["short", "mix"] and report["steps"]["short"]["enabled"]
    assert report["steps"]["short"]["dropped"] == {"too_many_words": 5}
    p.write_text("sources:\n  - {name: a, adapter: alpaca, inputs: data.json}\nsteps:\n  short: {max_words: 0}\n")
    with pytest.raises(UserError, match=r"m\.yaml:4: steps\.short\.max_words: must be >= 1"):
        load_manifest(p)
