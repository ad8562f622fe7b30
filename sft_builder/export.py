"""Export a finished build as a Hugging Face Hub dataset folder that every trainer reads as is.

Layout (``OUT/``)::

    README.md                      dataset card: YAML metadata the Hub parses, then sources, plots, how to train
    data/messages/<split>/<split>-00000-of-0000N.parquet   conversations: id, source, messages, meta
    data/text/<split>/...          documents (records with ``text``), when the build holds any
    dataset_info.json              LLaMA-Factory's dataset registry for this folder (``dataset_dir: OUT``)
    plots/*.png                    the build report's plots, when the build drew them
    LICENSE.md                     the licence of every source, when they are not one licence
    manifest.yaml                  the build's manifest, when given (to rebuild it)

One folder per split, because LLaMA-Factory reads every file of the folder an entry names; the card's
``configs`` point ``datasets`` at the same files. Pushing is optional and needs network and a token.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crystalmix.core.atomic import FOLDER_MARKER, atomic_open, atomic_path, claim_folder, write_json
from crystalmix.core.errors import UserError
from crystalmix.core.remote import JOURNAL as PUBLISH_JOURNAL
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
MIXED_LICENSE = "crystalmix-source-licenses"  # license_name of a mix whose sources are not under one licence
OUT_MARKER = FOLDER_MARKER  # the folder was made by a crystalmix command (kept out of uploads)
HUB_TIMEOUT = 15.0  # seconds to reach the Hub before pushing: no network fails fast, not after retries


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of record and the config it exports as."""

    name: str  # the folder under data/
    config: str  # the card's config name
    columns: tuple[str, ...]


MESSAGES = Kind("messages", "messages", ("id", "source", "messages", "meta"))
TEXT = Kind("text", "text", ("id", "source", "text", "meta"))  # documents: trained on every token
KINDS = (MESSAGES, TEXT)


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """What to export and how; built from CLI options."""

    build_dir: Path
    out_dir: Path
    dataset_name: str = "crystalmix-sft"
    rows_per_shard: int = 100_000
    pretty_name: str | None = None
    repo_id: str | None = None  # where the card says the dataset lives (the --push target), else a placeholder
    force: bool = False  # write into a folder that holds other files


@dataclass(slots=True)
class SplitFiles:
    """The shards of one kind and split: names relative to the export folder, rows, sizes."""

    files: list[str] = field(default_factory=list)
    rows: int = 0
    num_bytes: int = 0  # Arrow bytes in memory (what `datasets` calls a split's num_bytes)
    download_bytes: int = 0  # parquet bytes on disk


# -- reading the build's shards ----------------------------------------------------------------------------
def _shards(build_dir: Path, split: str) -> list[Path]:
    return sorted((build_dir / "conversations").glob(f"{split}-*.parquet"))


def _of_kind(batch: pa.RecordBatch, kind: Kind) -> pa.RecordBatch:
    """The rows of `kind` in a batch of the build's shards (a document has a non-null ``text``; a build
    from before documents has no ``text`` column), with that kind's columns."""
    import pyarrow.compute as pc

    if "text" not in batch.schema.names:
        return batch.select(list(MESSAGES.columns)) if kind is MESSAGES else batch.slice(0, 0)
    text = batch.column("text")
    keep = pc.is_null(text) if kind is MESSAGES else pc.is_valid(text)
    return batch.filter(keep).select(list(kind.columns))


def _count(files: Sequence[Path], kind: Kind) -> int:
    """Rows of `kind` in the shards (reads the ``text`` column only)."""
    total = 0
    for f in files:
        pf = pq.ParquetFile(f)
        if "text" not in pf.schema_arrow.names:
            total += pf.metadata.num_rows if kind is MESSAGES else 0
            continue
        nulls = pq.read_table(f, columns=["text"]).column("text").null_count
        total += nulls if kind is MESSAGES else pf.metadata.num_rows - nulls
    return total


def _batches(files: Sequence[Path], kind: Kind) -> Iterator[pa.RecordBatch]:
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            part = _of_kind(batch, kind)
            if part.num_rows:
                yield part


