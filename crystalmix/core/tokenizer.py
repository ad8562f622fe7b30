"""Tokenizer loading, the CrystalCoder special tokens, and a small trainable demo tokenizer.

The demo tokenizer mimics the CrystalCoder/LLaMA layout (SentencePiece-style ``▁`` word marker, byte
fallback, ``<unk>``=0, ``<s>``=1, ``</s>``=2, then the learned vocabulary, then the 22 CrystalCoder
special tokens in their real order) so the demo and the tests run offline with the same token *names*
as the real model; only the ids differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crystalmix.core.errors import UserError

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>")
STARCODER_TOKENS = (
    "<|filename|>", "<|gh_stars|>", "<|issue_start|>", "<|issue_comment|>", "<|issue_closed|>",
    "<|jupyter_start|>", "<|jupyter_text|>", "<|jupyter_code|>", "<|jupyter_output|>", "<|empty_output|>",
    "<|commit_before|>", "<|commit_msg|>", "<|commit_after|>", "<|reponame|>",
)
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|sys_start|>", "<|sys_end|>")
# ids 32000..32021 in the real CrystalCoder tokenizer, in this order
CRYSTAL_SPECIAL_TOKENS: tuple[str, ...] = FIM_TOKENS + STARCODER_TOKENS + CHAT_TOKENS
BASE_SPECIAL = ("<unk>", "<s>", "</s>")


def load_tokenizer(spec: str | Path) -> Any:
    """Load a tokenizer from a local folder, a ``tokenizer.json`` file, or a hub id (through transformers).

    Folders whose config names a custom class (CrystalCoder's ``CrystalCoderTokenizer``, which needs
    remote code) fall back to a plain fast tokenizer built from their ``tokenizer.json`` and config.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        why = local_tokenizer_problem(path)
        if why:
            raise UserError(why, path=path)
        try:
            return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<s>", eos_token="</s>",
                                           unk_token="<unk>")
        except Exception as exc:  # the Rust parser raises a bare Exception for a file it cannot read
            raise UserError(f"not a tokenizer.json the tokenizers library can load: {exc}", path=path) from None
    if path.is_dir():
        tj = path / "tokenizer.json"
        cfg_path = path / "tokenizer_config.json"
        cfg: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        custom = cfg.get("auto_map") or cfg.get("tokenizer_class", "").startswith("CrystalCoder")
        if tj.exists() and custom:
            names = ("bos_token", "eos_token", "unk_token", "pad_token")
            kw = {k: cfg[k] for k in names if isinstance(cfg.get(k), str)}
            tok = PreTrainedTokenizerFast(tokenizer_file=str(tj), **kw)
            if cfg.get("chat_template"):
                tok.chat_template = cfg["chat_template"]
            return tok
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a tokenizer from this folder: {exc}", path=path) from None
    if path.exists():
        raise UserError("not a tokenizer folder or tokenizer.json", path=path)
    try:
        return AutoTokenizer.from_pretrained(str(spec))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer {str(spec)!r} (not a local path; hub lookup failed: {exc})") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def local_tokenizer_problem(path: Path) -> str | None:
    """Why a local tokenizer path cannot be a tokenizer (a cheap look, no loading), or None.

    A ``.json`` file must be a JSON object with a ``model`` (the tokenizers format); a folder must hold one
    of `TOKENIZER_FILES`.
    """
    if path.is_dir():
        if not any((path / n).is_file() for n in TOKENIZER_FILES):
            return f"a tokenizer folder holds one of {', '.join(TOKENIZER_FILES)}; this one holds none"
        return None
    if path.suffix != ".json":
        return "a tokenizer is a folder, a tokenizer.json file, a hub id or 'demo'"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        return f"not a tokenizer.json (not valid JSON: {exc})"
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        return "not a tokenizer.json (a JSON object with a 'model' section)"
    return None


def train_demo_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 4000) -> Path:
    """Train a small LLaMA-style BPE tokenizer on `texts`, add the CrystalCoder special tokens, save it.

    Returns the folder, loadable with `load_tokenizer`. Like CrystalCoder's, it adds no BOS/EOS itself.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Split before each word marker so pieces never span words (as SentencePiece's pieces never do).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BASE_SPECIAL), show_progress=False,
                                  max_token_length=16)
    tok.train_from_iterator(texts, trainer=trainer)

    # Re-lay the vocabulary as LLaMA does: specials, the 256 byte-fallback pieces, then the learned pieces.
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {t: i for i, t in enumerate(BASE_SPECIAL)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for i, t in enumerate(BASE_SPECIAL)
    ]
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    spec["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(spec))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": list(CRYSTAL_SPECIAL_TOKENS)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the tokens pretraining and SFT rely on (eos, pad, FIM, chat)."""
    ids: dict[str, int] = {
        "bos": tokenizer.convert_tokens_to_ids("<s>"),
        "eos": tokenizer.convert_tokens_to_ids("</s>"),
    }
    names = {"fim_prefix": "<|fim_prefix|>", "fim_middle": "<|fim_middle|>", "fim_suffix": "<|fim_suffix|>",
             "fim_pad": "<|fim_pad|>", "im_start": "<|im_start|>", "im_end": "<|im_end|>",
             "sys_start": "<|sys_start|>", "sys_end": "<|sys_end|>"}
    unk = tokenizer.convert_tokens_to_ids("<unk>")
    for key, token in names.items():
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is not None and tid != unk:
            ids[key] = int(tid)
    ids["pad"] = ids.get("fim_pad", ids["eos"])
    return ids


