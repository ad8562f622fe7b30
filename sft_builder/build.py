"""`crystalmix build`: run a manifest's sources through the steps into one mix, in resumable stages.

Stages, each a folder under ``DIR/.work`` named by the fingerprint of everything it depends on, written
atomically and closed by a ``stats.json`` marker, so a rerun skips finished stages and a changed manifest
redoes exactly the stages it affects:

1. ``ingest`` (one per source, parallel with ``workers``): adapter, then the record steps listed before
   the first dedup step.
2. ``global``: all sources in priority order through the dedup steps and the record steps after them.
3. ``mix``: weights/epochs/max_samples, the grouped split, the shuffle; writes the parquet shards.
4. ``tokenize`` (when the manifest has a ``tokenize`` section): issue 4's stage, once per split.

Final outputs (``conversations/``, ``rejects/``, ``report.json``, ``report.md``) are then published from
the stage folders; their bytes depend only on the manifest, the inputs and the seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

from crystalmix.core.atomic import atomic_open, atomic_path, fingerprint, sweep_temporaries, write_json
from crystalmix.core.records import Conversation, InvalidRecordError, Rejected, RejectWriter
from crystalmix.core.workers import WorkerPool
from sft_builder.manifest import Manifest, SourceConfig, as_data, hub_name, is_hub
from sft_builder.mix import run_mix
from sft_builder.report_data import RejectSampler
from sft_builder.sources.base import make_adapter
from sft_builder.steps.base import Item, PerSource
from sft_builder.steps.decontaminate import Decontaminate
from sft_builder.steps.dedup import ExactDedup, NearDedup
from sft_builder.steps.language import Language
from sft_builder.steps.table import STEPS, stage_order

CODE_VERSION = "build-8"  # bump when a change of code changes outputs, so old stages are not reused
Progress = Callable[[str, int], None]  # (task description, items done) -> None


@dataclass
class BuildResult:
    out: Path
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # exclusive seconds per step (not in report.json)
    counts: dict[str, int] = field(default_factory=dict)  # items entering each step
    skipped_stages: list[str] = field(default_factory=list)


# -- JSON lines ----------------------------------------------------------------------------------------------
def read_conversations(path: Path) -> Iterator[Conversation]:
    """Records a stage wrote (so already accepted: an empty final answer only if an adapter allowed it)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield Conversation.from_dict(json.loads(line), allow_empty_final_answer=True)


# -- stage plumbing ---------------------------------------------------------------------------------------
def split_order(m: Manifest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Steps run per source (before the first dedup step) and steps run across sources (from it on)."""
    idx = next((i for i, s in enumerate(m.order) if STEPS[s].scope == "global"), len(m.order))
    return m.order[:idx], m.order[idx:]


def input_state(src: SourceConfig) -> list[Any]:
    """What the inputs are right now (paths, sizes, mtimes), so changed data invalidates the ingest stage."""
    out: list[Any] = []
    for spec in src.inputs:
        if is_hub(spec) and not Path(spec).exists():
            out.append(["hub", hub_name(spec), src.split, list(src.data_files)])
            continue
        p = Path(spec)
        matches = [p] if p.exists() else sorted(Path(x) for x in glob(spec, recursive=True))
        files = [f for m in matches for f in (sorted(m.rglob("*")) if m.is_dir() else [m])]
        for f in files:
            if f.is_file():
                st = f.stat()
                out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def ingest_fingerprint(m: Manifest, src: SourceConfig) -> str:
    pre, _ = split_order(m)
    steps = [[name, as_data(src.steps[name])] for name in pre if name in src.steps]
    return fingerprint([CODE_VERSION, src.fingerprint_data(), input_state(src), steps])


def global_fingerprint(m: Manifest, ingest_fps: list[str]) -> str:
    _, post = split_order(m)
    cfgs = [[name, {s.name: as_data(s.steps.get(name)) for s in m.sources}] for name in post]
    return fingerprint([CODE_VERSION, ingest_fps, [s.name for s in m.sources], cfgs])


def mix_fingerprint(m: Manifest, global_fp: str) -> str:
    mixing = [[s.name, s.weight, s.epochs, s.max_samples] for s in m.sources]
    return fingerprint([CODE_VERSION, global_fp, m.seed, as_data(m.mix), as_data(m.split), mixing])


def relative(path: str, base: Path) -> str:
    """Provenance paths relative to the manifest's folder: outputs must not depend on where the repo is."""
    if not path or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, base)
    return path if rel.startswith("..") else rel