def _write_split(files: Sequence[Path], out: Path, kind: Kind, split: str, rows_per_shard: int,
                 ) -> tuple[SplitFiles, pa.Schema | None]:
    """Re-shard one split's rows of one kind into Hub-named files, streaming (memory stays at one batch)."""
    done = SplitFiles(rows=_count(files, kind))
    if done.rows == 0:
        return done, None
    n_shards = max(1, math.ceil(done.rows / rows_per_shard))
    folder = out / "data" / kind.name / split
    batches = _batches(files, kind)
    pending: pa.RecordBatch | None = next(batches)
    schema = pending.schema
    for i in range(n_shards):
        path = folder / f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
        want = min(rows_per_shard, done.rows - i * rows_per_shard)
        with atomic_path(path) as tmp:
            writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False)
            try:
                while want > 0:
                    if pending is None:
                        pending = next(batches)
                    take = pending.slice(0, want)
                    writer.write_batch(take, row_group_size=rows_per_shard)
                    done.num_bytes += take.nbytes
                    want -= take.num_rows
                    pending = pending.slice(take.num_rows) if take.num_rows < pending.num_rows else None
            finally:
                writer.close()
        done.files.append(path.relative_to(out).as_posix())
        done.download_bytes += path.stat().st_size
    return done, schema


# -- what the card says about the sources ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceInfo:
    origin: str  # hub ids or file names, for the table
    license: str
    hub_ids: tuple[str, ...]  # the real hub datasets it reads (source_datasets)


def source_infos(report: Mapping[str, Any], manifest: Any | None) -> dict[str, SourceInfo]:
    """Origin, licence and hub ids per source: from the manifest when given (its ``license:``, else the known
    licence of its hub id), else unknown."""
    from sft_builder.manifest import hub_name, is_hub

    specs: dict[str, tuple[list[str], str | None]] = {}
    if manifest is not None:
        for s in manifest.sources:
            specs[s.name] = (list(s.inputs), getattr(s, "license", None))
    out: dict[str, SourceInfo] = {}
    for name in report.get("sources", {}):
        inputs, lic = specs.get(name, ([], None))
        shown: list[str] = []
        hubs: list[str] = []
        for i in inputs:  # the manifest keeps hub ids as written and makes local paths absolute
            if is_hub(i) and not Path(i).is_absolute():
                hubs.append(hub_name(i))
                shown.append(hub_name(i))
            else:
                shown.append(Path(i).name)
        origin = ", ".join(dict.fromkeys(shown)) or "local files"
        if lic is None:
            lic = next((KNOWN_LICENSES[h] for h in hubs if h in KNOWN_LICENSES), "unknown")
        out[name] = SourceInfo(origin, lic, tuple(dict.fromkeys(hubs)))
    return out


def combined_license(infos: Mapping[str, SourceInfo]) -> str:
    """The Hub ``license`` of the mix: the sources' one licence, else ``other`` (explained in LICENSE.md)."""
    values = {i.license for i in infos.values()} or {"unknown"}
    return values.pop() if len(values) == 1 else "other"


