"""The one tokenizer resolver, the CrystalCoder special tokens, and the bundled demo tokenizer.

`load_tokenizer` understands ``demo``, a folder, a ``tokenizer.json`` file and a hub id, for both wings.
The demo tokenizer ships inside this package (``demo_tokenizer/``, read through importlib.resources;
trained once by ``manifests/demo_data/make_demo_tokenizer.py``). It mimics the CrystalCoder/LLaMA layout
(SentencePiece-style ``▁`` word marker, byte fallback, ``<unk>``=0, ``<s>``=1, ``</s>``=2, the learned
vocabulary, then the 22 CrystalCoder special tokens in their real order) so the demo and the tests run
offline with the same token *names* as the real model; only the ids differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from importlib.resources import as_file, files
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


DEMO = "demo"
DEMO_FILES = ("tokenizer.json", "tokenizer_config.json")
_DEMO_RESOURCE = "demo_tokenizer"  # a folder of package data beside this module
# what a plain fast tokenizer takes from a tokenizer_config.json
_CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "clean_up_tokenization_spaces")


def demo_tokenizer_file(name: str = "tokenizer.json") -> str:
    """Text of one file of the bundled demo tokenizer (`DEMO_FILES`), from the installed package."""
    return files(__package__).joinpath(_DEMO_RESOURCE, name).read_text(encoding="utf-8")


def demo_tokenizer_id() -> str:
    """``demo-`` and a content hash of the bundled ``tokenizer.json``: which demo tokenizer wrote a file."""
    return "demo-" + hashlib.sha256(demo_tokenizer_file().encode("utf-8")).hexdigest()[:16]


def save_demo_tokenizer(out_dir: str | Path) -> Path:
    """Write the bundled demo tokenizer into `out_dir` (loadable by `load_tokenizer` and AutoTokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        (out / name).write_text(demo_tokenizer_file(name), encoding="utf-8")
    return out


def load_tokenizer(spec: str | Path) -> Any:
    """Load a transformers fast tokenizer: ``demo``, a local folder, a ``tokenizer.json`` file, or a hub id.

    Folders whose config names a custom class (CrystalCoder's ``CrystalCoderTokenizer``, which needs
    remote code) fall back to a plain fast tokenizer built from their ``tokenizer.json`` and config.
    Raises `UserError` when nothing loads, naming the spec.
    """
    from transformers import AutoTokenizer

    if "$" in str(spec):
        raise UserError(f"tokenizer {str(spec)!r}: an environment variable in it is not set")
    if str(spec) == DEMO:
        # as_file: a real path even from a zipped install (transformers reads tokenizer.json by path)
        with as_file(files(__package__).joinpath(_DEMO_RESOURCE, "tokenizer.json")) as demo:
            return _fast_from_file(demo, json.loads(demo_tokenizer_file("tokenizer_config.json")))
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        why = local_tokenizer_problem(path)
        if why:
            raise UserError(why, path=path)
        try:
            return _fast_from_file(path, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
        except Exception as exc:  # the Rust parser raises a bare Exception for a file it cannot read
            raise UserError(f"not a tokenizer.json the tokenizers library can load: {exc}", path=path) from None
    if path.is_dir():
        tj = path / "tokenizer.json"
        cfg_path = path / "tokenizer_config.json"
        cfg: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        custom = cfg.get("auto_map") or cfg.get("tokenizer_class", "").startswith("CrystalCoder")
        if tj.exists() and custom:
            return _fast_from_file(tj, cfg)
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a tokenizer from this folder: {exc}", path=path) from None
    if path.exists():
        raise UserError("not a tokenizer folder or tokenizer.json", path=path)
    return _load_hub(str(spec))


def _load_hub(name: str) -> Any:
    """A hub id: its tokenizer files are fetched (or found in the hub cache), then read as a folder, so a
    repository whose config names a custom class (LLM360/CrystalChat's ``CrystalCoderTokenizer``) loads
    without running remote code, as a local copy of it does."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name, allow_patterns=[*TOKENIZER_FILES, "special_tokens_map.json"])
    except Exception as exc:  # offline, unknown repo, network: the hub client's errors have no common base
        raise UserError(f"cannot load tokenizer {name!r} (not 'demo' nor a local path; hub lookup "
                        f"failed: {type(exc).__name__}: {exc})") from None
    try:
        return load_tokenizer(folder)
    except UserError as exc:
        raise UserError(f"tokenizer {name!r} from the hub: {exc}") from None


def _fast_from_file(tokenizer_file: Path, cfg: dict[str, Any]) -> Any:
    """A plain fast tokenizer from a ``tokenizer.json`` and the token names (and template) of a config.

    By file, not from text: a tokenizer built from a `tokenizers.Tokenizer` object costs ~30 MB more.
    """
    from transformers import PreTrainedTokenizerFast

    kw: dict[str, Any] = {k: cfg[k] for k in _CONFIG_KEYS if isinstance(cfg.get(k), str | bool)}
    extra = cfg.get("additional_special_tokens") or cfg.get("extra_special_tokens")  # transformers 4 / 5 name
    if isinstance(extra, list) and all(isinstance(t, str) for t in extra):
        kw["additional_special_tokens"] = extra  # already in the vocabulary: no new ids
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **kw)
    if cfg.get("chat_template"):
        tok.chat_template = cfg["chat_template"]
    return tok


def tokenizer_parts(spec: str | Path) -> tuple[str, dict[str, int], int]:
    """(``tokenizer.json`` text, special token ids, vocabulary size) of what `load_tokenizer` resolves.

    Where the spec names a ``tokenizer.json`` that transformers would load as it is (`_plain_backend`),
    these are read with `tokenizers` alone: importing transformers costs seconds per process. Otherwise
    the tokenizer is loaded. Both give the same three values (tests/test_tokenizer.py compares them).
    """
    plain = _plain_backend(spec)
    if plain is not None:
        tok, unk = plain

        def to_id(token: str) -> Any:
            tid = tok.token_to_id(token)
            return tok.token_to_id(unk) if tid is None and unk is not None else tid

        return str(tok.to_str()), _special_ids(to_id), int(tok.get_vocab_size(with_added_tokens=True))
    loaded = load_tokenizer(spec)
    if not getattr(loaded, "is_fast", False):
        raise UserError(f"tokenizer {str(spec)!r} has no fast (Rust) version; pretraining needs one")
    return tokenizer_json(loaded), special_token_ids(loaded), len(loaded)


def _plain_backend(spec: str | Path) -> tuple[Any, str | None] | None:
    """The Rust tokenizer `load_tokenizer` would wrap, built without transformers, and the unk token's name;
    None when only transformers can say what it would load.

    That is the `_fast_from_file` cases (``demo``, a ``tokenizer.json`` file, a folder whose config names a
    custom class) when the wrapper changes nothing: every token the config names is already an added token,
    no truncation or padding is set, the vocabulary is below the size transformers patches. Its one change
    then, as transformers 5 makes it, is an empty template post-processor where the file has none.
    """
    from tokenizers import Tokenizer, processors

    text, cfg = _backend_source(str(spec))
    if text is None:
        return None
    try:
        tok = Tokenizer.from_str(text)
    except Exception:  # noqa: BLE001 - unreadable: load_tokenizer raises the user's error for it
        return None
    named = [cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if isinstance(cfg.get(k), str)]
    extra = cfg.get("additional_special_tokens") or cfg.get("extra_special_tokens")
    if isinstance(extra, list):
        if not all(isinstance(t, str) for t in extra):
            return None
        named += extra
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    if (any(t not in added for t in named) or tok.truncation is not None or tok.padding is not None
            or tok.get_vocab_size() > 100_000):
        return None
    if tok.post_processor is None:
        tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    unk = cfg.get("unk_token")
    return tok, unk if isinstance(unk, str) else None


def _backend_source(spec: str) -> tuple[str | None, dict[str, Any]]:
    """(``tokenizer.json`` text, the config `_fast_from_file` would get) for the specs it loads, else None."""
    if "$" in spec:
        return None, {}
    if spec == DEMO:
        return demo_tokenizer_file(), json.loads(demo_tokenizer_file("tokenizer_config.json"))
    path = Path(spec)
    try:
        if path.is_file() and path.suffix == ".json":
            if local_tokenizer_problem(path):
                return None, {}
            return path.read_text(encoding="utf-8"), {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        tj, cfg_path = path / "tokenizer.json", path / "tokenizer_config.json"
        if path.is_dir() and tj.is_file() and cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            if isinstance(cfg, dict) and (cfg.get("auto_map") or str(cfg.get("tokenizer_class", "")).startswith(
                    "CrystalCoder")):
                return tj.read_text(encoding="utf-8"), cfg
    except (OSError, ValueError):  # unreadable: load_tokenizer says why
        pass
    return None, {}


def tokenizer_json(tok: Any) -> str:
    """The ``tokenizer.json`` text of a transformers fast tokenizer (or a `tokenizers.Tokenizer`)."""
    backend = getattr(tok, "backend_tokenizer", tok)
    return str(backend.to_str())


def private_tokenizer(tokenizer_json: str, *, literal: bool) -> Any:
    """A private Rust `tokenizers.Tokenizer` (no truncation, no padding) from ``tokenizer.json`` text.

    ``literal=True`` reads special-token text as plain text: a document or message holding
    ``<|im_end|>`` or ``<|fim_prefix|>`` gets the ids of those characters, never the control id. This is
    the one place both wings get that behaviour. A private copy, because transformers flips
    ``encode_special_tokens`` on its shared backend during ``split_special_tokens`` calls.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.encode_special_tokens = literal
    tok.no_truncation()
    tok.no_padding()
    return tok


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
    specials = [*BASE_SPECIAL, *CRYSTAL_SPECIAL_TOKENS]
    ids = [*range(len(BASE_SPECIAL)), *range(len(vocab), len(vocab) + len(CRYSTAL_SPECIAL_TOKENS))]
    spec["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for i, t in zip(ids, specials, strict=True)
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
    # A config every transformers version reads (4.x and 5.x alike), written by hand rather than by
    # save_pretrained, whose class name and keys change between versions.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "clean_up_tokenization_spaces": False,
              "additional_special_tokens": list(CRYSTAL_SPECIAL_TOKENS)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(Tokenizer.from_str(json.dumps(spec)).to_str(pretty=True), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the tokens pretraining and SFT rely on (eos, pad, FIM, chat)."""
    return _special_ids(tokenizer.convert_tokens_to_ids)


def _special_ids(to_id: Callable[[str], Any]) -> dict[str, int]:
    """`special_token_ids` through a lookup that answers as ``convert_tokens_to_ids`` does (unknown: unk)."""
    ids: dict[str, int] = {"bos": to_id("<s>"), "eos": to_id("</s>")}
    names = {"fim_prefix": "<|fim_prefix|>", "fim_middle": "<|fim_middle|>", "fim_suffix": "<|fim_suffix|>",
             "fim_pad": "<|fim_pad|>", "im_start": "<|im_start|>", "im_end": "<|im_end|>",
             "sys_start": "<|sys_start|>", "sys_end": "<|sys_end|>"}
    unk = to_id("<unk>")
    for key, token in names.items():
        tid = to_id(token)
        if tid is not None and tid != unk:
            ids[key] = int(tid)
    ids["pad"] = ids.get("fim_pad", ids["eos"])
    return ids


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
