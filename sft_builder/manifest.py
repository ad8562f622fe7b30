"""The build manifest: YAML parsed once, at the CLI edge, into frozen config objects.

Every error names the manifest file, the line and the key path (``sources[2].weight``), because the YAML
node tree is composed with its marks and walked beside the loaded data. Step settings are the step
modules' own frozen dataclasses; a source may override them (``steps: {language: {enabled: false}}``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from crystalmix.core.atomic import fingerprint
from crystalmix.core.config import Path_, YamlDoc, dotted
from crystalmix.core.errors import UserError
from sft_builder.sources.base import get_adapter_class, parse_options
from sft_builder.steps.clean import CleanConfig
from sft_builder.steps.decontaminate import DecontaminateConfig
from sft_builder.steps.dedup import ExactDedupConfig, NearDedupConfig
from sft_builder.steps.language import LanguageConfig
from sft_builder.steps.quality import QualityConfig

STEP_CONFIGS: dict[str, type] = {
    "clean": CleanConfig,
    "language": LanguageConfig,
    "quality": QualityConfig,
    "exact_dedup": ExactDedupConfig,
    "near_dedup": NearDedupConfig,
    "decontaminate": DecontaminateConfig,
}
RECORD_STEPS = ("clean", "language", "quality", "decontaminate")
GLOBAL_STEPS = ("exact_dedup", "near_dedup")
STEP_NAMES = (*STEP_CONFIGS, "mix")
SOURCE_KEYS = (
    "name adapter inputs split data_files options weight epochs max_samples priority steps optional license"
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_EXTS = (".json", ".jsonl", ".ndjson", ".gz", ".zst", ".zstd", ".parquet", ".arrow", ".txt")


@dataclass(frozen=True, slots=True)
class MixConfig:
    shuffle: bool = True


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """`test_fraction` of the groups (pieces of one original conversation) go to the test split."""

    test_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One source. `inputs` are resolved local paths/globs or hub ids (``hf:`` prefix or ``owner/name``)."""

    name: str
    adapter: str
    inputs: tuple[str, ...]
    split: str = "train"
    data_files: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    weight: float | None = None
    epochs: int | None = None
    max_samples: int | None = None
    priority: int = 0
    steps: dict[str, Any] = field(default_factory=dict)  # step name -> effective config; absent = off
    line: int = 0
    license: str | None = None  # the licence the source declares (for the Hub dataset card)

    @property
    def multiplier(self) -> float:
        return (
            float(self.epochs) if self.epochs is not None else (1.0 if self.weight is None else self.weight)
        )

    def fingerprint_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "adapter": self.adapter,
            "inputs": list(self.inputs),
            "split": self.split,
            "data_files": list(self.data_files),
            "options": self.options,
        }


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    seed: int
    sources: tuple[SourceConfig, ...]  # in priority order: the first wins in dedup
    order: tuple[str, ...]  # enabled steps in order (mix excluded; it always runs last)
    steps: dict[str, Any]
    mix: MixConfig = MixConfig()
    split: SplitConfig = SplitConfig()
    tokenize: Any = None
    tokenize_raw: dict[str, Any] | None = None
    settings_fingerprint: str = ""  # of the YAML data itself: independent of where the files live
    skipped: tuple[tuple[str, str], ...] = ()  # optional sources left out: (name, why)

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)


def is_hub(spec: str) -> bool:
    return spec.startswith("hf:") or bool(HUB_ID.match(spec))


def hub_name(spec: str) -> str:
    return spec[3:] if spec.startswith("hf:") else spec