def _token_counts(build_dir: Path, report: Mapping[str, Any]) -> dict[str, dict[str, tuple[int, int]]]:
    """(tokens, trained tokens) per source and split, when the build tokenized."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for split in SPLITS:
        stats = (report.get("tokenize") or {}).get(split)
        if stats is None:
            meta_path = build_dir / "tokenized" / split / "metadata.json"
            if not meta_path.exists():
                continue
            stats = json.loads(meta_path.read_text(encoding="utf-8"))
        for source, s in (stats.get("per_source") or {}).items():
            out.setdefault(source, {})[split] = (int(s.get("tokens", s.get("num_tokens", 0))),
                                                 int(s.get("trained_tokens", 0)))
    return out


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return label
    return "100M<n<1B"


def _languages(report: Mapping[str, Any]) -> list[str]:
    """Languages that are a real share of the input (the language filter drops strays)."""
    langs = Counter(report.get("languages", {}))
    total = sum(langs.values()) or 1
    return sorted(lang for lang, n in langs.items() if n / total >= 0.05 and lang not in ("unknown", "code")) \
        or ["en"]


# -- plots -------------------------------------------------------------------------------------------------
_IMAGE = re.compile(r"!\[(?P<title>[^\]]*)\]\((?P<path>plots/[^)\s]+\.png)\)")


def copy_plots(build_dir: Path, out: Path) -> list[tuple[str, str]]:
    """Copy the build report's PNG plots into ``out/plots``; returns (relative path, title) pairs, titled as
    report.md shows them (else by file name). Plots a re-export no longer has are removed."""
    src = build_dir / "plots"
    titles: dict[str, str] = {}
    report_md = build_dir / "report.md"
    if report_md.is_file():
        for m in _IMAGE.finditer(report_md.read_text(encoding="utf-8")):
            titles[m["path"]] = m["title"]
    pngs = sorted(src.glob("*.png")) if src.is_dir() else []
    dst = out / "plots"
    for old in dst.glob("*.png") if dst.is_dir() else []:
        if not (src / old.name).is_file():
            old.unlink()
    # report.md's order first (it is the report's reading order), then any other plot by name
    order = {path: i for i, path in enumerate(titles)}
    pngs.sort(key=lambda p: (order.get(f"plots/{p.name}", len(order)), p.name))
    out_list = []
    for png in pngs:
        with atomic_path(dst / png.name) as tmp:
            shutil.copyfile(png, tmp)
        rel = f"plots/{png.name}"
        out_list.append((rel, titles.get(rel) or png.stem.replace("_", " ").capitalize()))
    return out_list


# -- LLaMA-Factory -----------------------------------------------------------------------------------------
LF_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
           "system_tag": "system"}


def llamafactory_entries(name: str, written: Mapping[str, Mapping[str, SplitFiles]]) -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` for the folder: one entry per kind and split (its loader reads
    every file of the folder ``file_name`` names, so each split has its own). Conversations are its
    ``sharegpt`` format with OpenAI-style tags; documents its pre-training form (``columns.prompt: text``)."""
    entries: dict[str, Any] = {}
    for kind in KINDS:
        for split in SPLITS:
            if not written.get(kind.name, {}).get(split, SplitFiles()).rows:
                continue
            key = name + ("" if kind is MESSAGES else "_text") + ("" if split == "train" else f"_{split}")
            folder = f"data/{kind.name}/{split}"
            if kind is MESSAGES:
                entries[key] = {"file_name": folder, "formatting": "sharegpt", "columns": {"messages": "messages"},
                                "tags": dict(LF_TAGS)}
            else:
                entries[key] = {"file_name": folder, "columns": {"prompt": "text"}}
    return entries


# -- the card ----------------------------------------------------------------------------------------------
def card_data(cfg: ExportConfig, report: Mapping[str, Any], infos: Mapping[str, SourceInfo],
              written: Mapping[str, Mapping[str, SplitFiles]], schemas: Mapping[str, pa.Schema]) -> Any:
    """The card's metadata as huggingface_hub's `DatasetCardData`, with ``dataset_info`` written by
    `datasets` itself, so the Hub and `load_dataset` read back exactly what they write."""
    import datasets
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCardData  # a dependency of `datasets`, so always installed

    licence = combined_license(infos)
    extra: dict[str, Any] = {}
    if licence == "other":
        extra = {"license_name": MIXED_LICENSE, "license_link": "LICENSE.md"}
    total = sum(sf.rows for per in written.values() for sf in per.values())
    configs, infos_dict = [], {}
    for kind in KINDS:
        per = {s: sf for s, sf in written.get(kind.name, {}).items() if sf.rows}
        if not per:
            continue
        conf: dict[str, Any] = {"config_name": kind.config}
        if kind is MESSAGES:
            conf["default"] = True
        conf["data_files"] = [{"split": s, "path": f"data/{kind.name}/{s}/*.parquet"} for s in SPLITS if s in per]
        configs.append(conf)
        splits = SplitDict()
        for s in SPLITS:
            if s in per:
                splits.add(SplitInfo(name=s, num_bytes=per[s].num_bytes, num_examples=per[s].rows))
        infos_dict[kind.config] = DatasetInfo(
            features=datasets.Features.from_arrow_schema(schemas[kind.name]), splits=splits,
            download_size=sum(sf.download_bytes for sf in per.values()),
            dataset_size=sum(sf.num_bytes for sf in per.values()), config_name=kind.config)
    hub_ids = sorted({h for i in infos.values() for h in i.hub_ids})
    tags = ["sft", "chat", "code", "crystalmix"] + (["documents"] if TEXT.name in written else [])
    data = DatasetCardData(
        pretty_name=cfg.pretty_name or cfg.dataset_name, license=licence, language=_languages(report),
        task_categories=["text-generation"], size_categories=[_size_category(total)],
        source_datasets=hub_ids or None, tags=tags, configs=configs, **extra)
    DatasetInfosDict(infos_dict).to_dataset_card_data(data)
    return data


