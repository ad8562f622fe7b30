"""The CrystalCoder tokenizer read without transformers: the same bytes, special ids and size as loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalmix.core.tokenizer import _plain_backend, load_tokenizer, special_token_ids, tokenizer_json, tokenizer_parts


@pytest.mark.parametrize("name", ["crystalcoder", "crystalcoder/tokenizer.json", "llama"])
def test_real_tokenizer_parts_equal_the_loaded_ones(realdata: Path, name: str) -> None:
    spec = realdata / "tokenizers" / name
    tok = load_tokenizer(spec)
    assert tokenizer_parts(spec) == (tokenizer_json(tok), special_token_ids(tok), len(tok))
    assert (_plain_backend(spec) is not None) == name.startswith("crystalcoder")  # llama: AutoTokenizer's own