def config_fingerprint(m: Manifest) -> str:
    """The manifest's settings and the code version (no paths or file times): shown in the report."""
    return fingerprint([CODE_VERSION, m.settings_fingerprint])


def _done(folder: Path) -> dict[str, Any] | None:
    marker = folder / "stats.json"
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None


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
    progress: Progress | None,
    task: str,
) -> int:
    """Write kept conversations (interchange lines) and rejects (atomically); count drops per source as
    ``step:reason``."""
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
            if progress is not None and n % 200 == 0:
                progress(task, n)
    return kept


def _changes(steps: list[tuple[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, step in steps:
        for k, v in sorted(dict(step.changes).items()):
            if v:
                out[f"{name}:{k}"] = out.get(f"{name}:{k}", 0) + v
    return out


# -- stage 1: ingest one source ------------------------------------------------------------------------------
def run_ingest(
    m: Manifest, src: SourceConfig, folder: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Adapter + per-source record steps for one source; returns (and writes) its stats."""
    pre, _ = split_order(m)
    adapter = make_adapter(src.adapter, src.options, source=src.name)
    stream = adapter.stream(list(src.inputs), split=src.split, data_files=list(src.data_files) or None)
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
    kept = _drain(chain, folder / "kept.jsonl", folder / "rejects.jsonl", drops, progress, src.name)
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
    return stats


def _ingest_worker(args: tuple[Manifest, str, str]) -> dict[str, Any]:
    m, name, folder = args
    return run_ingest(m, m.source(name), Path(folder))


# -- stage 2: across sources ---------------------------------------------------------------------------------
def run_global(
    m: Manifest, ingest_dirs: list[Path], folder: Path, progress: Progress | None = None
) -> dict[str, Any]:
    _, post = split_order(m)
    steps: list[tuple[str, Any]] = []
    priorities = {s.name: i for i, s in enumerate(m.sources)}
    for name in post:
        spec = STEPS[name]
        if spec.scope == "global":
            off = tuple(s.name for s in m.sources if name not in s.steps)
            # dedup keeps the best member of each cluster, by source priority first (m.sources is sorted
            # by priority), and spills the stream to the stage folder while it decides
            steps.append((name, spec.step(m.steps[name], skip_sources=off, priorities=priorities,
                                          spill_dir=folder)))
        else:
            per = {s.name: spec.make(s.steps[name]) for s in m.sources if name in s.steps}
            steps.append((name, PerSource(name, per)))

    def items() -> Iterator[Item]:
        for d in ingest_dirs:
            yield from read_conversations(d / "kept.jsonl")

    times: dict[str, float] = {}
    counts: Counter[str] = Counter()
    drops: dict[str, Counter[str]] = {}
    chain = _run_chain(items(), steps, times, counts, "load")
    kept = _drain(chain, folder / "kept.jsonl", folder / "rejects.jsonl", drops, progress, "dedup")
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
    return stats


# -- the whole build -------------------------------------------------------------------------------------
def steady_allocator(threshold: int = 256 * 1024) -> bool:
    """Fix glibc's mmap threshold, so every buffer above `threshold` bytes is its own mapping, given back on free.

    By default glibc raises the threshold to the size of the largest buffer freed so far (up to 32 MB): after
    the first MinHash matrix, the dedup index's growing numpy arrays come from the heap, and the holes they
    leave when they grow are kept, so resident memory grows faster than the index (about 10% more at 100,000
    conversations). A fixed threshold keeps the build's memory to what it holds. No-op off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def build(m: Manifest, out: str | Path, *, workers: int = 1, progress: Progress | None = None) -> BuildResult:
    """Run (or resume) the build of `m` into `out`; returns the report and per-step timings."""
    from sft_builder.report import make_report, write_report

    steady_allocator()
    out = Path(out)
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out)
    result = BuildResult(out, {})

    # 1. ingest, one stage per source
    fps = [ingest_fingerprint(m, s) for s in m.sources]
    dirs = [work / f"ingest-{s.name}-{fp}" for s, fp in zip(m.sources, fps, strict=True)]
    ingest: dict[str, dict[str, Any]] = {}
    todo = []
    for s, d in zip(m.sources, dirs, strict=True):
        done = _done(d)
        if done is not None:
            ingest[s.name] = done
            result.skipped_stages.append(d.name)
        else:
            d.mkdir(parents=True, exist_ok=True)
            todo.append((s, d))
    if workers > 1 and len(todo) > 1:
        with WorkerPool(min(workers, len(todo)), start="fork") as pool:
            for (s, _), stats in zip(
                todo, pool.map(_ingest_worker, [(m, s.name, str(d)) for s, d in todo]), strict=True
            ):
                ingest[s.name] = stats
                if progress is not None:
                    progress(s.name, stats["read"])
    else:
        for s, d in todo:
            ingest[s.name] = run_ingest(m, s, d, progress)

    # 2. across sources
    gfp = global_fingerprint(m, fps)
    gdir = work / f"global-{gfp}"
    glob_stats = _done(gdir)
    if glob_stats is None:
        gdir.mkdir(parents=True, exist_ok=True)
        glob_stats = run_global(m, dirs, gdir, progress)
    else:
        result.skipped_stages.append(gdir.name)

    # 3. mix, split, shuffle, parquet
    mfp = mix_fingerprint(m, gfp)
    mdir = work / f"mix-{mfp}"
    mix_stats = _done(mdir)
    if mix_stats is None:
        mdir.mkdir(parents=True, exist_ok=True)
        mix_stats = run_mix(m, gdir / "kept.jsonl", mdir, progress)
        write_json(mdir / "stats.json", mix_stats)
    else:
        result.skipped_stages.append(mdir.name)

    # 4. optional tokenize stage (issue 4), once per split, resumable on its own
    tokenize_stats: dict[str, Any] = {}
    if m.tokenize is not None:
        from sft_builder.encode import run_tokenize

        identity = m.tokenize.identity() if hasattr(m.tokenize, "identity") else m.tokenize_raw
        tfp = fingerprint([mfp, identity])
        for split in ("train", "test"):
            files = sorted(mdir.glob(f"{split}-*.parquet"))
            if not files:
                continue
            convs = (c for f in files for c in iter_parquet(f))
            stats = run_tokenize(convs, m.tokenize, out / "tokenized" / split, seed=m.seed, fingerprint=tfp)
            # whether the stage was reused must not change the report's bytes
            tokenize_stats[split] = {k: v for k, v in stats.items() if k != "skipped"}

    # publish
    _publish_conversations(mdir, out / "conversations")
    sampler = RejectSampler(m.seed)
    _publish_rejects(m, dirs, gdir, mdir, out / "rejects", sampler)
    for split in tokenize_stats:
        _sample_rejects(out, out / "tokenized" / split / "rejects.jsonl", sampler)
    report = make_report(
        m, ingest, glob_stats, mix_stats, tokenize_stats, fingerprint=config_fingerprint(m),
        stage_order=stage_order(),
    )
    report["reject_samples"] = sampler.result()
    write_report(out, report)
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
        for row in batch.to_pylist():
            yield Conversation.from_dict({**row, "meta": json.loads(row["meta"])}, allow_empty_final_answer=True)


def _publish_conversations(src: Path, dst: Path) -> None:
    """Hard-link (or copy) the mix's shards into place and remove shards a previous build left behind."""
    dst.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in src.glob("*.parquet")}
    for name in sorted(names):
        if (dst / name).exists() and os.path.samefile(dst / name, src / name):
            continue  # already published (renaming a hard link over itself would be a no-op)
        with atomic_path(dst / name) as tmp:
            try:
                os.link(src / name, tmp)
            except OSError:
                shutil.copyfile(src / name, tmp)
    for old in dst.glob("*.parquet"):
        if old.name not in names:
            old.unlink()


def _publish_rejects(m: Manifest, ingest_dirs: list[Path], gdir: Path, mdir: Path, dst: Path,
                     sampler: RejectSampler | None = None) -> None:
    """One ``rejects/<step>.jsonl`` per step, records in source priority order then stream order; `sampler`
    sees each reject with its line in the published file (the report's samples link there)."""
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
    for old in dst.glob("*.jsonl"):
        if old.stem not in handles:
            old.unlink()
