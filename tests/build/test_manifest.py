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
            r"m\.yaml:7: sources\[0\]\.options\.colour: unknown key 'colour'; valid keys: group_chunks, ",
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
