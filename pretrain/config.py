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

import yaml

from sft_builder.errors import UserError

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


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str, path: Path) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}", path=path)


def _resolve_path(value: str, base: Path) -> str:
    expanded = os.path.expandvars(os.path.expanduser(value))
    p = Path(expanded)
    return str(p if p.is_absolute() else base / p)


def _parse_source(raw: Any, base: Path, path: Path) -> SourceConfig:
    if not isinstance(raw, dict) or "name" not in raw:
        raise UserError("each entry of 'sources' must be a mapping with a 'name'", path=path)
    _check_keys(raw, _SOURCE_KEYS, f"source {raw['name']!r}", path)
    kw = dict(raw)
    paths = kw.pop("paths", ())
    if isinstance(paths, str):
        paths = [paths]
    kw["paths"] = tuple(_resolve_path(str(p), base) for p in paths)
    if not kw["paths"] and not kw.get("hub"):
        raise UserError(f"source {raw['name']!r} needs 'paths' or 'hub'", path=path)
    fim = kw.pop("fim", None) or {}
    try:
        kw["fim"] = FimConfig(**fim)
    except TypeError as exc:
        raise UserError(f"source {raw['name']!r}: bad 'fim' block ({exc})", path=path) from None
    subsets = kw.pop("subsets", None) or {}
    kw["subsets"] = tuple(sorted((str(k), Subset(str(v["name"]), float(v["weight"])))
                                 for k, v in subsets.items()))
    src = SourceConfig(**kw)
    if not 0.0 <= src.fim.rate <= 1.0 or not 0.0 <= src.fim.spm_rate <= 1.0:
        raise UserError(f"source {src.name!r}: fim rates must lie in [0, 1]", path=path)
    if src.fim.mode not in ("context", "document"):
        raise UserError(f"source {src.name!r}: fim mode must be 'context' or 'document'", path=path)
    if src.half not in (None, 0, 1):
        raise UserError(f"source {src.name!r}: half must be 0, 1 or absent", path=path)
    if not 0.0 < src.fraction <= 1.0 or src.epochs < 1 or src.files_per_shard < 1:
        raise UserError(f"source {src.name!r}: fraction must lie in (0, 1], epochs and files_per_shard "
                        "be >= 1", path=path)
    return src


def load_manifest(path: str | Path, **overrides: Any) -> StageConfig:
    """Read a stage manifest; relative paths are relative to the manifest, ``$VARS`` are expanded.

    `overrides` (from CLI options) replace top-level keys when not None.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("manifest not found", path=path) from None
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({exc})", path=path) from None
    if not isinstance(raw, dict):
        raise UserError("a manifest must be a YAML mapping", path=path)
    _check_keys(raw, _STAGE_KEYS, "manifest", path)
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
            raise UserError(f"manifest needs '{key}'", path=path)
    tok = os.path.expandvars(str(kw["tokenizer"]))
    kw.setdefault("tokenizer_name", tok)
    if not Path(tok).is_absolute() and (base / tok).exists():
        tok = str(base / tok)
    kw["tokenizer"] = tok
    kw["sources"] = tuple(_parse_source(s, base, path) for s in kw["sources"])
    names = [o.name for s in kw["sources"] for o in s.outputs()]
    if len(set(names)) != len(names) or "mixed" in names:
        raise UserError(f"output names must be unique across sources and not 'mixed' (the offline mix "
                        f"folder), got {names}", path=path)
    try:
        cfg = StageConfig(**kw)
    except TypeError as exc:
        raise UserError(f"bad manifest ({exc})", path=path) from None
    if cfg.split_method not in ("hash", "file_parity") or cfg.tail not in ("pad", "drop"):
        raise UserError("split.method must be hash|file_parity and tail pad|drop", path=path)
    if cfg.seq_len < 8 or cfg.samples_per_file < 1:
        raise UserError("seq_len must be >= 8 and samples_per_file >= 1", path=path)
    return cfg