# -- the bundled demo tokenizer ------------------------------------------------------------------------
DEMO = "demo"
_REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = _REPO / "manifests" / "demo_data"
DEMO_VOCAB = 4000


def demo_corpus() -> list[str]:
    """The texts the demo tokenizer learns from: the bundled demo data, else the repository's own text.

    Sorted by path so the trained vocabulary depends only on the files' contents.
    """
    files = sorted(p for p in DEMO_DATA.rglob("*") if p.is_file()) if DEMO_DATA.is_dir() else []
    if not files:
        files = sorted(p for d in ("sft_builder", "templates", "docs") for p in (_REPO / d).rglob("*")
                       if p.is_file() and p.suffix in (".py", ".md", ".jinja"))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files if p.stat().st_size < 20_000_000]


def demo_tokenizer_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the demo tokenizer, trained once per corpus content and cached (offline, deterministic).

    The cache lives in `cache_dir`, else ``$CRYSTALMIX_CACHE``, else ``~/.cache/crystalmix``; its name holds a
    hash of the corpus, so a changed demo corpus trains a new tokenizer instead of reusing a stale one.
    """
    import hashlib
    import os
    import shutil
    import tempfile

    texts = demo_corpus()
    digest = hashlib.sha256()
    for t in texts:
        digest.update(hashlib.sha256(t.encode("utf-8")).digest())
    base = Path(cache_dir or os.environ.get("CRYSTALMIX_CACHE") or Path.home() / ".cache" / "crystalmix")
    final = base / f"demo-tokenizer-{digest.hexdigest()[:16]}"
    if (final / "tokenizer.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-tokenizer-", dir=base))
    try:
        train_demo_tokenizer(texts, tmp, vocab_size=DEMO_VOCAB)
        try:
            os.replace(tmp, final)  # atomic; a concurrent winner is fine, both trained the same tokenizer
        except OSError:
            if not (final / "tokenizer.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_tokenizer(spec: str | Path) -> Any:
    """`load_tokenizer`, with ``demo`` meaning the cached demo tokenizer (see `demo_tokenizer_dir`)."""
    return load_tokenizer(demo_tokenizer_dir() if str(spec) == DEMO else spec)


# -- showing tokens as text ------------------------------------------------------------------------------
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _decoder_types(tokenizer: Any) -> set[str]:
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    found, todo = set(), [spec]
    while todo:
        d = todo.pop()
        found.add(d.get("type"))
        todo.extend(d.get("decoders") or [])
    return found


def token_pieces(tokenizer: Any, ids: Iterable[int]) -> list[str]:
    """The text of each token, such that the pieces joined read as the tokenizer's decoder reads the ids.

    A character that takes several tokens (SentencePiece byte-fallback pieces ``<0xE2><0x80><0x93>`` for
    ``–``, or byte-level BPE pieces) is decoded from the bytes of the run and shown on the token that
    completes it; the tokens before it show nothing, so the text is never mojibake (``â\\x80\\x93``) and every
    token keeps its own place (and its own mask). Added tokens show as written; bytes that never complete a
    character show as U+FFFD, as the decoder does. The decoder's trimming of the very first space is not
    applied: each token shows its own leading space.
    """
    import codecs

    ids = [int(i) for i in ids]
    types = _decoder_types(tokenizer)
    byte_level = "ByteLevel" in types
    table = _byte_level_decoder() if byte_level else {}
    added = {i for i in tokenizer.backend_tokenizer.get_added_tokens_decoder()}
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out: list[str] = []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = -1  # index of the last token whose bytes the decoder may still hold

    def flush() -> None:
        nonlocal pending
        if pending >= 0:
            out[pending] += decoder.decode(b"", final=True)
            pending = -1

    for tid, piece in zip(ids, pieces, strict=True):
        piece = piece or ""
        if tid in added:
            flush()
            out.append(piece)
            continue
        if byte_level:
            data = bytes(table[c] for c in piece) if all(c in table for c in piece) else piece.encode("utf-8")
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                data = bytes([int(piece[3:5], 16)])
            except ValueError:
                data = piece.encode("utf-8")
        else:
            data = piece.replace("▁", " ").encode("utf-8")
        out.append(decoder.decode(data))
        pending = len(out) - 1
    flush()
    return out
