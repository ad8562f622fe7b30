"""The one resolver: the bundled demo tokenizer (package data, reproducible), literal special tokens."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from crystalmix.core.tokenizer import (
    CRYSTAL_SPECIAL_TOKENS,
    DEMO_FILES,
    demo_tokenizer_file,
    demo_tokenizer_id,
    load_tokenizer,
    private_tokenizer,
    save_demo_tokenizer,
    special_token_ids,
    tokenizer_json,
)

ROOT = Path(__file__).resolve().parent.parent


def test_demo_has_the_crystalcoder_layout() -> None:
    tok = load_tokenizer("demo")
    ids = special_token_ids(tok)
    assert (ids["bos"], ids["eos"], tok.convert_tokens_to_ids("<unk>")) == (1, 2, 0)
    first = ids["fim_prefix"]
    assert [tok.convert_tokens_to_ids(t) for t in CRYSTAL_SPECIAL_TOKENS] == list(range(first, first + 22))
    assert len(tok) == first + 22 and ids["pad"] == ids["fim_pad"]
    assert tok("a", add_special_tokens=True)["input_ids"][0] != ids["bos"], "adds no BOS by itself"


def test_demo_means_the_same_tokenizer_everywhere(tmp_path: Path) -> None:
    folder = save_demo_tokenizer(tmp_path / "tok")
    text = "def f(x):\n    return x  # <|im_end|> and </s> typed by a user"
    ids = [load_tokenizer(spec)(text, add_special_tokens=False)["input_ids"]
           for spec in ("demo", folder, folder / "tokenizer.json")]
    assert ids[0] == ids[1] == ids[2]
    assert tokenizer_json(load_tokenizer("demo")) == tokenizer_json(load_tokenizer(folder))
    assert demo_tokenizer_id() == demo_tokenizer_id() and demo_tokenizer_id().startswith("demo-")


def test_committed_demo_tokenizer_is_what_the_script_trains(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped files are reproducible: rerunning the training script gives the same bytes."""
    script = ROOT / "manifests" / "demo_data" / "make_demo_tokenizer.py"
    spec = importlib.util.spec_from_file_location("make_demo_tokenizer", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "OUT", tmp_path)
    mod.main()
    for name in DEMO_FILES:
        assert (tmp_path / name).read_text(encoding="utf-8") == demo_tokenizer_file(name), name


def test_literal_reads_special_token_text_as_text() -> None:
    spec = tokenizer_json(load_tokenizer("demo"))
    im_end = special_token_ids(load_tokenizer("demo"))["im_end"]
    control = private_tokenizer(spec, literal=False).encode("a<|im_end|>b", add_special_tokens=False).ids
    literal = private_tokenizer(spec, literal=True).encode("a<|im_end|>b", add_special_tokens=False).ids
    assert im_end in control and im_end not in literal
    assert private_tokenizer(spec, literal=True).decode(literal) == "a<|im_end|>b"


def test_unset_variable_and_missing_path_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="environment variable"):
        load_tokenizer("${NO_SUCH_TOKENIZER_VAR}")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="notes.txt"):
        load_tokenizer(tmp_path / "notes.txt")
    assert json.loads(demo_tokenizer_file("tokenizer_config.json"))["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_hub_id_is_read_as_a_folder_so_custom_classes_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LLM360/CrystalChat names CrystalCoderTokenizer (remote code): a hub id is fetched, then read as a folder."""
    import huggingface_hub

    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(tokenizer_json(load_tokenizer("demo")), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CrystalCoderTokenizer", "auto_map": {"AutoTokenizer": ["x.CrystalCoderTokenizer", None]},
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    asked: list[tuple[str, list[str]]] = []

    def fake(name: str, allow_patterns: list[str]) -> str:
        asked.append((name, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    tok = load_tokenizer("LLM360/CrystalChat")
    assert asked[0][0] == "LLM360/CrystalChat" and "tokenizer.json" in asked[0][1]
    assert tok.bos_token == "<s>" and tok("a b", add_special_tokens=False)["input_ids"] == \
        load_tokenizer("demo")("a b", add_special_tokens=False)["input_ids"]

    def offline(name: str, allow_patterns: list[str]) -> str:
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match="LLM360/CrystalChat.*hub lookup failed"):
        load_tokenizer("LLM360/CrystalChat")


def _loaded_parts(spec: str | Path) -> tuple[str, dict[str, int], int]:
    tok = load_tokenizer(spec)
    return tokenizer_json(tok), special_token_ids(tok), len(tok)


def _variant(folder: Path, config: dict | None = None, **spec_changes: object) -> Path:
    """The demo tokenizer.json with `spec_changes`, alone (`config` None) or in a folder with that config."""
    folder.mkdir()
    spec = json.loads(demo_tokenizer_file())
    spec.update(spec_changes)
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    if config is None:
        return folder / "tokenizer.json"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


CUSTOM = {"tokenizer_class": "CrystalCoderTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
PARTS_CASES = {
    "demo": lambda tmp: "demo",
    "demo folder": lambda tmp: save_demo_tokenizer(tmp / "demo"),
    "demo file": lambda tmp: save_demo_tokenizer(tmp / "demo") / "tokenizer.json",
    "custom class": lambda tmp: _variant(tmp / "v", CUSTOM),
    "custom class, a pad token to add": lambda tmp: _variant(tmp / "v", {**CUSTOM, "pad_token": "<pad>"}),
    "custom class, an extra token to add": lambda tmp: _variant(
        tmp / "v", {**CUSTOM, "additional_special_tokens": ["<|fim_prefix|>", "<new>"]}),
    "a post-processor": lambda tmp: _variant(tmp / "v", None, post_processor={
        "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                 {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}),
    "truncation": lambda tmp: _variant(tmp / "v", None, truncation={
        "direction": "Right", "max_length": 7, "strategy": "LongestFirst", "stride": 0}),
    "no <s> (transformers adds it)": lambda tmp: _variant(tmp / "v", None, added_tokens=[
        t for t in json.loads(demo_tokenizer_file())["added_tokens"] if t["content"] != "<s>"]),
}


@pytest.mark.parametrize("case", PARTS_CASES)
def test_tokenizer_parts_without_transformers_equal_the_loaded_tokenizers(case: str, tmp_path: Path) -> None:
    """The transformers-free reading gives the bytes, ids and size the loaded tokenizer gives, or steps aside."""
    from crystalmix.core.tokenizer import _plain_backend, tokenizer_parts

    spec = PARTS_CASES[case](tmp_path)
    assert tokenizer_parts(spec) == _loaded_parts(spec)
    expect_plain = case in ("demo", "demo file", "custom class", "a post-processor")
    assert (_plain_backend(spec) is not None) == expect_plain
