"""`crystalmix build`: run a manifest's sources through the steps into one mix, in resumable stages.

Stages, each a folder under ``DIR/.work`` named by the fingerprint of everything it depends on (settings,
and the content digests of the files it reads: inputs, files named in step settings, the previous stage's
output), written atomically and closed by a ``done.json`` marker recording the size and digest of every
file it wrote, so a rerun reuses a finished stage only when its files are intact, and a changed manifest or
input redoes exactly the stages it affects:

1. ``ingest`` (a task per source, or per part of a big one, on the build's executor): adapter, then the
   record steps listed before the first dedup step.
2. ``global``: all sources in priority order through the dedup steps and the record steps after them;
   near dedup's signatures and decontamination's matching are batches on the executor, decided here.
3. ``mix``: weights/epochs/max_samples, the grouped split, the shuffle; writes the parquet shards (the
   scan of the kept records and the row groups are batches on the executor, written here in order).
4. ``tokenize`` (when the manifest has a ``tokenize`` section): issue 4's stage, once per split.

Final outputs (``conversations/``, ``rejects/``, ``report.json``, ``report.md``) are then published from
the stage folders, all or nothing: written into ``DIR/.work/publish`` first, then renamed into place. They
are copies, never links into the cache, and their bytes depend only on the manifest, the inputs and the seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalmix.core import hdf5
from crystalmix.core.atomic import (
    atomic_open,
    claim_folder,
    fingerprint,
    read_files,
    sweep_temporaries,
    write_files,
    write_json,
)
from crystalmix.core.digest import Digests, config_files, hub_revision, records, text_digest, tokenizer_digest
from crystalmix.core.executors import Executor, LocalExecutor
from crystalmix.core.progress import Reporter, input_meter
from crystalmix.core.readers import FilePart, line_blocks, plan_parts
from crystalmix.core.records import (
    Conversation,
    InvalidRecordError,
    Parts,
    Rejected,
    RejectWriter,
    conversation_parts,
    read_record_line,
    read_record_lines,
    restore_conversation,
)
from crystalmix.core.remote import expand, is_url
from sft_builder.manifest import Manifest, SourceConfig, as_data, hub_name, is_hub
from sft_builder.mix import run_mix
from sft_builder.report_data import RejectSampler
from sft_builder.sources.base import make_adapter
from sft_builder.sources.common import FileLabels
from sft_builder.steps.base import Item, OrderedMap, PerSource
from sft_builder.steps.decontaminate import Decontaminate
from sft_builder.steps.dedup import ExactDedup, NearDedup
from sft_builder.steps.language import Language
from sft_builder.steps.table import STEPS, stage_order

if TYPE_CHECKING:  # the tokenize stage's modules load its libraries: imported when it runs
    from sft_builder.chat import Encoded
    from sft_builder.encode import TokenizeConfig

MAPPED = (ExactDedup, NearDedup, Decontaminate)  # steps that take an ordered map for their heavy pure batches
CODE_VERSION = "build-9"  # bump when a change of code changes outputs, so old stages are not reused
Progress = Reporter  # progress(task, done, total=None, unit="items"); crystalmix.core.progress.Progress is one


@dataclass
class BuildResult:
    out: Path
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # exclusive seconds per step (not in report.json)
    counts: dict[str, int] = field(default_factory=dict)  # items entering each step
    skipped_stages: list[str] = field(default_factory=list)


# -- JSON lines ----------------------------------------------------------------------------------------------
def read_conversations(path: Path) -> Iterator[Conversation]:
    """The records of a stage file, in order."""
    with open(path, "rb") as fh:
        for line in fh:
            yield read_record_line(line)


LOAD_BYTES = 1 << 20  # bytes of a stage file's lines per batch of `load_stage_files`


def parse_stage_lines(chunk: bytes) -> list[Parts]:
    """The records of a block of stage lines, parsed and checked, as plain values: the pure part of reading a
    stage back, which the global stage runs on its executor (the bytes travel, not a path)."""
    return [conversation_parts(c) for c in read_record_lines(chunk)]


def load_stage_files(paths: Iterable[Path], imap: OrderedMap = map) -> Iterator[Conversation]:
    """The records of stage files, in order, parsed through `imap` a block at a time."""
    for path in paths:
        for batch in imap(parse_stage_lines, line_blocks(path, LOAD_BYTES)):
            yield from map(restore_conversation, batch)


# -- stage plumbing ---------------------------------------------------------------------------------------
def split_order(m: Manifest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Steps run per source (before the first dedup step) and steps run across sources (from it on)."""
    idx = next((i for i, s in enumerate(m.order) if STEPS[s].scope == "global"), len(m.order))
    return m.order[:idx], m.order[idx:]


