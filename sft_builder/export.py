"""Export a finished build to a Hugging Face Hub dataset folder: parquet shards and a dataset card.

The folder follows the Hub's conventions (``data/<split>-00000-of-0000N.parquet`` and a ``README.md`` whose
YAML header declares the configs, licence and size), so it can be uploaded as is and loaded with
``datasets.load_dataset(repo_id)``. The card lists every source with its origin, licence, counts and, when
the build tokenized, its token count. Pushing is optional and needs the ``[hub]`` extra.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crystalmix.core.atomic import atomic_open, atomic_path
from crystalmix.core.errors import UserError
from sft_builder.steps.table import stage_order

# Licences of the real Stage 3a sources as their hub cards (or upstream repositories) state them.
# A manifest source's own `license:` key wins over this table.
KNOWN_LICENSES: dict[str, str] = {
    "OpenAssistant/oasst1": "apache-2.0",
    "openaccess-ai-collective/oasst1-guanaco-extended-sharegpt": "apache-2.0",
    "timdettmers/openassistant-guanaco": "apache-2.0",
    "Open-Orca/SlimOrca": "mit",
    "Aeala/ShareGPT_Vicuna_unfiltered": "other",
    "WizardLM/WizardLM_evol_instruct_V2_196k": "mit",
    "WizardLMTeam/WizardLM_evol_instruct_V2_196k": "mit",
    "lucasmccabe-lmi/CodeAlpaca-20k": "cc-by-nc-4.0",
    "sahil280114/codealpaca": "cc-by-nc-4.0",
    "theblackcat102/evol-codealpaca-v1": "apache-2.0",
    "nickrosh/Evol-Instruct-Code-80k-v1": "cc-by-nc-sa-4.0",
}
SPLITS = ("train", "test")


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """What to export and how; built from CLI options."""

    build_dir: Path
    out_dir: Path
    dataset_name: str = "crystalmix-sft"
    rows_per_shard: int = 100_000
    pretty_name: str | None = None


def _shards(build_dir: Path, split: str) -> list[Path]:
    return sorted((build_dir / "conversations").glob(f"{split}-*.parquet"))


# The two kinds of rows and the columns each exports: conversations (the `default` config) and documents
# (the `text` config, under data/text/). The build's shards hold both, told apart by a null `text`.
KIND_COLUMNS = {"messages": ("id", "source", "messages", "meta"), "text": ("id", "source", "text", "meta")}
KIND_FOLDER = {"messages": "", "text": "text"}
KIND_CONFIG = {"messages": "default", "text": "text"}


def _of_kind(batch: pa.RecordBatch, kind: str) -> pa.RecordBatch:
    """The rows of `kind` in a batch of the build's shards, with that kind's columns."""
    import pyarrow.compute as pc

    if "text" not in batch.schema.names:  # a build from before documents: conversations only
        return batch.select(list(KIND_COLUMNS["messages"])) if kind == "messages" else batch.slice(0, 0)
    text = batch.column("text")
    keep = pc.is_null(text) if kind == "messages" else pc.is_valid(text)
    return batch.filter(keep).select(list(KIND_COLUMNS[kind]))


def _batches(files: list[Path], kind: str) -> Iterator[pa.RecordBatch]:
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            part = _of_kind(batch, kind)
            if part.num_rows:
                yield part


def _count(files: list[Path], kind: str) -> int:
    """Rows of `kind` in the shards (reads only the `text` column)."""
    total = 0
    for f in files:
        pf = pq.ParquetFile(f)
        if "text" not in pf.schema_arrow.names:
            total += pf.metadata.num_rows if kind == "messages" else 0
            continue
        nulls = pq.read_table(f, columns=["text"]).column("text").null_count
        total += nulls if kind == "messages" else pf.metadata.num_rows - nulls
    return total


def _write_split(files: list[Path], out_data: Path, split: str, rows_per_shard: int,
                 kind: str = "messages") -> list[Path]:
    """Re-shard one split's rows of one kind into Hub-named files, streaming batches (memory stays at one
    batch)."""
    total = _count(files, kind)
    if total == 0:
        return []
    n_shards = max(1, math.ceil(total / rows_per_shard))
    folder = out_data / KIND_FOLDER[kind] if KIND_FOLDER[kind] else out_data
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batches = _batches(files, kind)
    pending: pa.RecordBatch | None = next(batches)
    schema = pending.schema
    for i in range(n_shards):
        path = folder / f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
        want = min(rows_per_shard, total - i * rows_per_shard)
        with atomic_path(path) as tmp:
            writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False)
            try:
                while want > 0:
                    if pending is None:
                        pending = next(batches)
                    take = pending.slice(0, want)
                    writer.write_batch(take, row_group_size=rows_per_shard)
                    want -= take.num_rows
                    pending = pending.slice(take.num_rows) if take.num_rows < pending.num_rows else None
            finally:
                writer.close()
        written.append(path)
    return written


def _token_counts(build_dir: Path) -> dict[str, dict[str, int]]:
    """Tokens per source and split from the tokenize stage's metadata, when the build tokenized."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        meta_path = build_dir / "tokenized" / split / "metadata.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        for source, stats in (meta.get("per_source") or {}).items():
            tokens = stats.get("tokens", stats.get("num_tokens", 0))
            out.setdefault(source, {})[split] = int(tokens)
    return out