def dataset_card(cfg: ExportConfig, report: Mapping[str, Any], infos: Mapping[str, SourceInfo],
                 written: Mapping[str, Mapping[str, SplitFiles]], schemas: Mapping[str, pa.Schema],
                 tokens: Mapping[str, Mapping[str, tuple[int, int]]], plots: Sequence[tuple[str, str]],
                 manifest_name: str | None) -> str:
    """README.md: the YAML metadata, then what is in the set, where it came from, how to train on it and how
    to rebuild it."""
    data = card_data(cfg, report, infos, written, schemas)
    title = cfg.pretty_name or cfg.dataset_name
    repo = cfg.repo_id or f"USER/{cfg.dataset_name}"
    conv = {s: sf.rows for s, sf in written.get(MESSAGES.name, {}).items()}
    docs = {s: sf.rows for s, sf in written.get(TEXT.name, {}).items()}
    has_docs = any(docs.values())
    lines = ["---", data.to_yaml().rstrip(), "---", "", f"# {title}", ""]
    what = f"{sum(conv.values()):,} conversations" + (f" and {sum(docs.values()):,} documents" if has_docs else "")
    lines += [
        f"A supervised fine-tuning mix of chat and code data: {what} from {len(infos)} sources, built with "
        "crystalmix, which rebuilds LLM360's CrystalChat data pipeline (cleaning, language filtering, exact "
        "and near-duplicate removal, benchmark decontamination, then a seeded mix and a grouped train/test "
        "split).",
        "",
        "Each row of the default config (`messages`) is one conversation: `id`, `source`, `messages` (a list of "
        "`{role, content}` with roles `system`, `user`, `assistant`: an optional system message first, then "
        "user and assistant alternating, ending with the assistant) and `meta` (a JSON string with the "
        "record's provenance: input file, line and original id).",
        "",
    ]
    if has_docs:
        lines += [
            "The `text` config holds plain documents (books, textbooks) meant to be trained on every token: "
            f"`id`, `source`, `text` and `meta`; load it with `load_dataset(\"{repo}\", \"text\")`.",
            "",
        ]
    lines += ["| split | conversations |" + (" documents |" if has_docs else ""),
              "|---|---:|" + ("---:|" if has_docs else "")]
    for s in SPLITS:
        if conv.get(s) or docs.get(s):
            lines.append(f"| {s} | {conv.get(s, 0):,} |" + (f" {docs.get(s, 0):,} |" if has_docs else ""))
    if plots:
        lines += ["", "## The build in pictures", ""]
        for path, caption in plots:
            lines += [f"![{caption}]({path})", ""]
        lines.pop()
    lines += _sources_section(report, infos, tokens)
    lines += _training_section(repo, cfg.dataset_name, has_docs)
    lines += _build_section(report, manifest_name)
    return "\n".join(lines) + "\n"


