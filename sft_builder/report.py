"""The build report: per source and per step, counts in and out with reasons, characters, turns, languages.

`report.json` is the machine-readable form (its bytes are stable: no timings, sorted keys), `report.md` the
human one, and `print_report` the rich table shown at the end of `crystalmix build`. Every source must
balance (read = kept + all drops); a build that loses a record is a bug and stops here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crystalmix.core.atomic import atomic_open, write_json
from sft_builder.manifest import Manifest
from sft_builder.steps.dedup import DECIDERS


def make_report(
    m: Manifest,
    ingest: dict[str, dict[str, Any]],
    glob_stats: dict[str, Any],
    mix_stats: dict[str, Any],
    tokenize_stats: dict[str, Any],
    *,
    fingerprint: str,
    stage_order: tuple[str, ...],
) -> dict[str, Any]:
    enabled = {"adapter", *m.order, "mix"}
    sources: dict[str, Any] = {}
    for s in m.sources:
        ing, mix = ingest[s.name], mix_stats["sources"][s.name]
        dropped: Counter[str] = Counter(ing["dropped"])
        dropped.update(glob_stats["dropped"].get(s.name, {}))
        dropped.update(mix["dropped"])
        kept = mix["kept"]
        if ing["read"] != kept + sum(dropped.values()):
            raise RuntimeError(
                f"source {s.name!r} does not balance: read {ing['read']} != kept {kept} + "
                f"dropped {sum(dropped.values())}"
            )
        sources[s.name] = {
            "adapter": s.adapter,
            "read": ing["read"],
            "kept": kept,
            "dropped": dict(sorted(dropped.items())),
            "train": mix["train"],
            "test": mix["test"],
            "chars": mix["chars"],
            "turns": mix["turns"],
            "rounds": mix["rounds"],
            "turns_hist": mix.get("turns_hist", {}),
            "documents": mix.get("documents", 0),  # plain-text records (trained on every token)
            "languages": ing["languages"],
            "adapter_fixes": ing["fixes"],
            "changes": ing["changes"],
            "rewrite_samples": ing.get("rewrite_samples", {}),
            "mixing": {"weight": s.weight, "epochs": s.epochs, "max_samples": s.max_samples},
        }
    decontamination = _decontamination(m, ingest, glob_stats)
    steps: dict[str, Any] = {}
    flowing = sum(v["read"] for v in sources.values())
    for step in stage_order:
        reasons: Counter[str] = Counter()
        for v in sources.values():
            for key, n in v["dropped"].items():
                st, _, reason = key.partition(":")
                if st == step:
                    reasons[reason] += n
        out = flowing - sum(reasons.values())
        steps[step] = {
            "enabled": step in enabled,
            "in": flowing,
            "out": out,
            "dropped": dict(sorted(reasons.items())),
        }
        flowing = out
    languages: Counter[str] = Counter()
    for v in sources.values():
        languages.update(v["languages"])
    report = {
        "manifest": m.path.name,
        "fingerprint": fingerprint,
        "seed": m.seed,
        "steps": steps,
        "sources": sources,
        "changes": glob_stats.get("changes", {}),
        "near_dedup_lsh": glob_stats.get("near_dedup_lsh"),
        "dedup": glob_stats.get("dedup", {}),
        "decontamination": decontamination,
        "languages": dict(sorted(languages.items())),
        "totals": {
            "read": sum(v["read"] for v in sources.values()),
            "kept": sum(v["kept"] for v in sources.values()),
            "train": mix_stats["splits"]["train"],
            "test": mix_stats["splits"]["test"],
            "chars": sum(v["chars"] for v in sources.values()),
            "turns": sum(v["turns"] for v in sources.values()),
        },
        "files": mix_stats["files"],
        "skipped_sources": dict(m.skipped),
    }
    if tokenize_stats:
        report["tokenize"] = tokenize_stats
    return report


def _decontamination(m: Manifest, ingest: dict[str, dict[str, Any]], glob_stats: dict[str, Any]) -> dict[str, Any]:
    """Per benchmark: items, distinct prompt and solution n-grams, and records removed per source (by prompt or
    by solution). The step runs per source, so its stats come from each source's stage."""
    per_source = {s.name: ingest[s.name].get("decontaminate") for s in m.sources}
    per_source.update(glob_stats.get("decontaminate") or {})
    out: dict[str, Any] = {}
    for source, stats in per_source.items():
        for bench, st in (stats or {}).items():
            b = out.setdefault(bench, {k: st[k] for k in ("items", "prompt_ngrams", "solution_ngrams", "no_ngrams")})
            b.setdefault("removed", {})[source] = {"prompt": st["removed_by_prompt"],
                                                    "solution": st["removed_by_solution"]}
    return {name: out[name] for name in sorted(out)}


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    with atomic_open(out / "report.md") as fh:
        fh.write(markdown(report))