def load_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest; raises `UserError` naming the file, line and key path."""
    doc = YamlDoc(Path(path).resolve())
    raw = doc.data
    if not isinstance(raw, dict):
        raise doc.error((), "a manifest is a mapping with seed, sources and steps")
    _check_keys(doc, (), raw, {"seed", "sources", "steps", "split", "tokenize"}, required={"sources"})
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise doc.error(("seed",), "must be an integer")
    order, steps, mix = _parse_steps(doc, raw.get("steps") or {})
    split = _build(doc, ("split",), SplitConfig, raw.get("split") or {})
    if not 0.0 <= split.test_fraction < 1.0:
        raise doc.error(("split", "test_fraction"), "must be in [0, 1)")
    srcs = raw.get("sources")
    if not isinstance(srcs, list) or not srcs:
        raise doc.error(("sources",), "must be a non-empty list of sources")
    base = doc.path.parent
    parsed = [_parse_source(doc, i, s, order, steps, base) for i, s in enumerate(srcs)]
    names = [s.name if isinstance(s, SourceConfig) else s[0] for s in parsed]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise doc.error(("sources", i, "name"), f"duplicate source name {n!r}")
    sources = [s for s in parsed if isinstance(s, SourceConfig)]
    skipped = tuple(s for s in parsed if not isinstance(s, SourceConfig))
    if not sources:
        raise doc.error(("sources",), "every source is optional and missing its inputs: nothing to build")
    sources.sort(key=lambda s: s.priority)
    tokenize, tok_raw = None, raw.get("tokenize")
    if tok_raw is not None:
        if not isinstance(tok_raw, dict):
            raise doc.error(("tokenize",), "must be a mapping")
        tokenize = _parse_tokenize(doc, tok_raw)
    settings = fingerprint(raw)
    m = Manifest(doc.path, seed, tuple(sources), order, steps, mix, split, tokenize, tok_raw, settings, skipped)
    return resolve_benchmarks(m)


def _parse_tokenize(doc: YamlDoc, raw: dict[str, Any]) -> Any:
    try:
        from sft_builder.encode import TokenizeConfig  # issue 4's stage, imported only when used
    except ImportError:
        raise doc.error(
            ("tokenize",), "this installation has no tokenize stage (sft_builder.encode)"
        ) from None
    try:
        return TokenizeConfig.from_mapping(raw, "tokenize")
    except UserError as exc:
        if exc.line is not None:
            raise
        key = re.match(r"tokenize\.(\w+)", str(exc))  # their messages start with the key path
        at: Path_ = ("tokenize", key.group(1)) if key else ("tokenize",)
        raise UserError(str(exc), path=doc.path, line=doc.line(at)) from None


def _parse_steps(doc: YamlDoc, raw: Any) -> tuple[tuple[str, ...], dict[str, Any], MixConfig]:
    if not isinstance(raw, dict):
        raise doc.error(("steps",), "must be a mapping of step name to settings, in order")
    _check_keys(doc, ("steps",), raw, set(STEP_NAMES))
    keys = list(raw)
    if "mix" in keys and keys[-1] != "mix":
        raise doc.error(("steps", "mix"), "mix is always the last step")
    order: list[str] = []
    steps: dict[str, Any] = {}
    for name in keys:
        if name == "mix":
            continue
        body = raw[name]
        if body is False:
            continue
        cfg = _build(doc, ("steps", name), STEP_CONFIGS[name], {} if body in (None, True) else body)
        _validate_step(doc, ("steps", name), cfg)
        if cfg.enabled:
            order.append(name)
            steps[name] = cfg
    mix_raw = raw.get("mix")
    mix = _build(doc, ("steps", "mix"), MixConfig, mix_raw if isinstance(mix_raw, dict) else {})
    return tuple(order), steps, mix


def _parse_source(
    doc: YamlDoc, i: int, raw: Any, order: tuple[str, ...], steps: dict[str, Any], base: Path
) -> SourceConfig | tuple[str, str]:
    """A source's config, or (name, why) for an `optional` source whose local inputs are not there."""
    at: Path_ = ("sources", i)
    if not isinstance(raw, dict):
        raise doc.error(at, "a source is a mapping with name, adapter and inputs")
    allowed = set(SOURCE_KEYS.split())
    _check_keys(doc, at, raw, allowed, required={"name", "adapter", "inputs"})
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise doc.error((*at, "name"), "must be a word of letters, digits, '_', '-' or '.'")
    adapter = raw["adapter"]
    try:
        cls = get_adapter_class(str(adapter))
    except UserError as exc:
        raise doc.error((*at, "adapter"), str(exc)) from None
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise doc.error((*at, "options"), "must be a mapping")
    try:
        opts = parse_options(cls.Options, options, context=f"adapter {adapter!r}")
        cls(opts, source=name)  # adapters validate cross-option rules on construction
    except UserError as exc:
        raise doc.error((*at, "options"), str(exc)) from None
    inputs = raw["inputs"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) and x for x in inputs):
        raise doc.error((*at, "inputs"), "must be a path, glob or hub id, or a non-empty list of them")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise doc.error((*at, "optional"), "must be true or false")
    try:
        resolved = tuple(_resolve_input(doc, (*at, "inputs", j), x, base) for j, x in enumerate(inputs))
    except UserError as exc:
        if not optional:
            raise
        return (str(name), f"optional source skipped: {exc}")
    data_files = raw.get("data_files") or ()
    data_files = (data_files,) if isinstance(data_files, str) else tuple(map(str, data_files))
    weight, epochs, max_samples = raw.get("weight"), raw.get("epochs"), raw.get("max_samples")
    if weight is not None and epochs is not None:
        raise doc.error((*at, "epochs"), "give either weight or epochs, not both")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0
    ):
        raise doc.error((*at, "weight"), f"must be a number >= 0, got {weight!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise doc.error((*at, "epochs"), f"must be an integer >= 1, got {epochs!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 0
    ):
        raise doc.error((*at, "max_samples"), f"must be an integer >= 0, got {max_samples!r}")
    priority = raw.get("priority", i)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise doc.error((*at, "priority"), "must be an integer (lower wins in dedup)")
    split = raw.get("split", "train")
    if not isinstance(split, str):
        raise doc.error((*at, "split"), "must be a split name")
    license_ = raw.get("license")
    if license_ is not None and not isinstance(license_, str):
        raise doc.error((*at, "license"), "must be a licence identifier such as apache-2.0")
    eff = _source_steps(doc, (*at, "steps"), raw.get("steps") or {}, order, steps)
    return SourceConfig(
        name,
        str(adapter),
        resolved,
        split,
        data_files,
        options,
        None if weight is None else float(weight),
        epochs,
        max_samples,
        priority,
        eff,
        doc.line(at),
        license_,
    )


def _source_steps(
    doc: YamlDoc, at: Path_, raw: Any, order: tuple[str, ...], steps: dict[str, Any]
) -> dict[str, Any]:
    """The global step configs with this source's overrides applied; a step turned off is left out."""
    if not isinstance(raw, dict):
        raise doc.error(at, "must be a mapping of step name to overrides")
    _check_keys(doc, at, raw, set(STEP_CONFIGS))
    eff = dict(steps)
    for name, body in raw.items():
        if name not in steps:
            raise doc.error((*at, name), f"step {name!r} is not enabled in the manifest's steps")
        if body is False:
            body = {"enabled": False}
        if not isinstance(body, dict):
            raise doc.error((*at, name), "must be a mapping of settings, or false")
        if name in GLOBAL_STEPS and set(body) - {"enabled"}:
            raise doc.error((*at, name), "dedup runs across sources: only `enabled` can be set per source")
        over = _build(doc, (*at, name), STEP_CONFIGS[name], body)  # validates keys and types
        given = {k: getattr(over, k) for k in body}
        cfg = dataclasses.replace(steps[name], **given)
        _validate_step(doc, (*at, name), cfg)
        eff[name] = cfg
    return {k: v for k, v in eff.items() if v.enabled}


def _resolve_input(doc: YamlDoc, at: Path_, spec: str, base: Path) -> str:
    """A local path/glob made absolute against the manifest folder, or a hub id kept as written."""
    if spec.startswith("hf:"):
        if not HUB_ID.match(spec[3:]):
            raise doc.error(at, f"{spec!r} is not a hub id of the form owner/name")
        return spec
    p = Path(spec).expanduser()
    local = p if p.is_absolute() else base / p
    if (
        not local.exists()
        and not has_magic(spec)
        and HUB_ID.match(spec)
        and not spec.lower().endswith(LOCAL_EXTS)
    ):
        return spec
    if has_magic(spec):
        if not sorted(local.parent.glob(local.name)) and not glob(str(local), recursive=True):
            raise doc.error(at, f"no files match {str(local)!r}")
    elif not local.exists():
        raise doc.error(at, f"file not found: {local}")
    return str(local)


def _check_keys(
    doc: YamlDoc,
    at: Path_,
    raw: dict[str, Any],
    allowed: set[str],
    required: frozenset[str] | set[str] = frozenset(),
) -> None:
    for key in raw:
        if key not in allowed:
            raise doc.error((*at, str(key)), f"unknown key {key!r}; valid keys: {', '.join(sorted(allowed))}")
    for key in sorted(required - set(raw)):
        raise doc.error(at, f"missing required key {key!r}")


def _build(doc: YamlDoc, at: Path_, cls: type, raw: Any) -> Any:
    """A frozen config dataclass from a mapping, with nested dataclass lists (benchmarks) handled."""
    if not isinstance(raw, dict):
        raise doc.error(at, "must be a mapping of settings")
    fields = {f.name for f in dataclasses.fields(cls)}
    _check_keys(doc, at, raw, fields)
    hints = get_type_hints(cls)
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in raw.items():
        inner = _nested_dataclass(hints[key])
        if inner is None:
            flat[key] = value
            continue
        if not isinstance(value, list):
            raise doc.error((*at, key), "must be a list")
        nested[key] = tuple(_build(doc, (*at, key, j), inner, v) for j, v in enumerate(value))
    for key, value in flat.items():
        try:
            parse_options(cls, {key: value}, context=dotted(at))
        except UserError as exc:
            raise doc.error((*at, key), str(exc)) from None
    try:
        obj = parse_options(cls, flat, context=dotted(at))
    except TypeError as exc:  # a required field (e.g. a benchmark's name) is missing
        raise doc.error(at, str(exc)) from None
    return dataclasses.replace(obj, **nested) if nested else obj


def _nested_dataclass(tp: Any) -> type | None:
    if get_origin(tp) is tuple:
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _validate_step(doc: YamlDoc, at: Path_, cfg: Any) -> None:
    """Range checks the types alone cannot express."""
    checks: list[tuple[str, bool, str]] = []
    if isinstance(cfg, NearDedupConfig):
        checks += [
            ("threshold", 0 < cfg.threshold <= 1, "must be in (0, 1]"),
            ("shingle_size", cfg.shingle_size >= 1, "must be >= 1"),
            ("num_perm", cfg.num_perm >= 2, "must be >= 2"),
            ("bands", (cfg.bands is None) == (cfg.rows is None), "give bands and rows together"),
            (
                "bands",
                cfg.bands is None or cfg.bands * (cfg.rows or 0) <= cfg.num_perm,
                "bands * rows must be <= num_perm",
            ),
            ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
        ]
    if isinstance(cfg, LanguageConfig):
        checks += [
            ("languages", bool(cfg.languages), "name at least one language"),
            ("sample_chars", cfg.sample_chars >= 30, "must be >= 30"),
        ]
    if isinstance(cfg, QualityConfig):
        checks += [
            ("max_chars", cfg.min_chars <= cfg.max_chars, "must be >= min_chars"),
            ("max_rounds", cfg.min_rounds <= cfg.max_rounds, "must be >= min_rounds"),
        ]
    if isinstance(cfg, DecontaminateConfig):
        checks += [("ngram", cfg.ngram >= 1, "must be >= 1")]
        for j, b in enumerate(cfg.benchmarks):
            if not b.name:
                raise doc.error((*at, "benchmarks", j), "a benchmark needs a name (used as the drop reason)")
            if (b.builtin is None) == (b.path is None):
                raise doc.error((*at, "benchmarks", j), "give exactly one of builtin or path")
            if b.path is not None:
                p = Path(b.path).expanduser()
                p = p if p.is_absolute() else doc.path.parent / p
                if not p.is_file():
                    raise doc.error((*at, "benchmarks", j, "path"), f"benchmark file not found: {p}")
    for key, ok, msg in checks:
        if not ok:
            raise doc.error((*at, key), msg)


def resolve_benchmarks(m: Manifest) -> Manifest:
    """Benchmark paths made absolute against the manifest folder (so the build does not depend on the cwd)."""

    def fix(cfg: Any) -> Any:
        if not isinstance(cfg, DecontaminateConfig):
            return cfg
        bs = tuple(
            dataclasses.replace(b, path=str(_abs(m.path.parent, b.path))) if b.path else b
            for b in cfg.benchmarks
        )
        return dataclasses.replace(cfg, benchmarks=bs)

    steps = {k: fix(v) for k, v in m.steps.items()}
    sources = tuple(dataclasses.replace(s, steps={k: fix(v) for k, v in s.steps.items()}) for s in m.sources)
    return dataclasses.replace(m, steps=steps, sources=sources)


def _abs(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base / q).resolve()


def as_data(obj: Any) -> Any:
    """JSON-able form of configs, for fingerprints and reports."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_data(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
