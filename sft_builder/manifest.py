"""The build manifest: YAML parsed once, at the CLI edge, into frozen config objects.

Every error names the manifest file, the line and the key path (``sources[2].weight``), because the YAML
node tree is composed with its marks and walked beside the loaded data. Step settings are the step
modules' own frozen dataclasses; a source may override them (``steps: {language: {enabled: false}}``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path
from typing import Any

from crystalmix.core.atomic import fingerprint
from crystalmix.core.config import NAME, SEED, Path_, YamlDoc, as_data, at_least, between, build, spec
from crystalmix.core.errors import UserError
from crystalmix.core.remote import is_url
from sft_builder.sources.base import get_adapter_class
from sft_builder.steps.table import STEPS

__all__ = ["Manifest", "MixConfig", "SourceConfig", "SplitConfig", "as_data", "hub_name", "is_hub",
           "load_manifest"]

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_EXTS = (".json", ".jsonl", ".ndjson", ".gz", ".zst", ".zstd", ".parquet", ".arrow", ".txt")
# A source's weight or epochs is a repeat count: past this, a value is a typo (1e300 grew memory unbounded).
MAX_REPEAT = 1_000


@dataclass(frozen=True, slots=True)
class MixConfig:
    shuffle: bool = True


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """`test_fraction` of the groups (pieces of one original conversation) go to the test split."""

    test_fraction: float = field(default=0.0, metadata=spec(between(0, 1, hi_open=True)))


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One source. `inputs` are resolved local paths/globs or hub ids (``hf:`` prefix or ``owner/name``).

    Read from the manifest as written, then completed by `load_manifest`: `inputs` resolved, `options` the
    adapter's options object, `steps` the effective step configs (absent = off), `line` its manifest line.
    """

    name: str = field(metadata=spec(NAME))
    adapter: str
    inputs: tuple[str, ...] = field(metadata=spec(lambda v: None if v and all(v) else (
        "must be a path, glob or hub id, or a non-empty list of them")))
    split: str = "train"
    data_files: tuple[str, ...] = ()
    options: Any = field(default_factory=dict)
    weight: float | None = field(default=None, metadata=spec(between(0, MAX_REPEAT)))
    epochs: int | None = field(default=None, metadata=spec(between(1, MAX_REPEAT)))
    max_samples: int | None = field(default=None, metadata=spec(at_least(0)))
    priority: int = 0
    steps: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    license: str | None = None  # the licence the source declares (for the Hub dataset card)
    optional: bool = False  # a missing local input skips the source instead of stopping the build

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.weight is not None and self.epochs is not None:
            yield "epochs", "give either weight or epochs, not both"

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
            "options": as_data(self.options),
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


@dataclass(frozen=True, slots=True)
class _Top:
    """The manifest's top level as written."""

    sources: tuple[Any, ...] = field(metadata=spec(lambda v: None if v else "must be a non-empty list of sources"))
    seed: int = field(default=0, metadata=spec(SEED))
    steps: dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = SplitConfig()
    tokenize: dict[str, Any] | None = None


def is_hub(spec: str) -> bool:
    return not is_url(spec) and (spec.startswith("hf:") or bool(HUB_ID.match(spec)))


def hub_name(spec: str) -> str:
    return spec[3:] if spec.startswith("hf:") else spec