def _sources_section(report: Mapping[str, Any], infos: Mapping[str, SourceInfo],
                     tokens: Mapping[str, Mapping[str, tuple[int, int]]]) -> list[str]:
    has_tokens = bool(tokens)
    head = "| source | origin | licence | read | kept | train | test |"
    if has_tokens:
        head += " tokens | trained tokens |"
    lines = ["", "## Sources", "", head, "|" + "---|" * 3 + "---:|" * (4 + 2 * has_tokens)]
    for name, s in report.get("sources", {}).items():
        info = infos.get(name, SourceInfo("", "unknown", ()))
        row = (f"| {name} | {info.origin} | {info.license} | {s.get('read', 0):,} | {s.get('kept', 0):,} | "
               f"{s.get('train', 0):,} | {s.get('test', 0):,} |")
        if has_tokens:
            per = tokens.get(name, {}).values()
            row += f" {sum(t for t, _ in per):,} | {sum(t for _, t in per):,} |"
        lines.append(row)
    if has_tokens:
        lines += ["", "Tokens are counted in the build's own tokenization (its tokenizer and chat template); "
                  "trained tokens are those with loss (the answers)."]
    lines += ["", "Licences are those the sources declare. The mix as a whole is bound by every licence of the "
              "sources it contains (several are non-commercial): check each before use."
              + (" LICENSE.md lists them." if combined_license(infos) == "other" else "")]
    return lines


def _training_section(repo: str, name: str, has_docs: bool) -> list[str]:
    lf_name = name
    lines = [
        "", "## Train on it", "",
        "**datasets**:", "", "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("{repo}")  # or the exported folder itself',
        'print(ds["train"][0]["messages"])', "```", "",
        "**TRL** (`SFTTrainer` applies the model's chat template to the `messages` column):", "",
        "```python", "from datasets import load_dataset", "from trl import SFTConfig, SFTTrainer", "",
        f'ds = load_dataset("{repo}").select_columns(["messages"])',
        "trainer = SFTTrainer(",
        '    model="Qwen/Qwen2.5-0.5B",',
        '    train_dataset=ds["train"],',
        '    eval_dataset=ds["test"],',
        '    args=SFTConfig(output_dir="out", assistant_only_loss=True),  # loss on the answers only',
        ")", "trainer.train()", "```", "",
        "(`assistant_only_loss` needs a chat template that marks the answers with `{% generation %}`; drop it "
        "to train on every token.)", "",
        "**axolotl** (`type: chat_template`):", "", "```yaml", "datasets:",
        f"  - path: {repo}", "    name: messages", "    split: train", "    type: chat_template",
        "    field_messages: messages", "    message_property_mappings:", "      role: role",
        "      content: content", "    roles_to_train: [assistant]", "test_datasets:",
        f"  - path: {repo}", "    name: messages", "    split: test", "    type: chat_template",
        "    field_messages: messages", "chat_template: tokenizer_default", "```", "",
        "**LLaMA-Factory**: the folder carries its `dataset_info.json`; download it "
        f"(`hf download {repo} --repo-type dataset --local-dir {name}`) and point `dataset_dir` at it in the "
        "data part of the training config:", "",
        "```yaml", "stage: sft", f"dataset_dir: {name}", f"dataset: {lf_name}", f"eval_dataset: {lf_name}_test",
        "template: qwen  # the chat template of the model you train", "```",
    ]
    if has_docs:
        lines += ["", f"The documents are the entries `{lf_name}_text` (pre-training form, `stage: pt`), and "
                  f"`load_dataset(\"{repo}\", \"text\")` with TRL's `dataset_text_field=\"text\"`."]
    return lines


def _build_section(report: Mapping[str, Any], manifest_name: str | None) -> list[str]:
    fp = report.get("fingerprint", "")
    lines = [
        "", "## How it was built", "",
        f"crystalmix build of `{report.get('manifest', 'MANIFEST')}`, seed {report.get('seed', '')}, build "
        f"fingerprint `{fp}`. Steps and what each removed:", "",
        "| step | in | out | dropped |", "|---|---:|---:|---|",
    ]
    steps = report.get("steps") or {}
    order = stage_order()
    for step in sorted(steps, key=lambda k: order.index(k) if k in order else len(order)):
        st = steps[step]
        if st.get("enabled") is False:
            continue
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted((st.get("dropped") or {}).items()))
        lines.append(f"| {step} | {st.get('in', 0):,} | {st.get('out', 0):,} | {dropped} |")
    manifest = manifest_name or report.get("manifest") or "MANIFEST"
    lines += [
        "", "## Reproduce it", "",
        "```bash",
        f"crystalmix build {manifest} --out build", "python -c \"import json; "
        "print(json.load(open('build/report.json'))['fingerprint'])\"  # " + f"{fp}",
        "crystalmix export build --out hub" + (f" --manifest {manifest}" if manifest_name else ""), "```", "",
        f"The same manifest, inputs and code give the same fingerprint (`{fp}`) and byte-identical shards."
        + (f" `{manifest_name}` in this repository is the build's manifest; local inputs it names must be "
           "put beside it first." if manifest_name else ""),
    ]
    return lines