def input_state(src: SourceConfig, base: Path, digests: Digests) -> list[Any]:
    """What the inputs hold right now: each file's name (as the outputs will show it), size and content
    digest, so changed data, even with the same size and time, invalidates the ingest stage. A URL's files
    are listed and streamed through fsspec for their digests, as local files are read."""
    out: list[Any] = []
    for spec in src.inputs:
        if is_url(spec):
            for url in expand(spec, ("",))[1]:
                rec = digests.record(url)
                out.append([url, rec["size"], rec["xxh3"]])
            continue
        if is_hub(spec) and not Path(spec).exists():
            out.append(["hub", hub_name(spec), src.split, list(src.data_files)])  # its revision: in the marker
            continue
        p = Path(spec)
        matches = [p] if p.exists() else sorted(Path(x) for x in glob(spec, recursive=True))
        files = [f for m in matches for f in (sorted(m.rglob("*")) if m.is_dir() else [m])]
        for f in files:
            if f.is_file():
                out.append([relative(str(f), base), f.stat().st_size, digests.file(f)])
    return out


def hub_state(src: SourceConfig) -> dict[str, str | None]:
    """The revisions of a source's hub inputs as the local cache knows them (recorded in its marker)."""
    return {hub_name(x): hub_revision(hub_name(x)) for x in src.inputs if is_hub(x) and not Path(x).exists()}


def named_files(cfgs: Iterable[Any], base: Path, digests: Digests) -> list[Any]:
    """Content of the files that settings name (a benchmark to decontaminate against, ...)."""
    found = sorted({f for cfg in cfgs for f in config_files(cfg)})
    return [[relative(f, base), digests.tree(f)] for f in found]


def ingest_settings(m: Manifest, src: SourceConfig, digests: Digests) -> list[Any]:
    """What a source's ingest depends on besides its inputs' content: settings, steps, files they name."""
    pre, _ = split_order(m)
    base = m.path.parent
    steps = [[name, as_data(src.steps[name])] for name in pre if name in src.steps]
    settings = {**src.fingerprint_data(), "inputs": [relative(x, base) for x in src.inputs]}
    files = named_files([src.options, *(src.steps[n] for n in pre if n in src.steps)], base, digests)
    return [CODE_VERSION, settings, steps, files]


def ingest_fingerprint(m: Manifest, src: SourceConfig, digests: Digests | None = None) -> str:
    digests = digests or Digests()
    code, settings, steps, files = ingest_settings(m, src, digests)
    return fingerprint([code, settings, input_state(src, m.path.parent, digests), steps, files])


def part_fingerprints(m: Manifest, src: SourceConfig, parts: list[FilePart], digests: Digests) -> list[str]:
    """One key per part: the source's settings, the content of the part's file and the part's range, and the
    label its file gets (ids carry it: ``a.jsonl~2`` after another ``a.jsonl``). A part's output depends on
    nothing else, so a finished part is reused after a kill, and after a change to another file."""
    settings = ingest_settings(m, src, digests)
    labels = FileLabels()
    out = []
    for p in parts:
        size = os.path.getsize(p.path)
        label = labels(p.path) if size else ""  # an empty file yields no record, so takes no label
        where = [relative(p.path, m.path.parent), size, digests.file(p.path), label]
        out.append(fingerprint([settings, where, dataclasses.astuple(dataclasses.replace(p, path=""))]))
    return out


def global_fingerprint(m: Manifest, ingest_kept: list[str], digests: Digests | None = None) -> str:
    """Keyed on the content of each source's ingest output (`ingest_kept`: their digests)."""
    _, post = split_order(m)
    cfgs = [[name, {s.name: as_data(s.steps.get(name)) for s in m.sources}] for name in post]
    used = [s.steps[n] for n in post for s in m.sources if n in s.steps]
    files = named_files([*(m.steps[n] for n in post if n in m.steps), *used], m.path.parent, digests or Digests())
    names = [s.name for s in m.sources]
    return fingerprint([CODE_VERSION, list(zip(names, ingest_kept, strict=True)), names, cfgs, files])


def mix_fingerprint(m: Manifest, global_kept: str) -> str:
    """Keyed on the content of the global stage's output (`global_kept`: its digest)."""
    mixing = [[s.name, s.weight, s.epochs, s.max_samples] for s in m.sources]
    return fingerprint([CODE_VERSION, global_kept, m.seed, as_data(m.mix), as_data(m.split), mixing])


def tokenize_fingerprint(m: Manifest, shards: dict[str, Any]) -> str:
    """Keyed on the mix's parquet shards (`shards`: their records), the settings, and the content of the
    tokenizer and template (a tokenizer rebuilt in place, an edited template: a new key)."""
    from crystalmix.core.tokenizer import load_tokenizer
    from sft_builder.chat import load_template

    cfg = m.tokenize
    tok = load_tokenizer(cfg.tokenizer)
    template = load_template(cfg.template, tok)
    return fingerprint([CODE_VERSION, shards, cfg.identity(), tokenizer_digest(tok), text_digest(template)])