def load_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest; raises `UserError` naming the file, line and key path."""
    doc = YamlDoc(Path(path).resolve())
    raw = doc.data
    if not isinstance(raw, dict):
        raise doc.error((), "a manifest is a mapping with seed, sources and steps")
    top = build(_Top, raw, doc)
    order, steps, mix = _parse_steps(doc, top.steps)
    base = doc.base
    parsed = [_parse_source(doc, i, s, order, steps, base) for i, s in enumerate(top.sources)]
    names = [s.name if isinstance(s, SourceConfig) else s[0] for s in parsed]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise doc.error(("sources", i, "name"), f"duplicate source name {n!r}")
    sources = [s for s in parsed if isinstance(s, SourceConfig)]
    skipped = tuple(s for s in parsed if not isinstance(s, SourceConfig))
    if not sources:
        raise doc.error(("sources",), "every source is optional and missing its inputs: nothing to build")
    sources.sort(key=lambda s: s.priority)
    tokenize = None
    if top.tokenize is not None:
        from sft_builder.encode import TokenizeConfig

        tokenize = build(TokenizeConfig, top.tokenize, doc, ("tokenize",))
    settings = fingerprint(raw)
    return Manifest(doc.path, top.seed, tuple(sources), order, steps, mix, top.split, tokenize, top.tokenize,
                    settings, skipped)


def _parse_steps(doc: YamlDoc, raw: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any], MixConfig]:
    at: Path_ = ("steps",)
    valid = [*STEPS, "mix"]
    for name in raw:
        if name not in valid:
            raise doc.unknown(at, str(name), valid)
    keys = list(raw)
    if "mix" in keys and keys[-1] != "mix":
        raise doc.error((*at, "mix"), "mix is always the last step")
    order: list[str] = []
    steps: dict[str, Any] = {}
    for name in keys:
        if name == "mix":
            continue
        body = raw[name]
        if body is False:
            continue
        cfg = build(STEPS[name].config, {} if body is True else body, doc, (*at, name))
        if cfg.enabled:
            order.append(name)
            steps[name] = cfg
    mix_raw = raw.get("mix")
    mix = build(MixConfig, mix_raw if isinstance(mix_raw, dict) else {}, doc, (*at, "mix"))
    return tuple(order), steps, mix


def _parse_source(
    doc: YamlDoc, i: int, raw: Any, order: tuple[str, ...], steps: dict[str, Any], base: Path
) -> SourceConfig | tuple[str, str]:
    """A source's config, or (name, why) for an `optional` source whose local inputs are not there."""
    at: Path_ = ("sources", i)
    if not isinstance(raw, dict):
        raise doc.error(at, "a source is a mapping with name, adapter and inputs")
    src = build(SourceConfig, {"priority": i, **raw}, doc, at, fixed={"line": doc.line(at)})
    try:
        cls = get_adapter_class(src.adapter)
    except UserError as exc:
        raise doc.error((*at, "adapter"), str(exc)) from None
    opts = build(cls.Options, src.options, doc, (*at, "options"))
    try:
        cls(opts, source=src.name)  # adapters validate cross-option rules on construction
    except UserError as exc:
        raise doc.error((*at, "options"), str(exc)) from None
    try:
        resolved = tuple(_resolve_input(doc, (*at, "inputs", j), x, base) for j, x in enumerate(src.inputs))
    except UserError as exc:
        if not src.optional:
            raise
        return (src.name, f"optional source skipped: {exc}")
    eff = _source_steps(doc, (*at, "steps"), src.steps, order, steps)
    return dataclasses.replace(src, inputs=resolved, options=opts, steps=eff)


def _source_steps(
    doc: YamlDoc, at: Path_, raw: dict[str, Any], order: tuple[str, ...], steps: dict[str, Any]
) -> dict[str, Any]:
    """The global step configs with this source's overrides applied; a step turned off is left out."""
    eff = dict(steps)
    for name, body in raw.items():
        if name not in STEPS:
            raise doc.unknown(at, name, STEPS)
        if name not in steps:
            raise doc.error((*at, name), f"step {name!r} is not enabled in the manifest's steps")
        if body is False:
            body = {"enabled": False}
        if not isinstance(body, dict):
            raise doc.error((*at, name), "must be a mapping of settings, or false")
        if STEPS[name].scope == "global" and set(body) - {"enabled"}:
            raise doc.error((*at, name), "dedup runs across sources: only `enabled` can be set per source")
        over = build(STEPS[name].config, body, doc, (*at, name))  # validates keys and types
        given = {k: getattr(over, k) for k in body}
        merged = build(STEPS[name].config, {}, doc, (*at, name), fixed={**as_fields(steps[name]), **given})
        eff[name] = merged
    return {k: v for k, v in eff.items() if v.enabled}


def as_fields(cfg: Any) -> dict[str, Any]:
    """A config's field values (not deep-copied: nested configs stay objects)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def _resolve_input(doc: YamlDoc, at: Path_, spec_: str, base: Path) -> str:
    """A local path/glob made absolute against the manifest folder, or a hub id or URL kept as written (a URL
    that names nothing stops here, as a missing path does)."""
    if is_url(spec_):
        from crystalmix.core.remote import exists

        try:
            found = exists(spec_)
        except UserError as exc:
            raise doc.error(at, str(exc)) from None
        if not found:
            raise doc.error(at, f"no files match {spec_!r}" if has_magic(spec_) else f"file not found: {spec_}")
        return spec_
    if spec_.startswith("hf:"):
        if not HUB_ID.match(spec_[3:]):
            raise doc.error(at, f"{spec_!r} is not a hub id of the form owner/name")
        return spec_
    p = Path(spec_).expanduser()
    local = p if p.is_absolute() else base / p
    if (
        not local.exists()
        and not has_magic(spec_)
        and HUB_ID.match(spec_)
        and not spec_.lower().endswith(LOCAL_EXTS)
    ):
        return spec_
    if has_magic(spec_):
        if not sorted(local.parent.glob(local.name)) and not glob(str(local), recursive=True):
            raise doc.error(at, f"no files match {str(local)!r}")
    elif not local.exists():
        raise doc.error(at, f"file not found: {local}")
    return str(local)