def _source_licenses(report: Mapping[str, Any], manifest: Any | None) -> dict[str, tuple[str, str]]:
    """(origin, licence) per source name, from the manifest when given, else from the report."""
    out: dict[str, tuple[str, str]] = {}
    specs: dict[str, tuple[list[str], str | None]] = {}
    if manifest is not None:
        for s in manifest.sources:
            specs[s.name] = (list(s.inputs), getattr(s, "license", None))
    for name in report.get("sources", {}):
        inputs, lic = specs.get(name, ([], None))
        origin = ", ".join(_display_input(i) for i in inputs) or "local files"
        if lic is None:
            lic = next((KNOWN_LICENSES[k] for i in inputs for k in KNOWN_LICENSES if k in i), "unknown")
        out[name] = (origin, lic)
    return out


def _display_input(spec: str) -> str:
    spec = spec.removeprefix("hf:")
    return Path(spec).name if Path(spec).is_absolute() else spec


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def dataset_card(cfg: ExportConfig, report: Mapping[str, Any], split_rows: Mapping[str, int],
                 licenses: Mapping[str, tuple[str, str]], tokens: Mapping[str, Mapping[str, int]],
                 doc_rows: Mapping[str, int] | None = None) -> str:
    """The README.md of the Hub folder: a YAML header the Hub reads, then the sources and how it was built.

    `split_rows` counts conversations per split, `doc_rows` documents (the `text` config)."""
    doc_rows = doc_rows or {}
    lic_values = sorted({lic for _, lic in licenses.values()})
    licence = lic_values[0] if len(lic_values) == 1 else "other"
    langs = Counter(report.get("languages", {}))
    total_langs = sum(langs.values()) or 1
    header = {
        "pretty_name": cfg.pretty_name or cfg.dataset_name,
        "license": licence,
        # languages seen in the input that are a real share of it (the filter drops strays)
        "language": sorted(lang for lang, n in langs.items() if n / total_langs >= 0.05
                           and lang not in ("unknown", "code")) or ["en"],
        "task_categories": ["text-generation"],
        "tags": ["sft", "chat", "code", "crystalmix"],
        "size_categories": [_size_category(sum(split_rows.values()) + sum(doc_rows.values()))],
        "configs": [{
            "config_name": KIND_CONFIG[kind],
            "data_files": [{"split": s, "path": f"data/{KIND_FOLDER[kind] + '/' if KIND_FOLDER[kind] else ''}"
                                                  f"{s}-*.parquet"} for s in SPLITS if rows.get(s)],
        } for kind, rows in (("messages", split_rows), ("text", doc_rows)) if any(rows.values())],
    }
    lines = ["---", _yaml(header).rstrip(), "---", "", f"# {cfg.pretty_name or cfg.dataset_name}", ""]
    lines += [
        "A supervised fine-tuning mix of chat and code conversations built with "
        "crystalmix from the sources below, after cleaning, language filtering, exact and "
        "near-duplicate removal and benchmark decontamination.",
        "",
        "Each row is one conversation: `id`, `source`, `messages` (a list of `{role, content}` with roles "
        "`system`, `user`, `assistant`) and `meta` (a JSON string with the record's provenance: input file, "
        "line and original id).",
        "",
    ]
    if any(doc_rows.values()):
        lines += [
            "The `text` config holds plain documents (books, textbooks) trained on every token: `id`, `source`, "
            "`text` and `meta`; load it with `load_dataset(REPO, \"text\")`.",
            "",
        ]
    lines += [
        "## Splits",
        "",
        "| split | conversations | documents |",
        "|---|---:|---:|",
    ]
    lines += [f"| {s} | {split_rows.get(s, 0):,} | {doc_rows.get(s, 0):,} |" for s in SPLITS
              if split_rows.get(s) or doc_rows.get(s)]
    has_tokens = bool(tokens)
    lines += ["", "## Sources", ""]
    head = "| source | origin | licence | read | kept | train | test |" + (" tokens |" if has_tokens else "")
    lines += [head, "|" + "---|" * (7 + has_tokens)]
    for name, s in sorted(report.get("sources", {}).items()):
        origin, lic = licenses.get(name, ("", "unknown"))
        row = (f"| {name} | {origin} | {lic} | {s.get('read', 0):,} | {s.get('kept', 0):,} | "
               f"{s.get('train', 0):,} | {s.get('test', 0):,} |")
        if has_tokens:
            row += f" {sum(tokens.get(name, {}).values()):,} |"
        lines.append(row)
    lines += [
        "",
        "Licences are those the sources declare; several are non-commercial (CC BY-NC). The mix as a whole is "
        "bound by the most restrictive licence among the sources it contains: check each before use.",
        "",
        "## How it was built",
        "",
        f"- build fingerprint: `{report.get('fingerprint', '')}`, seed {report.get('seed', '')}",
        "- steps and what each removed:",
        "",
        "| step | in | out | dropped |",
        "|---|---:|---:|---|",
    ]
    steps = report.get("steps") or {}
    order = stage_order()
    for step in sorted(steps, key=lambda k: order.index(k) if k in order else len(order)):
        st = steps[step]
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted((st.get("dropped") or {}).items()))
        lines.append(f"| {step} | {st.get('in', 0):,} | {st.get('out', 0):,} | {dropped} |")
    lines += ["", "Reproduce with `crystalmix build MANIFEST --out DIR` and the same manifest and seed.", ""]
    return "\n".join(lines)


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False)


