"""Pretraining manifests: frozen config dataclasses, parsed from YAML once at the CLI edge.

Everything downstream receives these objects, never raw dicts, so a typo in a manifest fails here with
one line naming the key instead of deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crystalmix.core.config import (
    NAME,
    SEED,
    Path_,
    YamlDoc,
    at_least,
    between,
    build,
    non_empty,
    one_of,
    spec,
)
from crystalmix.core.errors import UserError
from crystalmix.core.tokenizer import DEMO
from pretrain.split import data_subset_ranges

# context: our Megatron-style pass on packed L+1 chunks; document: on whole documents before packing;
# llm360: LLM360's fim_hdf5_stage2/3.py pass on rows of L input ids, quirks included (FIDELITY.md section 3)
FimMode = Literal["context", "document", "llm360"]
SplitMethod = Literal["hash", "file_parity"]
Tail = Literal["pad", "drop"]
# crystalmix: ``ids + [eos]`` per document. cerebras: Cerebras Model Zoo 2.0.3 as LLM360 ran it, ``[bos] +``
# each ~2000-character piece encoded alone ``+ [eos]``, the stream's leftover dropped.
Tokenization = Literal["crystalmix", "cerebras"]
RATE = spec(between(0, 1))
WEIGHT = spec(at_least(0))  # a sampling weight: relative, finite (NaN and inf are refused by the type)


@dataclass(frozen=True, slots=True)
class FimConfig:
    """Fill-in-the-middle: `rate` of segments (context, llm360) or documents (document) become PSM/SPM."""

    rate: float = field(default=0.0, metadata=RATE)
    spm_rate: float = field(default=0.5, metadata=RATE)
    mode: FimMode = "context"


@dataclass(frozen=True, slots=True)
class Subset:
    """One output folder carved out of a source by a metadata field (e.g. SlimPajama's set name)."""

    name: str = field(metadata=spec(NAME))
    weight: float = field(metadata=WEIGHT)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One input corpus: files (or a hub id), how to read them, and what to do with each document."""

    name: str = field(metadata=spec(NAME))
    paths: tuple[str, ...] = field(default=(), metadata=spec(path="always"))  # from the manifest's folder
    hub: str | None = field(default=None, metadata=spec(non_empty))
    hub_split: str = field(default="train", metadata=spec(non_empty))
    text_field: str = field(default="text", metadata=spec(non_empty))
    subset_field: str | None = field(default=None, metadata=spec(non_empty))
    subsets: tuple[tuple[str, Subset], ...] = ()  # in the manifest: a mapping, set name -> {name, weight}
    weight: float = field(default=1.0, metadata=WEIGHT)
    half: int | None = field(default=None, metadata=spec(one_of(0, 1)))
    fraction: float = field(default=1.0, metadata=spec(between(0, 1, lo_open=True)))
    epochs: int = field(default=1, metadata=spec(between(1, 1_000)))
    fim: FimConfig = field(default_factory=FimConfig)
    # more files per shard: fewer, fuller output files for thin subsets
    files_per_shard: int = field(default=1, metadata=spec(at_least(1)))
    # ftfy.fix_text with NFC before tokenizing, as Cerebras' StarCoder configs did (use_ftfy: True)
    ftfy: bool = False

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.paths and not self.hub:
            yield "", f"source {self.name!r} needs 'paths' or 'hub'"
        if self.subsets and not self.subset_field:
            yield "subsets", "subsets need subset_field (the metadata field that names each document's set)"

    def subset_for(self, key: str | None) -> Subset | None:
        """The output a document goes to; None drops it (its set is not part of this stage)."""
        if not self.subsets:
            return Subset(self.name, self.weight)
        for k, sub in self.subsets:
            if k == key:
                return sub
        return None

    def outputs(self) -> list[Subset]:
        return [sub for _, sub in self.subsets] if self.subsets else [Subset(self.name, self.weight)]


@dataclass(frozen=True, slots=True)
class SplitSection:
    """``split:`` how a document's `half` is decided."""

    method: SplitMethod = "hash"
    seed: int = field(default=360, metadata=spec(SEED))


def _data_subset(value: Any) -> str | None:
    if value is None:
        return None
    try:
        data_subset_ranges(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class ReplayEntry:
    """Data folders built by an earlier stage that join this stage's mixture (not rebuilt).

    LLM360's stage 3 replayed stage 2's StarCoder FIM rows and SlimPajama, each with ``data_subset:
    0.0-0.1`` (Cerebras' reader then uses the first 10% of the rows of the sorted files). The weight is
    spread evenly over `folders`.
    """

    name: str = field(metadata=spec(NAME))
    folders: tuple[str, ...] = field(metadata=spec(non_empty, path="always"))
    weight: float = field(metadata=WEIGHT)
    data_subset: str | None = field(default=None, metadata=spec(_data_subset))


@dataclass(frozen=True, slots=True)
class MixtureSection:
    """``mixture:`` whether to also write one pre-mixed folder, its shuffle window, and replayed folders."""

    offline: bool = False
    shuffle_buffer: int = field(default=4096, metadata=spec(at_least(1)))
    replay: tuple[ReplayEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class StageConfig:
    """A whole stage: global packing options plus its sources."""

    stage: str = field(metadata=spec(non_empty))
    tokenizer: str = field(metadata=spec(non_empty))
    sources: tuple[SourceConfig, ...] = field(metadata=spec(non_empty))
    tokenizer_name: str = ""
    seq_len: int = field(default=2048, metadata=spec(between(8, 1 << 20)))
    seed: int = field(default=0, metadata=spec(SEED))
    split_seed: int = 360
    split_method: SplitMethod = "hash"
    samples_per_file: int = field(default=50_000, metadata=spec(at_least(1)))
    tail: Tail = "pad"
    normalize: bool = False
    min_sequence_len: int = field(default=1, metadata=spec(at_least(0)))
    max_doc_chars: int = field(default=200_000, metadata=spec(at_least(1)))  # 0 or less: pieces never shrink
    offline_mix: bool = False
    shuffle_buffer: int = 4096
    replay: tuple[ReplayEntry, ...] = ()
    tokenization: Tokenization = "crystalmix"
    # the model's vocabulary (embedding rows, e.g. CrystalCoder's 32032 for a 32022-token tokenizer):
    # recorded for the trainer in metadata.json, data_params.json and mixture.yaml
    model_vocab_size: int | None = field(default=None, metadata=spec(at_least(1)))

    def problems(self) -> Iterator[tuple[str, str]]:
        names = [o.name for s in self.sources for o in s.outputs()] + [r.name for r in self.replay]
        if len(set(names)) != len(names) or "mixed" in names:
            yield "sources", (f"output names must be unique across sources and replayed folders and not 'mixed' "
                              f"(the offline mix folder), got {names}")
        if sum(o.weight for s in self.sources for o in s.outputs()) + sum(r.weight for r in self.replay) <= 0:
            yield "sources", "the weights of the outputs sum to 0: nothing would be sampled"
        for src in self.sources:
            if self.tokenization == "cerebras" and src.fim.rate > 0 and src.fim.mode == "document":
                yield "sources", (f"source {src.name!r}: fim mode 'document' encodes documents its own way; with "
                                  "tokenization: cerebras use mode 'llm360' (LLM360's pass) or 'context'")
        for src in self.sources:
            if src.fim.rate > 0 and src.fim.mode == "llm360" and self.tail == "pad":
                yield "tail", (f"source {src.name!r}: fim mode 'llm360' is LLM360's pass on unpadded rows; "
                               "set 'tail: drop' (or tokenization: cerebras, which drops the tail)")
        if self.tokenization == "cerebras" and self.tail == "pad":
            yield "tail", ("tokenization: cerebras drops the leftover tokens of each stream (Cerebras never pads "
                           "LM rows); remove 'tail: pad' or set 'tail: drop'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys a manifest sets at its top level; the split and mixture sections fill the other fields.
_SECTIONS = {"split": ("split_method", "split_seed"), "mixture": ("offline_mix", "shuffle_buffer", "replay")}
_DERIVED = {"tokenizer_name", *(k for ks in _SECTIONS.values() for k in ks)}
_TOP_KEYS = {f.name for f in dataclasses.fields(StageConfig)} - _DERIVED


class _Overrides:
    """Errors for values given on the command line (``--seq-len``) name the option, not a manifest line."""

    def __init__(self, doc: YamlDoc, keys: set[str]) -> None:
        self.doc, self.keys = doc, keys

    def _option(self, at: Path_) -> str | None:
        return f"--{at[0].replace('_', '-')}" if at and at[0] in self.keys and isinstance(at[0], str) else None

    def error(self, at: Path_, msg: str) -> UserError:
        opt = self._option(at)
        return UserError(f"{opt}: {msg}") if opt else self.doc.error(at, msg)

    def unknown(self, at: Path_, key: str, valid: Any) -> UserError:
        return self.doc.unknown(at, key, valid)

    def invalid(self, at: Path_, value: Any, why: str) -> UserError:
        return self.error(at, why)


def _removed_keys(raw: dict[str, Any], doc: YamlDoc) -> None:
    """Keys that existed once: a clear pointer to what replaced them, not "unknown key"."""
    sources = raw.get("sources")
    for i, src in enumerate(sources if isinstance(sources, list) else []):
        fim = src.get("fim") if isinstance(src, dict) else None
        if isinstance(fim, dict) and "exact_pieces" in fim:
            raise doc.error(("sources", i, "fim", "exact_pieces"),
                            "exact_pieces was removed: for LLM360's FIM (each piece encoded as a fresh text, and "
                            "the rest of its pass) use 'mode: llm360'; without the key, pieces decode to the "
                            "exact text")


def load_manifest(path: str | Path, **overrides: Any) -> StageConfig:
    """Read a stage manifest; relative paths are relative to the manifest, ``$VARS`` are expanded.

    `overrides` (from CLI options) replace top-level keys when not None.
    """
    path = Path(path)
    doc = YamlDoc(path)
    raw = doc.data
    if not isinstance(raw, dict):
        raise doc.error((), "a manifest must be a YAML mapping")
    given = {k: v for k, v in overrides.items() if v is not None}
    site = _Overrides(doc, set(given))
    _removed_keys(raw, doc)
    top = {k: v for k, v in raw.items() if k not in _SECTIONS}
    top.update(given)
    if top.get("tokenization") == "cerebras":
        top.setdefault("tail", "drop")
    split = build(SplitSection, raw.get("split"), doc, ("split",))
    mixture = build(MixtureSection, raw.get("mixture"), doc, ("mixture",))
    tok = top.get("tokenizer")
    tok = os.path.expandvars(tok) if isinstance(tok, str) else tok
    fixed = {"split_method": split.method, "split_seed": split.seed, "offline_mix": mixture.offline,
             "replay": mixture.replay,
             "shuffle_buffer": mixture.shuffle_buffer, "tokenizer_name": tok if isinstance(tok, str) else ""}
    if isinstance(tok, str) and tok != DEMO and not Path(tok).is_absolute() and (doc.base / tok).exists():
        top["tokenizer"] = str(doc.base / tok)  # a local tokenizer beside the manifest; else a name or hub id
    elif isinstance(tok, str):
        top["tokenizer"] = tok
    return build(StageConfig, top, site, fixed=fixed, keys=_TOP_KEYS, base=doc.base)