def markdown(report: dict[str, Any], plots: Sequence[tuple[str, str]] = ()) -> str:
    """report.md; `plots` are (relative PNG path, title) pairs written beside it (``crystalmix report``)."""
    lines = [
        f"# Build report: {report['manifest']}",
        "",
        f"Seed {report['seed']}, config fingerprint `{report['fingerprint']}`.",
        "",
        "## Sources",
        "",
        "| source | adapter | read | kept | train | test | chars | turns | languages | top drops |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, v in report["sources"].items():
        langs = ", ".join(f"{k} {n}" for k, n in sorted(v["languages"].items(), key=lambda kv: -kv[1])[:4])
        lines.append(
            f"| {name} | {v['adapter']} | {v['read']} | {v['kept']} | {v['train']} | {v['test']} | "
            f"{v['chars']} | {v['turns']} | {langs} | {_top(v['dropped'])} |"
        )
    t = report["totals"]
    lines += [
        f"| **total** | | {t['read']} | {t['kept']} | {t['train']} | {t['test']} | {t['chars']} | "
        f"{t['turns']} | | |",
        "",
        "## Steps",
        "",
        "| step | in | out | dropped (reason: count) |",
        "|---|---:|---:|---|",
    ]
    for name, st in report["steps"].items():
        if not st["enabled"]:
            continue
        reasons = ", ".join(f"{r}: {n}" for r, n in st["dropped"].items()) or "-"
        lines.append(f"| {name} | {st['in']} | {st['out']} | {reasons} |")
    for name, why in report.get("skipped_sources", {}).items():
        lines += ["", f"Skipped: **{name}**: {why}"]
    lines += ["", "## Drops per source", ""]
    for name, v in report["sources"].items():
        if v["dropped"]:
            lines.append(f"- **{name}**: " + ", ".join(f"`{k}` {n}" for k, n in v["dropped"].items()))
    changes = {k: n for v in report["sources"].values() for k, n in v["changes"].items()}
    fixes = {f"adapter:{k}": n for v in report["sources"].values() for k, n in v.get("adapter_fixes", {}).items()}
    if changes or fixes or report["changes"]:
        lines += ["", "## Rewrites that kept the record", ""]
        totals: Counter[str] = Counter()
        for v in report["sources"].values():
            totals.update(v["changes"])
            totals.update({f"adapter:{k}": n for k, n in v.get("adapter_fixes", {}).items()})  # repairs
        totals.update(report["changes"])
        lines += [f"- `{k}`: {n}" for k, n in sorted(totals.items())]
    lines += _tokens_markdown(report)
    lines += _rewrite_samples_markdown(report["sources"])
    lines += _dedup_markdown(report.get("dedup", {}))
    lines += _decontamination_markdown(report.get("decontamination", {}))
    lines += _plots_markdown(plots)
    lines.append("")
    return "\n".join(lines)


def _rewrite_samples_markdown(sources: dict[str, Any]) -> list[str]:
    """The first large rewrites of each source (a step removed over a quarter of a turn's text)."""
    rows = [(name, step, smp) for name, v in sources.items()
            for step, samples in v.get("rewrite_samples", {}).items() for smp in samples]
    if not rows:
        return []
    lines = ["", "## Large rewrites (samples)", "",
             "Turns a step rewrote, removing more than a quarter of their letters and digits (a turn left "
             "empty goes with its partner turn); the first few of each source, to check.", ""]
    for name, step, smp in rows:
        lines.append(f"- **{name}** `{step}` `{smp['id']}` ({smp['file']}:{smp['line']}) turn {smp['turn']} "
                     f"({smp['role']}), {smp['removed_share']:.0%} removed: \"{_preview(smp['before'])}\" -> "
                     f"\"{_preview(smp['after'])}\"")
    return lines


def _tokens_markdown(report: dict[str, Any]) -> list[str]:
    """Tokens per source and split (prompt and trained), and the packing of each split."""
    tok = report.get("tokenize") or {}
    splits = sorted(tok, key=lambda s: (s != "train", s))
    if not splits:
        return []
    lines = ["", "## Tokens", "", "Prompt tokens are context only; trained tokens carry the loss (assistant answers "
             "and their stop token).", "",
             "| source | " + " | ".join(f"{s} conversations | {s} prompt | {s} trained" for s in splits)
             + " | trained share |",
             "|---|" + "---:|---:|---:|" * len(splits) + "---:|"]
    names = [n for n in report["sources"] if any(n in tok[s].get("per_source", {}) for s in splits)]
    totals = [[0, 0, 0] for _ in splits]
    for name in names:
        cells, all_tokens, all_trained = [], 0, 0
        for i, s in enumerate(splits):
            ps = tok[s].get("per_source", {}).get(name, {"conversations": 0, "tokens": 0, "trained_tokens": 0})
            trip = [ps["conversations"], ps["tokens"] - ps["trained_tokens"], ps["trained_tokens"]]
            totals[i] = [a + b for a, b in zip(totals[i], trip, strict=True)]
            cells += [f"{x:,}" for x in trip]
            all_tokens += ps["tokens"]
            all_trained += ps["trained_tokens"]
        share = f"{all_trained / all_tokens:.1%}" if all_tokens else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {share} |")
    flat = [x for t in totals for x in t]
    tokens = sum(t[1] + t[2] for t in totals)
    share = f"{sum(t[2] for t in totals) / tokens:.1%}" if tokens else "-"
    lines.append("| **total** | " + " | ".join(f"{x:,}" for x in flat) + f" | {share} |")
    lines += ["", "| split | rows | packing | efficiency | tokens | trained | trained share |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for s in splits:
        st = tok[s]
        real, trained = st.get("non_pad_tokens", 0), st.get("loss_valid_tokens", 0)
        lines.append(f"| {s} | {st.get('rows', 0):,} | {st.get('packing', '')} | "
                     f"{st.get('packing_efficiency', 0):.1%} | {real:,} | {trained:,} | "
                     f"{(trained / real if real else 0):.1%} |")
    return lines


def _plots_markdown(plots: Sequence[tuple[str, str]]) -> list[str]:
    if not plots:
        return []
    lines = ["", "## Plots", "", "The full report with sampled records and a packed-row viewer is report.html.", ""]
    for path, title in plots:
        lines += [f"![{title}]({path})", ""]
    return lines[:-1]


def _preview(text: str, n: int = 80) -> str:
    return " ".join(text.split())[:n].replace("|", "\\|").replace("`", "'")


def _dedup_markdown(dedup: dict[str, Any]) -> list[str]:
    """Per dedup step: clusters, what decided them, and the sampled clusters with what was kept and why."""
    if not any(d["clusters"] for d in dedup.values()):
        return []
    lines = ["", "## Duplicate clusters", "",
             "Each cluster keeps one member: lowest source priority, then best OpenAssistant ranks, then the "
             "longest assistant text, then the smallest id.", ""]
    for step, d in sorted(dedup.items()):  # stats read back from a finished stage come with sorted keys
        decided = ", ".join(f"{k.replace('_', ' ')} {d['decided_by'][k]}" for k in DECIDERS
                            if d["decided_by"].get(k)) or "-"
        lines.append(f"- **{step}**: {d['removed']} removed from {d['clusters']} clusters; decided by "
                     f"{decided}; {d['kept_later_arrival']} kept a member that arrived after another.")
        for smp in d["samples"]:
            k = smp["kept"]
            gone = "; ".join(f"{_who(m)}" for m in smp["dropped"])
            more = smp["dropped_total"] - len(smp["dropped"])
            lines.append(f"  - kept {_who(k)} over {smp['dropped_total']} ({smp['decided_by'].replace('_', ' ')}): "
                         f"{gone}{f' and {more} more' if more else ''}")
    return lines


def _decontamination_markdown(decon: dict[str, Any]) -> list[str]:
    if not decon:
        return []
    lines = ["", "## Decontamination", "",
             "| benchmark | items | prompt n-grams | solution n-grams | removed (source: by prompt + by solution) |",
             "|---|---:|---:|---:|---|"]
    for name, b in decon.items():
        removed = ", ".join(f"{src}: {r['prompt']} + {r['solution']}" for src, r in b["removed"].items()
                            if r["prompt"] or r["solution"]) or "-"
        lines.append(f"| {name} | {b['items']} | {b['prompt_ngrams']} | {b['solution_ngrams']} | {removed} |")
    return lines


def _who(member: dict[str, Any]) -> str:
    ranks = f", ranks {member['ranks']}" if member.get("ranks") is not None else ""
    return (f"`{member['id']}` ({member['source']}{ranks}, {member['assistant_chars']:,} assistant chars, "
            f"last answer \"{_preview(member['last_answer'], 60)}\")")


def _top(dropped: dict[str, int], k: int = 3) -> str:
    top = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return ", ".join(f"{key} {n}" for key, n in top) or "-"


def print_report(report: dict[str, Any], console: Any) -> None:
    """The end-of-build summary as rich tables."""
    from rich.table import Table

    table = Table(title=f"crystalmix build: {report['manifest']}", title_justify="left")
    for col in ("source", "read", "dropped", "kept", "train", "test", "chars", "turns"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for name, v in report["sources"].items():
        table.add_row(
            name,
            str(v["read"]),
            str(sum(v["dropped"].values())),
            str(v["kept"]),
            str(v["train"]),
            str(v["test"]),
            f"{v['chars']:,}",
            str(v["turns"]),
        )
    t = report["totals"]
    table.add_row(
        "[bold]total",
        str(t["read"]),
        str(t["read"] - t["kept"]),
        str(t["kept"]),
        str(t["train"]),
        str(t["test"]),
        f"{t['chars']:,}",
        str(t["turns"]),
        end_section=True,
    )
    console.print(table)
    steps = Table(title="steps", title_justify="left")
    for col, just in (("step", "left"), ("in", "right"), ("out", "right"), ("dropped", "left")):
        steps.add_column(col, justify=just)  # type: ignore[arg-type]
    for name, st in report["steps"].items():
        if st["enabled"]:
            steps.add_row(
                name,
                str(st["in"]),
                str(st["out"]),
                ", ".join(f"{r} {n}" for r, n in st["dropped"].items()) or "-",
            )
    console.print(steps)
    for split, st in report.get("tokenize", {}).items():
        shown = ", ".join(f"{k} {st[k]:,}" for k in ("rows", "files", "num_tokens", "loss_valid_tokens") if k in st)
        console.print(f"tokenized {split}: {shown}")