def _license_md(infos: Mapping[str, SourceInfo]) -> str:
    lines = ["# Licences of the sources", "",
             "This dataset mixes sources under different licences; each record's `source` column says which "
             "source it came from, and each record stays under its source's licence.", "",
             "| source | origin | licence |", "|---|---|---|"]
    for name, info in infos.items():
        origin = ", ".join(f"[{h}](https://huggingface.co/datasets/{h})" for h in info.hub_ids) or info.origin
        lines.append(f"| {name} | {origin} | {info.license} |")
    return "\n".join(lines) + "\n"


# -- the export ---------------------------------------------------------------------------------------------
def read_build(build_dir: Path) -> tuple[dict[str, Any], dict[str, list[Path]]]:
    """The report and the shards per split of a finished build, or a one-line `UserError` (the CLI calls it
    before it says anything, so a wrong folder is that line alone)."""
    report_path = build_dir / "report.json"
    if not report_path.is_file():
        raise UserError("no report.json: not a finished crystalmix build folder", path=build_dir)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text: not a crystalmix build report", path=report_path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg}): not a crystalmix build report", path=report_path,
                        line=exc.lineno) from None
    if not isinstance(report, dict):
        raise UserError("not a JSON object: not a crystalmix build report", path=report_path)
    shards = {split: _shards(build_dir, split) for split in SPLITS}
    if not any(shards.values()):
        raise UserError("the build holds no conversations to export", path=build_dir / "conversations")
    return report, shards


def export_build(cfg: ExportConfig, manifest: Any | None = None) -> dict[str, Any]:
    """Write the Hub folder for a finished build; returns a summary (rows and files per kind and split)."""
    report, shards = read_build(cfg.build_dir)
    claim_folder(cfg.out_dir, "export", force=cfg.force)
    for old in (cfg.out_dir / "data").rglob("*.parquet"):  # other shard counts must not leave stale shards
        old.unlink()
    written: dict[str, dict[str, SplitFiles]] = {}
    schemas: dict[str, pa.Schema] = {}
    for kind in KINDS:
        for split in SPLITS:
            done, schema = _write_split(shards[split], cfg.out_dir, kind, split, cfg.rows_per_shard)
            if done.rows:
                written.setdefault(kind.name, {})[split] = done
                schemas.setdefault(kind.name, schema)  # type: ignore[arg-type]
    if not written:
        raise UserError("the build holds no conversations to export", path=cfg.build_dir / "conversations")
    infos = source_infos(report, manifest)
    manifest_name = None
    if manifest is not None:
        manifest_name = "manifest.yaml"
        with atomic_path(cfg.out_dir / manifest_name) as tmp:
            shutil.copyfile(manifest.path, tmp)
    license_md = cfg.out_dir / "LICENSE.md"
    if combined_license(infos) == "other":
        with atomic_open(license_md) as fh:
            fh.write(_license_md(infos))
    elif license_md.exists():
        license_md.unlink()
    plots = copy_plots(cfg.build_dir, cfg.out_dir)
    write_json(cfg.out_dir / "dataset_info.json", llamafactory_entries(cfg.dataset_name, written))
    card = dataset_card(cfg, report, infos, written, schemas, _token_counts(cfg.build_dir, report), plots,
                        manifest_name)
    with atomic_open(cfg.out_dir / "README.md") as fh:
        fh.write(card)
    summary: dict[str, Any] = {"out": str(cfg.out_dir), "plots": [p for p, _ in plots]}
    for kind in KINDS:
        per = written.get(kind.name, {})
        summary[kind.name] = {"rows": {s: per[s].rows if s in per else 0 for s in SPLITS},
                              "files": {s: per[s].files if s in per else [] for s in SPLITS}}
    return summary


