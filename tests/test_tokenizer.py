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