def export_build(cfg: ExportConfig, manifest: Any | None = None) -> dict[str, Any]:
    """Write ``out_dir/data/*.parquet`` and ``out_dir/README.md`` from a finished build; returns a summary."""
    report_path = cfg.build_dir / "report.json"
    if not report_path.exists():
        raise UserError("no report.json: not a finished crystalmix build folder", path=cfg.build_dir)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    data = cfg.out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in [*data.glob("*.parquet"), *data.glob("text/*.parquet")]:  # a re-export with other shard
        old.unlink()  # counts must not leave stale shards
    split_rows: dict[str, int] = {}
    doc_rows: dict[str, int] = {}
    files: dict[str, list[str]] = {}
    doc_files: dict[str, list[str]] = {}
    for split in SPLITS:
        shards = _shards(cfg.build_dir, split)
        split_rows[split] = _count(shards, "messages")
        doc_rows[split] = _count(shards, "text")
        files[split] = [p.name for p in _write_split(shards, data, split, cfg.rows_per_shard)]
        doc_files[split] = [p.name for p in _write_split(shards, data, split, cfg.rows_per_shard, "text")]
    if not any(split_rows.values()) and not any(doc_rows.values()):
        raise UserError("the build holds no conversations to export", path=cfg.build_dir / "conversations")
    card = dataset_card(cfg, report, split_rows, _source_licenses(report, manifest), _token_counts(cfg.build_dir),
                        doc_rows)
    with atomic_open(cfg.out_dir / "README.md") as fh:
        fh.write(card)
    out: dict[str, Any] = {"out": str(cfg.out_dir), "rows": split_rows, "files": files}
    if any(doc_rows.values()):
        out["documents"] = {"rows": doc_rows, "files": doc_files}
    return out


def push_to_hub(folder: Path, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload an exported folder as a dataset repository (needs the ``[hub]`` extra and network access)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError("pushing needs huggingface_hub: pip install 'crystalmix[hub]'") from None
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message="Upload crystalmix export")
    return str(info)