def relative(path: str, base: Path) -> str:
    """Provenance paths relative to the manifest's folder: outputs must not depend on where the repo is."""
    if not path or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, base)
    return path if rel.startswith("..") else rel


def config_fingerprint(m: Manifest) -> str:
    """The manifest's settings and the code version (no paths or file times): shown in the report."""
    return fingerprint([CODE_VERSION, m.settings_fingerprint])


MARKER = "done.json"  # a stage folder's last file: what it read (hub revisions) and wrote (sizes, digests)
STAGE_FILES = ("kept.jsonl", "rejects.jsonl", "stats.json")


def _seal(folder: Path, names: Iterable[str], inputs: Any = None) -> dict[str, Any]:
    """Close a stage: record the size and digest of each file it wrote, and what it read."""
    done = {"outputs": records(folder, names, Digests()), "inputs": inputs}
    write_json(folder / MARKER, done)
    return done


def _reuse(folder: Path, digests: Digests, inputs: Any = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(stats, marker) of a finished stage whose files are all intact and whose inputs are the same; else
    None, and the folder is emptied for the stage to run again."""
    try:
        done = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if done.get("inputs") == inputs and digests.problem(folder, done["outputs"]) is None:
            return json.loads((folder / "stats.json").read_text(encoding="utf-8")), done
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return None


def _digest(done: dict[str, Any], name: str) -> str:
    return str(done["outputs"][name]["xxh3"])


def _timed(items: Iterable[Item], key: str, times: dict[str, float], counts: Counter[str]) -> Iterator[Item]:
    """Accumulate the (inclusive) time spent producing `items`; exclusive times are differences."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            times[key] = times.get(key, 0.0) + time.perf_counter() - t0
            return
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        if isinstance(item, Conversation):
            counts[key] += 1
        yield item


def _run_chain(
    items: Iterable[Item],
    steps: list[tuple[str, Any]],
    times: dict[str, float],
    counts: Counter[str],
    first: str,
) -> Iterator[Item]:
    out = _timed(items, first, times, counts)
    for name, step in steps:
        out = _timed(step.run(out), name, times, counts)
    return out


def _drain(
    items: Iterable[Item],
    kept_path: Path,
    rejects_path: Path,
    drops: dict[str, Counter[str]],
    tick: Callable[[int], None] | None,
) -> int:
    """Write kept conversations (interchange lines) and rejects (atomically); count drops per source as
    ``step:reason``. `tick(n)` is called every 200 items with the number written so far (for progress)."""
    kept = 0
    with atomic_open(kept_path, "wb") as kfh, RejectWriter(rejects_path) as rejects:
        for n, item in enumerate(items, 1):
            if not isinstance(item, Rejected):
                try:
                    kfh.write(item.to_json_bytes())
                    kept += 1
                except InvalidRecordError as exc:  # meta text UTF-8 cannot hold (`convert` rejects it alike)
                    item = Rejected.of(item, "adapter", exc.reason, exc.detail)
            if isinstance(item, Rejected):
                drops.setdefault(item.source, Counter())[f"{item.step}:{item.reason}"] += 1
                rejects.write(item)
            if tick is not None and n % 200 == 0:
                tick(n)
    return kept


def _changes(steps: list[tuple[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, step in steps:
        for k, v in sorted(dict(step.changes).items()):
            if v:
                out[f"{name}:{k}"] = out.get(f"{name}:{k}", 0) + v
    return out


# -- stage 1: ingest one source ------------------------------------------------------------------------------
def plan_ingest(src: SourceConfig) -> list[FilePart] | None:
    """The parts one source's ingest is cut into (files; line ranges of big JSON Lines files, element ranges
    of big JSON arrays, row-group runs of big parquet files: `plan_parts`), so several workers share one
    source; None when it is read as one (hub inputs, adapters with state across records, a file named
    twice). The parts depend only on the inputs, never on the number of workers."""
    adapter = make_adapter(src.adapter, src.options, source=src.name)
    if not adapter.can_split(list(src.inputs), list(src.data_files)):
        return None
    parts = plan_parts(list(src.inputs), split=src.split, data_files=list(src.data_files) or None)
    if parts is None or len(parts) < 2 or len({(p.path, p.start) for p in parts}) < len(parts):
        return None  # a file read twice is left to the whole-source reader, which names it
    return parts


def run_ingest(
    m: Manifest, src: SourceConfig, folder: Path, progress: Progress | None = None,
    part: tuple[list[FilePart], int] | None = None,
) -> dict[str, Any]:
    """Adapter + per-source record steps for one source, or for one `part` of it (the parts and which one);
    returns (and writes) its stats."""
    pre, _ = split_order(m)
    adapter = make_adapter(src.adapter, src.options, source=src.name)
    if part is None:
        stream = adapter.stream(list(src.inputs), split=src.split, data_files=list(src.data_files) or None)
    else:
        stream = adapter.stream_part(*part)
    steps = [(name, STEPS[name].make(src.steps[name])) for name in pre if name in src.steps]
    times: dict[str, float] = {}
    counts: Counter[str] = Counter()
    drops: dict[str, Counter[str]] = {}
    read = Counter[str]()

    base = m.path.parent

    def counted(items: Iterable[Item]) -> Iterator[Item]:
        for it in items:
            read["n"] += 1
            if isinstance(it, Rejected):
                it = dataclasses.replace(it, file=relative(it.file, base))
            else:
                meta = {**it.meta, "file": relative(str(it.meta.get("file", "")), base)}
                if it.source != src.name:
                    # the interchange adapter may keep a record's own source; we count by manifest source
                    meta["orig_source"] = it.source
                it = dataclasses.replace(it, source=src.name, meta=meta)
            yield it

    chain = _run_chain(counted(stream), steps, times, counts, "adapter")
    tick = None
    if progress is not None:
        # bytes of the source's files read so far (a part's file positions count from the source's start);
        # None for a hub dataset, whose size is not known
        local = input_meter(src.inputs)

        def tick(n: int) -> None:
            if local is None:
                progress(src.name, read["n"], None, "records")
            else:
                progress(src.name, local.done(), local.total, "bytes")

    kept = _drain(chain, folder / "kept.jsonl", folder / "rejects.jsonl", drops, tick)
    if progress is not None and part is None:
        _ingest_done(progress, src, read["n"])
    lang = next((s.languages for n, s in steps if n == "language"), Counter())
    decon = next((s.stats() for n, s in steps if isinstance(s, Decontaminate)), None)
    stats = {
        "source": src.name,
        "read": read["n"],
        "kept": kept,
        "dropped": dict(sorted(drops.get(src.name, Counter()).items())),
        "changes": _changes(steps),
        "rewrite_samples": {n: list(s.samples) for n, s in steps if getattr(s, "samples", None)},
        "fixes": dict(sorted(Counter(adapter.stats.fixes).items())),
        "languages": dict(sorted(lang.items())),
        "timings": times,
        "counts": dict(counts),
    }
    if decon is not None:
        stats["decontaminate"] = decon
    write_json(folder / "stats.json", stats)
    _seal(folder, STAGE_FILES, hub_state(src))
    return stats


def _ingest_done(progress: Progress, src: SourceConfig, read: int) -> None:
    local = input_meter(src.inputs)
    if local is None:
        progress(src.name, read, read, "records")
    else:
        progress(src.name, local.total, local.total, "bytes")


def _part_bytes(part: FilePart) -> int:
    return part.nbytes if part.nbytes >= 0 else os.path.getsize(part.path)


def _ingest_worker(args: tuple[Manifest, str, str, list[FilePart] | None, int]) -> dict[str, Any]:
    m, name, folder, parts, index = args
    return run_ingest(m, m.source(name), Path(folder), part=None if parts is None else (parts, index))


def _ingest_detached(
    args: tuple[Manifest, str, str, list[FilePart] | None, int],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """`_ingest_worker` for a task on a node without the driver's disk: it ingests into a temporary folder
    of its own and returns the stats and the stage files' bytes (a part's are about `PART_BYTES`)."""
    m, name, _, parts, index = args
    with tempfile.TemporaryDirectory(prefix="crystalmix-ingest-") as tmp:
        stats = run_ingest(m, m.source(name), Path(tmp), part=None if parts is None else (parts, index))
        return stats, read_files(tmp, STAGE_FILES)


def _land(src: SourceConfig, folder: Path, stats: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """Write and seal a stage folder from what `_ingest_detached` returned (the bytes it wrote there)."""
    write_files(folder, files)
    _seal(folder, STAGE_FILES, hub_state(src))
    return stats


def _sweep(root: Path, keep: list[Path]) -> None:
    """Remove the part folders under `root` that are not among `keep` (parts of an older plan)."""
    if root.is_dir():
        for old in root.iterdir():
            if old not in keep:
                shutil.rmtree(old) if old.is_dir() else old.unlink()


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def merge_parts(m: Manifest, src: SourceConfig, part_dirs: list[Path], folder: Path) -> dict[str, Any]:
    """One source's stage from its parts' stages: outputs concatenated in part order, counts added, the
    first rewrite samples kept; the same bytes reading the source whole would have written."""
    from sft_builder.steps.clean import MAX_SAMPLES

    parts = [json.loads((d / "stats.json").read_text(encoding="utf-8")) for d in part_dirs]
    for name in ("kept.jsonl", "rejects.jsonl"):
        with atomic_open(folder / name, "wb") as out:
            for d in part_dirs:
                with open(d / name, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
    stats: dict[str, Any] = {"source": src.name, "read": 0, "kept": 0}
    sums: dict[str, dict[str, Any]] = {k: {} for k in ("dropped", "changes", "fixes", "languages", "timings",
                                                        "counts")}
    samples: dict[str, list[Any]] = {}
    decon: dict[str, dict[str, Any]] | None = None
    for st in parts:
        stats["read"] += st["read"]
        stats["kept"] += st["kept"]
        for k, acc in sums.items():
            _add(acc, st[k])
        for n, lst in st["rewrite_samples"].items():
            samples[n] = (samples.get(n, []) + lst)[:MAX_SAMPLES]
        if "decontaminate" in st:
            if decon is None:
                decon = {b: dict(v) for b, v in st["decontaminate"].items()}
            else:
                for b, v in st["decontaminate"].items():
                    for k in ("removed_by_prompt", "removed_by_solution"):
                        decon[b][k] += v[k]
    pre, _ = split_order(m)
    step_at = {name: i for i, name in enumerate(pre)}
    changes = sums["changes"]
    stats.update(
        dropped=dict(sorted(sums["dropped"].items())),
        changes={k: changes[k] for k in sorted(changes, key=lambda k: (step_at.get(k.split(":")[0], 0), k))},
        rewrite_samples=samples,
        fixes=dict(sorted(sums["fixes"].items())),
        languages=dict(sorted(sums["languages"].items())),
        timings=sums["timings"],
        counts=sums["counts"],
    )
    if decon is not None:
        stats["decontaminate"] = decon
    write_json(folder / "stats.json", stats)
    _seal(folder, STAGE_FILES, hub_state(src))
    shutil.rmtree(part_dirs[0].parent)  # the merged stage now stands for its parts
    return stats


# -- stage 2: across sources ---------------------------------------------------------------------------------
def run_global(
    m: Manifest, ingest_dirs: list[Path], folder: Path, progress: Progress | None = None,
    imap: OrderedMap = map,
) -> dict[str, Any]:
    """All sources through the dedup steps and the record steps after them. The steps that take an ordered
    map run their batches through `imap` (exact dedup's first pass over blocks of the ingest output, near
    dedup's signatures and band sorts, decontamination's matching); everything they decide is decided
    here, in stream order, so the output does not depend on it."""
    _, post = split_order(m)
    steps: list[tuple[str, Any]] = []
    priorities = {s.name: i for i, s in enumerate(m.sources)}
    for name in post:
        spec = STEPS[name]
        kw = {"imap": imap} if spec.step in MAPPED else {}
        if spec.scope == "global":
            off = tuple(s.name for s in m.sources if name not in s.steps)
            # dedup keeps the best member of each cluster, by source priority first (m.sources is sorted
            # by priority), and spills the stream to the stage folder while it decides
            steps.append((name, spec.step(m.steps[name], skip_sources=off, priorities=priorities,
                                          spill_dir=folder, **kw)))
        else:
            per = {s.name: spec.step(s.steps[name], **kw) for s in m.sources if name in s.steps}
            steps.append((name, PerSource(name, per)))

    times: dict[str, float] = {}
    counts: Counter[str] = Counter()
    drops: dict[str, Counter[str]] = {}
    files = [d / "kept.jsonl" for d in ingest_dirs]
    if steps and isinstance(steps[0][1], ExactDedup):
        # exact dedup reads the files itself, in the workers (parsing, keys, digests); loading is timed with it
        def loaded(n: int) -> None:
            counts["load"] += n

        times["load"] = 0.0
        chain = _run_chain(steps[0][1].run_files(files, loaded), steps[1:], times, counts, steps[0][0])
    else:
        chain = _run_chain(load_stage_files(files, imap), steps, times, counts, "load")
    tick = None
    if progress is not None:
        total = sum(int(json.loads((d / "stats.json").read_text(encoding="utf-8"))["kept"]) for d in ingest_dirs)

        def tick(n: int) -> None:
            progress("dedup", min(counts["load"], total), total, "conversations")

    kept = _drain(chain, folder / "kept.jsonl", folder / "rejects.jsonl", drops, tick)
    languages = Counter()
    for _, step in steps:
        if isinstance(step, PerSource):
            for s in step.steps.values():
                if isinstance(s, Language):
                    languages.update(s.languages)
    near = next((s for n, s in steps if isinstance(s, NearDedup)), None)
    decon = {src: s.stats() for _, step in steps if isinstance(step, PerSource)
             for src, s in step.steps.items() if isinstance(s, Decontaminate)}
    stats = {
        "kept": kept,
        "dropped": {k: dict(sorted(v.items())) for k, v in sorted(drops.items())},
        "changes": _changes(steps),
        "near_dedup_lsh": None if near is None else [near.index.bands, near.index.rows],
        "dedup": {n: s.log.summary() for n, s in steps if isinstance(s, (ExactDedup, NearDedup))},
        "decontaminate": decon,
        "timings": times,
        "counts": dict(counts),
    }
    write_json(folder / "stats.json", stats)
    _seal(folder, STAGE_FILES)
    return stats


# -- the whole build -------------------------------------------------------------------------------------
def steady_allocator(threshold: int = 256 * 1024) -> bool:
    """Fix glibc's mmap threshold, so every buffer above `threshold` bytes is its own mapping, given back on free.

    By default glibc raises the threshold to the size of the largest buffer freed so far (up to 32 MB): after
    the first MinHash matrix, the dedup index's growing numpy arrays come from the heap, and the holes they
    leave when they grow are kept, so resident memory grows faster than the index (about 10% more at 100,000
    conversations). A fixed threshold keeps the build's memory to what it holds. No-op off glibc.

    A process-wide setting: the command line (`crystalmix build`) calls it, never `build` itself.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def local_executor(workers: int) -> LocalExecutor:
    """The build's local executor: forked workers, which share the manifest and modules the parent loaded."""
    return LocalExecutor(workers, start="fork")


def build(m: Manifest, out: str | Path, *, workers: int = 1, progress: Progress | None = None,
          force: bool = False, executor: Executor | None = None) -> BuildResult:
    """Run (or resume) the build of `m` into `out`; returns the report and per-step timings.

    `out` must be new, empty or an earlier build's folder; `force` writes into any other folder. The
    ingest tasks (whole sources, parts of split ones), the heavy batches of the global stage and the mix, and
    on a distributed executor (Ray) the tokenize stage's encoding too, a task per row group of each parquet
    shard, run on `executor` (by default `workers` forked processes); the outputs do not depend on which.
    """
    runner = executor if executor is not None else local_executor(workers)
    with runner:  # one Ray session for all the stages' tasks (each stage has its own local workers)
        return _build(m, out, runner, progress, force)


def _build(m: Manifest, out: str | Path, runner: Executor, progress: Progress | None, force: bool) -> BuildResult:
    from sft_builder.report import make_report, write_report

    out = claim_folder(out, "build", force=force, legacy=(".work",))
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out)
    result = BuildResult(out, {})

    # 1. ingest, one stage per source
    digests = Digests()  # each input read once in this run
    fps = [ingest_fingerprint(m, s, digests) for s in m.sources]
    dirs = [work / f"ingest-{s.name}-{fp}" for s, fp in zip(m.sources, fps, strict=True)]
    ingest: dict[str, dict[str, Any]] = {}
    sealed: dict[str, dict[str, Any]] = {}
    todo = []
    for s, d in zip(m.sources, dirs, strict=True):
        reused = _reuse(d, digests, hub_state(s))
        if reused is not None:
            ingest[s.name], sealed[s.name] = reused
            result.skipped_stages.append(d.name)
        else:
            todo.append((s, d))
    # a source whose inputs split into parts is ingested part by part, then merged
    tasks: list[tuple[Manifest, str, str, list[FilePart] | None, int]] = []
    split_dirs: dict[str, list[Path]] = {}
    for s, d in todo:
        parts = plan_ingest(s)
        if parts is None:
            tasks.append((m, s.name, str(d), None, 0))
            continue
        # each part is a sealed stage of its own, kept until the source is merged: a rerun after a kill
        # redoes only the parts that had not finished
        root = work / f"parts-{s.name}"
        split_dirs[s.name] = [root / key for key in part_fingerprints(m, s, parts, digests)]
        _sweep(root, split_dirs[s.name])
        for i, pd in enumerate(split_dirs[s.name]):
            if _reuse(pd, digests, hub_state(s)) is None:
                tasks.append((m, s.name, str(pd), parts, i))
            else:
                result.skipped_stages.append(f"{root.name}/{pd.name}")
    if runner.in_process or (isinstance(runner, LocalExecutor) and len(tasks) < 2):
        for task in tasks:  # here, with the finer progress a task in this process can report
            src = m.source(task[1])
            if task[3] is None:
                ingest[task[1]] = run_ingest(m, src, Path(task[2]), progress)
            else:
                run_ingest(m, src, Path(task[2]), progress, part=(task[3], task[4]))
    else:
        parts_done: Counter[str] = Counter()  # bytes of the finished parts of each split source
        # a task that cannot see this disk writes into a folder of its own; its files are written here
        worker = _ingest_worker if runner.shared_disk else _ingest_detached
        with runner:  # local workers for this stage only: later stages fork theirs from what they have made
            for task, res in zip(tasks, runner.imap(worker, tasks), strict=True):
                stats = res if runner.shared_disk else _land(m.source(task[1]), Path(task[2]), *res)
                if task[3] is None:
                    ingest[task[1]] = stats
                if progress is not None:
                    src = m.source(task[1])
                    if task[3] is None:
                        _ingest_done(progress, src, stats["read"])
                    else:  # parts exist only for local files, whose sizes are known
                        parts_done[task[1]] += _part_bytes(task[3][task[4]])
                        total = input_meter(src.inputs).total  # type: ignore[union-attr]
                        progress(task[1], min(parts_done[task[1]], total), total, "bytes")
    for s, d in todo:
        if s.name in split_dirs:
            ingest[s.name] = merge_parts(m, s, split_dirs[s.name], d)
            if progress is not None:
                _ingest_done(progress, s, ingest[s.name]["read"])
        sealed[s.name] = json.loads((d / MARKER).read_text(encoding="utf-8"))

    # 2. across sources, keyed on what the ingest stages hold; 3. mix, split, shuffle, parquet. Both hand
    # their heavy pure batches to the executor (its workers load what a batch needs once, by its settings)
    gfp = global_fingerprint(m, [_digest(sealed[s.name], "kept.jsonl") for s in m.sources], digests)
    gdir = work / f"global-{gfp}"
    reused = _reuse(gdir, digests)
    if reused is None:
        glob_stats = run_global(m, dirs, gdir, progress, runner.imap)
        gdone = json.loads((gdir / MARKER).read_text(encoding="utf-8"))
    else:
        glob_stats, gdone = reused
        result.skipped_stages.append(gdir.name)

    mfp = mix_fingerprint(m, _digest(gdone, "kept.jsonl"))
    mdir = work / f"mix-{mfp}"
    reused = _reuse(mdir, digests)
    if reused is None:
        mix_stats = run_mix(m, gdir / "kept.jsonl", mdir, progress, runner.imap, shared_disk=runner.shared_disk)
        write_json(mdir / "stats.json", mix_stats)
        mdone = _seal(mdir, [*STAGE_FILES[1:], *(p.name for p in mdir.glob("*.parquet"))])
    else:
        mix_stats, mdone = reused
        result.skipped_stages.append(mdir.name)
    shards = {k: v for k, v in mdone["outputs"].items() if k.endswith(".parquet")}

    # 4. optional tokenize stage (issue 4), once per split: a verified published folder is reused, else the
    # stage runs (or resumes) under .work/publish and is published with the rest
    staging = work / "publish"
    if staging.exists():
        for old in staging.iterdir():  # a killed tokenize stage's rows stay, to resume from
            if old.is_dir() and old.name != "tokenized":
                shutil.rmtree(old)
            elif old.is_file():
                old.unlink()
    tokenize_stats: dict[str, Any] = {}
    if m.tokenize is not None:
        from sft_builder.encode import finished, run_tokenize

        tfp = tokenize_fingerprint(m, shards)
        for split in ("train", "test"):
            files = sorted(mdir.glob(f"{split}-*.parquet"))
            if not files:
                continue
            stats = finished(out / "tokenized" / split, tfp, digests)
            if stats is None:
                convs = (c for f in files for c in iter_parquet(f))
                stats = run_tokenize(convs, m.tokenize, staging / "tokenized" / split, seed=m.seed,
                                     fingerprint=tfp, encodings=_encoded(runner, m.tokenize, files))
            # whether the stage was reused must not change the report's bytes
            tokenize_stats[split] = {k: v for k, v in stats.items() if k != "skipped"}

    # publish, all or nothing: every new file is written under .work/publish, then renamed into place
    _stage_conversations(mdir, shards, out / "conversations", staging / "conversations", digests)
    sampler = RejectSampler(m.seed)
    steps = _publish_rejects(m, dirs, gdir, mdir, staging / "rejects", sampler)
    for split in tokenize_stats:
        root = staging if (staging / "tokenized" / split).is_dir() else out
        _sample_rejects(root, root / "tokenized" / split / "rejects.jsonl", sampler)
    report = make_report(
        m, ingest, glob_stats, mix_stats, tokenize_stats, fingerprint=config_fingerprint(m),
        stage_order=stage_order(),
    )
    report["reject_samples"] = sampler.result()
    write_report(staging, report)
    _commit(staging, out, shards, steps, set(tokenize_stats))
    result.report = report
    _collect_timings(result, ingest, glob_stats, mix_stats)
    return result


def _collect_timings(
    result: BuildResult,
    ingest: dict[str, dict[str, Any]],
    glob_stats: dict[str, Any],
    mix_stats: dict[str, Any],
) -> None:
    """Exclusive seconds per step from the inclusive timers of each stage's chain."""
    for stats in [*ingest.values(), glob_stats]:
        times, counts = stats.get("timings", {}), stats.get("counts", {})
        prev = 0.0
        for key, t in times.items():
            if key != "load":
                result.timings[key] = result.timings.get(key, 0.0) + max(t - prev, 0.0)
            prev = t
        keys = list(times)
        for i, key in enumerate(keys):
            if i > 0:  # items entering a step = items produced by the one before it
                result.counts[key] = result.counts.get(key, 0) + counts.get(keys[i - 1], 0)
            elif key == "adapter":
                result.counts["adapter"] = result.counts.get("adapter", 0) + counts.get(key, 0)
    result.timings["mix"] = mix_stats.get("seconds", 0.0)
    result.counts["mix"] = sum(v.get("in", 0) for v in mix_stats.get("sources", {}).values())


def _sample_rejects(out: Path, path: Path, sampler: RejectSampler) -> None:
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                sampler.offer(path.relative_to(out).as_posix(), n, json.loads(line))


def iter_parquet(path: Path) -> Iterator[Conversation]:
    """Conversations back from one of our parquet shards."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=1000):
        yield from _conversations(batch.to_pylist())


def _conversations(rows: Iterable[dict[str, Any]]) -> Iterator[Conversation]:
    for row in rows:
        yield Conversation.from_dict({**row, "meta": json.loads(row["meta"])}, allow_empty_final_answer=True)


EncodeJob = tuple["TokenizeConfig", bytes]  # (settings, a row group of a parquet shard as an Arrow IPC stream)


def _encoded(runner: Executor, cfg: TokenizeConfig, files: list[Path]) -> Iterator[Encoded | Rejected] | None:
    """The tokenize stage's encoding as tasks on a distributed executor, a row group of a shard each, read
    lazily and in order (the stage packs them in this process); None where the stage's own workers
    (``tokenize.workers``) encode instead. A task gets the row group's data, not the shard's path: it may
    run on a node without this disk."""
    if isinstance(runner, LocalExecutor):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    def jobs() -> Iterator[EncodeJob]:
        for f in files:
            pf = pq.ParquetFile(f)
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
                yield cfg, sink.getvalue().to_pybytes()

    return (item for batch in runner.imap(_encode_group, jobs()) for item in batch)


def _encode_group(job: EncodeJob) -> list[Encoded | Rejected]:
    """Encode one row group of a parquet shard (a result does not depend on the rest of its batch)."""
    import pyarrow as pa

    from sft_builder.encode import encoder_for

    cfg, data = job
    rows = pa.ipc.open_stream(data).read_all().to_pylist()
    return encoder_for(cfg).encode(list(_conversations(rows)))


def _stage_conversations(src: Path, shards: dict[str, Any], published: Path, staging: Path,
                         digests: Digests) -> None:
    """Copy into `staging` each mix shard that is not already published intact (copies, never links: a
    published file damaged later must not damage the cache, nor the other way round)."""
    staging.mkdir(parents=True, exist_ok=True)
    for name in sorted(shards):
        if digests.problem(published, {name: shards[name]}) is not None:
            shutil.copyfile(src / name, staging / name)


def _commit(staging: Path, out: Path, shards: Iterable[str], steps: Iterable[str], splits: set[str]) -> None:
    """Rename every staged file into place (markers last), then remove what a previous build left that this
    one did not write: parquet shards, reject files, tokenized splits and their data files."""
    staged = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name.startswith("."), p))
    for path in staged:
        final = out / path.relative_to(staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
    keep = {"conversations": set(shards), "rejects": {f"{s}.jsonl" for s in steps}}
    for folder, names in keep.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        for old in (out / folder).glob("*.parquet" if folder == "conversations" else "*.jsonl"):
            if old.name not in names:
                old.unlink()
    tokenized = out / "tokenized"
    for split in (p for p in tokenized.iterdir() if p.is_dir()) if tokenized.is_dir() else ():
        if split.name not in splits:
            shutil.rmtree(split)
            continue
        listed = {f["name"] for f in hdf5.read_metadata(split).get("files", [])}
        for old in [*split.glob("data-*.h5"), *split.glob("data-*.jsonl")]:
            if old.name not in listed:
                old.unlink()
    shutil.rmtree(staging)


def _publish_rejects(m: Manifest, ingest_dirs: list[Path], gdir: Path, mdir: Path, dst: Path,
                     sampler: RejectSampler | None = None) -> list[str]:
    """One ``rejects/<step>.jsonl`` per step, records in source priority order then stream order; `sampler`
    sees each reject with its line in the published file (the report's samples link there). Returns the
    steps written."""
    dst.mkdir(parents=True, exist_ok=True)
    files = [*(d / "rejects.jsonl" for d in ingest_dirs), gdir / "rejects.jsonl", mdir / "rejects.jsonl"]
    handles: dict[str, Any] = {}
    lines: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    rec = json.loads(line)
                    step = rec["step"]
                    if step not in handles:
                        handles[step] = stack.enter_context(atomic_open(dst / f"{step}.jsonl"))
                    handles[step].write(line)
                    lines[step] += 1
                    if sampler is not None:
                        sampler.offer(f"{dst.name}/{step}.jsonl", lines[step], rec)
    return sorted(handles)
