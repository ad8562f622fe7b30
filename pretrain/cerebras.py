"""Cerebras Model Zoo 2.0.3 tokenization as LLM360 ran it (``tokenization: cerebras``), and its metadata file.

LLM360 tokenized with Cerebras' ``LMDataPreprocessor``: ftfy + NFC on StarCoder text, the text cut at the
first space at or after every 2,000 characters (``split_text_to_tokenize``), each piece encoded on its own
by a tokenizer whose post-processor adds ``<s>`` (only the first piece keeps it), ``</s>`` appended, the
documents packed into chunks of L+1 with stride L and the stream's leftover dropped. Encoding a piece on
its own gives it SentencePiece's word-start marker, so every cut adds one ``▁`` token (id 29871 in
LLaMA's vocabulary). ``data_params.json`` is the file Cerebras writes beside its HDF5 files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystalmix.core.errors import UserError

SPLIT_CHARS = 2000  # Cerebras' chunk_len_to_split default, which LLM360's scripts kept
FTFY_NORMALIZER = "NFC"
STAT_KEYS = ("num_sequences", "num_tokens", "detokenized_bytes", "detokenized_chars", "non_pad_tokens",
             "loss_valid_tokens")


def split_text(text: str, max_chars: int = SPLIT_CHARS) -> list[str]:
    """Cerebras' cut: each piece runs to the first space at or after `max_chars` characters into it.

    The space starts the next piece, so nothing is lost: ``"".join(split_text(t)) == t``.
    """
    pieces = []
    start = 0
    while start < len(text):
        end = text.find(" ", start + max_chars)
        end = len(text) if end < 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def encode_documents(tokenizer: Any, texts: list[str], bos_id: int, eos_id: int) -> list[np.ndarray]:
    """``[bos] + ids of each piece encoded alone + [eos]`` per text, with one batch call for all pieces.

    `tokenizer` is a `tokenizers.Tokenizer` that adds no special tokens of its own (the CrystalCoder
    tokenizer adds none); the BOS LLM360's tokenizer added through its post-processor is added here.
    """
    pieces: list[str] = []
    counts = []
    for text in texts:
        split = split_text(text)
        pieces += split
        counts.append(len(split))
    encoded = iter(tokenizer.encode_batch_fast(pieces, add_special_tokens=False))
    out = []
    for n in counts:
        ids = [bos_id]
        for _ in range(n):
            ids += next(encoded).ids
        ids.append(eos_id)
        out.append(np.asarray(ids, dtype=np.int32))
    return out


def fix_text(text: str) -> str:
    """ftfy.fix_text with NFC, Cerebras' ``use_ftfy: True, ftfy_normalizer: NFC``."""
    import ftfy

    return ftfy.fix_text(text, normalization=FTFY_NORMALIZER)


def require_ftfy(source: str) -> None:
    """Fail before any work when a source asks for ftfy and it is not installed."""
    try:
        import ftfy  # noqa: F401
    except ImportError:
        raise UserError(f"source {source!r} sets ftfy: true, which needs the ftfy package: pip install ftfy"
                        ) from None


_LLAMA_DECODER = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
                  {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]


@dataclass(slots=True)
class RowStats:
    """Cerebras' ``h5_dataset_stats`` of rows: non-pad tokens count neither EOS nor pad, text is decoded
    (special tokens skipped, as Cerebras' ``decode`` did).

    For LLaMA-style decoders the text comes from the encoder's byte table with the special ids removed and
    one leading space stripped, which is what the Rust decoder does, at about a third of its cost.
    """

    eos_id: int
    pad_id: int
    encoder: Any  # pretrain.tokenize.Encoder
    totals: list[dict[str, int]] = field(default_factory=list)  # per file
    special: np.ndarray = field(init=False)
    fast: bool = field(init=False)

    def __post_init__(self) -> None:
        spec = json.loads(self.encoder.doc.to_str())
        self.special = np.asarray(sorted(a["id"] for a in spec.get("added_tokens", []) if a.get("special")),
                                  dtype=np.int64)
        self.fast = (spec.get("decoder") or {}).get("decoders") == _LLAMA_DECODER

    def text(self, inputs: np.ndarray) -> str:
        if not self.fast:
            return str(self.encoder.doc.decode(inputs.tolist()))
        kept = inputs[~np.isin(inputs, self.special)].tolist()
        text = self.encoder.decode_raw_batch([kept])[0]
        return text[1:] if text.startswith(" ") else text

    def add(self, row: np.ndarray, file: int) -> None:
        inputs = row[0]
        text = self.text(inputs)
        part = {"num_sequences": 1, "num_tokens": int(inputs.size),
                "detokenized_bytes": len(text.encode("utf-8", "surrogatepass")), "detokenized_chars": len(text),
                "non_pad_tokens": int(((inputs != self.eos_id) & (inputs != self.pad_id)).sum()),
                "loss_valid_tokens": int(row[1].sum())}
        while len(self.totals) <= file:
            self.totals.append(dict.fromkeys(STAT_KEYS, 0))
        self.totals[file] = add(self.totals[file], part)


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in sorted(set(a) | set(b))}


def data_params(*, inputs: list[str], folder: str, tokenizer_file: str, eos_id: int, pad_id: int, seq_len: int,
                samples_per_file: int, seed: int, text_field: str, use_ftfy: bool, min_sequence_len: int,
                discarded: int, processed_files: int, successful_files: int, raw_chars: int, raw_bytes: int,
                vocab_size: int, stats: dict[str, int]) -> dict[str, Any]:
    """``data_params.json`` in Cerebras' schema: the run's arguments, ``post-process`` and ``h5_dataset_stats``.

    Only values crystalmix actually used are written (no process count: shards are scheduled freely).
    """
    return {
        "setup": {"input_dir": inputs, "output_dir": folder, "dataset_processor": "LMDataPreprocessor",
                  "written_by": "crystalmix pretrain build (tokenization: cerebras)"},
        "processing": {"tokenizer_type": "HuggingFaceTokenizer", "encoder_file": tokenizer_file,
                       "eos_id": eos_id, "pad_id": pad_id, "max_seq_length": seq_len, "short_seq_prob": 0.0,
                       "output_name": "data", "files_per_record": samples_per_file, "write_in_batch": True,
                       "seed": seed, "split_text_to_tokenize": True, "chunk_len_to_split": SPLIT_CHARS,
                       "remove_bos_in_chunks": True},
        "dataset": {"jsonl_key": text_field, "use_ftfy": use_ftfy,
                    "ftfy_normalizer": FTFY_NORMALIZER if use_ftfy else None, "wikitext_detokenize": False,
                    "pack_sequences": True, "min_sequence_len": min_sequence_len},
        "post-process": {"discarded_files": discarded, "processed_files": processed_files,
                         "successful_files": successful_files, "n_examples": stats.get("num_sequences", 0),
                         "raw_chars_count": raw_chars, "raw_bytes_count": raw_bytes, "eos_id": eos_id,
                         "pad_id": pad_id, "vocab_size": vocab_size},
        "h5_dataset_stats": {k: int(stats.get(k, 0)) for k in STAT_KEYS},
    }