# -- pushing -----------------------------------------------------------------------------------------------
EXPORT_PATTERNS = ("README.md", "LICENSE.md", "dataset_info.json", "manifest.yaml", ".gitattributes")


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_hub_access(token: str | None = None, timeout: float = HUB_TIMEOUT) -> str:
    """Fail in one line, before anything is written, when a push cannot work: offline mode, no token, the
    Hub unreachable (one request with a short timeout, not the client's retries) or the token refused.
    Returns the token."""
    import urllib.error
    import urllib.request

    from huggingface_hub import get_token

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise UserError("--push needs the network, and HF_HUB_OFFLINE is set")
    token = token or get_token()
    if not token:
        raise UserError("--push needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    url = f"{_endpoint()}/api/whoami-v2"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the Hub's own endpoint
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise UserError(f"{_endpoint()} refused the token (HTTP {exc.code}): log in again or check "
                            "HF_TOKEN") from None
        raise UserError(f"{_endpoint()} answered HTTP {exc.code}: try again later") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach {_endpoint()} ({reason}): --push needs the network") from None
    return token


def _is_export_repo(api: Any, repo_id: str) -> bool | None:
    """None when the repo does not exist; True when it is empty or a crystalmix export (its card's tag);
    False when it holds other content."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.dataset_info(repo_id, timeout=HUB_TIMEOUT)
    except RepositoryNotFoundError:
        return None
    files = [s.rfilename for s in (info.siblings or [])]
    if all(f == ".gitattributes" for f in files):
        return True
    tags = getattr(info.card_data, "tags", None) or []
    return "crystalmix" in tags


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A hub repo checked for a push: reachable with this token, and empty, ours, new or forced."""

    api: Any
    repo_id: str
    exists: bool


def prepare_push(repo_id: str, *, token: str | None = None, force: bool = False) -> PushTarget:
    """Everything a push can fail on before the upload, in one line each (`UserError`): offline mode, no
    token, no network, a refused token, and a repo that holds other content (not empty, not a crystalmix
    export: its card lacks our tag) unless `force`. Call it before exporting so a doomed push writes
    nothing."""
    from huggingface_hub import HfApi

    token = check_hub_access(token)
    api = HfApi(endpoint=_endpoint(), token=token)
    ours = _hub_call(repo_id, lambda: _is_export_repo(api, repo_id))
    if ours is False and not force:
        raise UserError(f"the hub repo {repo_id} holds other content (it is not a crystalmix export); "
                        "push to another repo, or pass --force")
    return PushTarget(api, repo_id, ours is not None)


def push_to_hub(folder: Path, repo_id: str, *, private: bool = True, token: str | None = None,
                force: bool = False, target: PushTarget | None = None) -> str:
    """Upload an exported folder as a dataset repository (created `private` when new); returns the commit URL.

    Shards and plots of an earlier export that this one no longer has are deleted in the same commit; the
    folder marker stays local. Every failure is one line (`UserError`)."""
    target = target or prepare_push(repo_id, token=token, force=force)
    api = target.api
    if not target.exists:
        _hub_call(repo_id, lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
    info = _hub_call(repo_id, lambda: api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Upload crystalmix export",
        ignore_patterns=[OUT_MARKER, PUBLISH_JOURNAL], delete_patterns=["data/**/*.parquet", "plots/*.png"]))
    return str(getattr(info, "commit_url", info))


def _hub_call(repo_id: str, call: Any) -> Any:
    """Run one huggingface_hub call; its HTTP and connection errors become one line."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return call()
    except HfHubHTTPError as exc:
        raise UserError(f"pushing to {repo_id} failed: {_one_line(str(exc))}") from None
    except (OSError, ValueError) as exc:  # connection errors of the HTTP client are OSErrors too
        raise UserError(f"pushing to {repo_id} failed: {type(exc).__name__}: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
