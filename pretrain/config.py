"""Pretraining manifests: frozen config dataclasses, parsed from YAML once at the CLI edge.

Everything downstream receives these objects, never raw dicts, so a typo in a manifest fails here with
one line naming the key instead of deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crystalmix.core.config import Path_, YamlDoc

FimMode = Literal["context", "document"]
SplitMethod = Literal["hash", "file_parity"]
Tail = Literal["pad", "drop"]


@dataclass(frozen=True, slots=True)
class FimConfig:
    """Fill-in-the-middle: `rate` of segments (context) or documents (document) become PSM/SPM."""

    rate: float = 0.0
    spm_rate: float = 0.5
    mode: FimMode = "context"
    # True: pieces decode to exactly the original text. False: each piece encoded as a fresh text, as
    # LLM360's Megatron code did (SentencePiece then adds a word-start space at every cut).
    exact_pieces: bool = True


@dataclass(frozen=True, slots=True)
class Subset:
    """One output folder carved out of a source by a metadata field (e.g. SlimPajama's set name)."""

    name: str
    weight: float


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One input corpus: files (or a hub id), how to read them, and what to do with each document."""

    name: str
    paths: tuple[str, ...] = ()
    hub: str | None = None
    hub_split: str = "train"
    text_field: str = "text"
    subset_field: str | None = None
    subsets: tuple[tuple[str, Subset], ...] = ()
    weight: float = 1.0
    half: int | None = None
    fraction: float = 1.0
    epochs: int = 1
    fim: FimConfig = field(default_factory=FimConfig)
    files_per_shard: int = 1  # more files per shard: fewer, fuller output files for thin subsets

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
class StageConfig:
    """A whole stage: global packing options plus its sources."""

    stage: str
    tokenizer: str
    sources: tuple[SourceConfig, ...]
    tokenizer_name: str = ""
    seq_len: int = 2048
    seed: int = 0
    split_seed: int = 360
    split_method: SplitMethod = "hash"
    samples_per_file: int = 50_000
    tail: Tail = "pad"
    normalize: bool = False
    min_sequence_len: int = 1
    max_doc_chars: int = 200_000
    offline_mix: bool = False
    shuffle_buffer: int = 4096

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_STAGE_KEYS = {f.name for f in dataclasses.fields(StageConfig)} | {"split", "mixture"}
_SOURCE_KEYS = {f.name for f in dataclasses.fields(SourceConfig)}


def _check_keys(obj: dict[str, Any], allowed: set[str], doc: YamlDoc, at: Path_) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise doc.error((*at, unknown[0]), f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _resolve_path(value: str, base: Path) -> str:
    expanded = os.path.expandvars(os.path.expanduser(value))
    p = Path(expanded)
    return str(p if p.is_absolute() else base / p)


def _parse_source(raw: Any, base: Path, doc: YamlDoc, at: Path_) -> SourceConfig:
    if not isinstance(raw, dict) or "name" not in raw:
        raise doc.error(at, "each entry of 'sources' must be a mapping with a 'name'")
    _check_keys(raw, _SOURCE_KEYS, doc, at)
    kw = dict(raw)
    paths = kw.pop("paths", ())
    if isinstance(paths, str):
        paths = [paths]
    kw["paths"] = tuple(_resolve_path(str(p), base) for p in paths)
    if not kw["paths"] and not kw.get("hub"):
        raise doc.error(at, f"source {raw['name']!r} needs 'paths' or 'hub'")
    fim = kw.pop("fim", None) or {}
    try:
        kw["fim"] = FimConfig(**fim)
    except TypeError as exc:
        raise doc.error((*at, "fim"), f"bad 'fim' block ({exc})") from None
    subsets = kw.pop("subsets", None) or {}
    try:
        kw["subsets"] = tuple(sorted((str(k), Subset(str(v["name"]), float(v["weight"])))
                                     for k, v in subsets.items()))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise doc.error((*at, "subsets"), f"each subset needs a name and a numeric weight ({exc})") from None
    try:
        src = SourceConfig(**kw)
    except TypeError as exc:
        raise doc.error(at, f"bad source ({exc})") from None
    if not 0.0 <= src.fim.rate <= 1.0 or not 0.0 <= src.fim.spm_rate <= 1.0:
        raise doc.error((*at, "fim"), "fim rates must lie in [0, 1]")
    if src.fim.mode not in ("context", "document"):
        raise doc.error((*at, "fim", "mode"), "fim mode must be 'context' or 'document'")
    if src.half not in (None, 0, 1):
        raise doc.error((*at, "half"), "half must be 0, 1 or absent")
    if not 0.0 < src.fraction <= 1.0 or src.epochs < 1 or src.files_per_shard < 1:
        raise doc.error(at, "fraction must lie in (0, 1], epochs and files_per_shard be >= 1")
    return src


def load_manifest(path: str | Path, **overrides: Any) -> StageConfig:
    """Read a stage manifest; relative paths are relative to the manifest, ``$VARS`` are expanded.

    `overrides` (from CLI options) replace top-level keys when not None.
    """
    path = Path(path)
    doc = YamlDoc(path)
    raw = doc.data
    if not isinstance(raw, dict):
        raise doc.error((), "a manifest must be a YAML mapping")
    _check_keys(raw, _STAGE_KEYS, doc, ())
    base = path.parent.resolve()
    kw = dict(raw)
    split = kw.pop("split", None) or {}
    if "method" in split:
        kw["split_method"] = split["method"]
    if "seed" in split:
        kw["split_seed"] = int(split["seed"])
    mixture = kw.pop("mixture", None) or {}
    if "offline" in mixture:
        kw["offline_mix"] = bool(mixture["offline"])
    if "shuffle_buffer" in mixture:
        kw["shuffle_buffer"] = int(mixture["shuffle_buffer"])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("stage", "tokenizer", "sources"):
        if key not in kw:
            raise doc.error((), f"manifest needs '{key}'")
    tok = os.path.expandvars(str(kw["tokenizer"]))
    kw.setdefault("tokenizer_name", tok)
    if not Path(tok).is_absolute() and (base / tok).exists():
        tok = str(base / tok)
    kw["tokenizer"] = tok
    if not isinstance(kw["sources"], list):
        raise doc.error(("sources",), "'sources' must be a list")
    kw["sources"] = tuple(_parse_source(s, base, doc, ("sources", i)) for i, s in enumerate(kw["sources"]))
    names = [o.name for s in kw["sources"] for o in s.outputs()]
    if len(set(names)) != len(names) or "mixed" in names:
        raise doc.error(("sources",), f"output names must be unique across sources and not 'mixed' (the "
                        f"offline mix folder), got {names}")
    try:
        cfg = StageConfig(**kw)
    except TypeError as exc:
        raise doc.error((), f"bad manifest ({exc})") from None
    if cfg.split_method not in ("hash", "file_parity") or cfg.tail not in ("pad", "drop"):
        raise doc.error(("split",), "split.method must be hash|file_parity and tail pad|drop")
    if cfg.seq_len < 8 or cfg.samples_per_file < 1:
        raise doc.error(("seq_len",), "seq_len must be >= 8 and samples_per_file >= 1")
    return cfg
