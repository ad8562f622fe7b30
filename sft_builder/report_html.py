"""`report.html`: the build report as one self-contained page (inline SVG plots, inline CSS, no network), and
the PNG plots `report.md` links to.

Everything comes from ``report.json`` and what the build folder holds (the rejects files the samples link
to, the first packed rows for the sample viewer), so `crystalmix report DIR` can redraw it at any time.
Record text is untrusted: the Jinja template escapes everything (autoescape); only our own SVG is inserted
as markup.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystalmix.core.atomic import atomic_open, atomic_path
from crystalmix.core.errors import UserError
from sft_builder import report_plots as plots

TEMPLATES = "crystalmix.templates.report"
PLOTS_DIR = "plots"
VIEWER_ROWS = 4  # packed rows shown in the sample viewer


# -- the page's data ------------------------------------------------------------------------------------
def funnel_rows(report: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per source: records left after each enabled step, and what each step dropped (by reason)."""
    steps = plots.enabled_steps(report)
    rows = []
    for name, v in report["sources"].items():
        left = v["read"]
        cells = []
        for step in steps:
            reasons = {k.partition(":")[2]: n for k, n in v["dropped"].items() if k.partition(":")[0] == step}
            lost = sum(reasons.values())
            left -= lost
            cells.append({"step": step, "left": left, "lost": lost,
                          "reasons": sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))})
        rows.append({"source": name, "adapter": v.get("adapter", ""), "read": v["read"], "kept": v["kept"],
                     "kept_share": v["kept"] / v["read"] if v["read"] else 0.0, "cells": cells,
                     "train": v.get("train", 0), "test": v.get("test", 0)})
    return steps, rows


def token_table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per source and split: conversations, prompt tokens, trained tokens, trained share."""
    by: dict[str, dict[str, Any]] = {}
    for name, split, convs, prompt, trained in plots.token_rows(report):
        by.setdefault(name, {})[split] = {"conversations": convs, "prompt": prompt, "trained": trained,
                                          "tokens": prompt + trained}
    out = []
    for name in [*report["sources"], *sorted(set(by) - set(report["sources"]))]:
        if name not in by:
            continue
        splits = by[name]
        tokens = sum(s["tokens"] for s in splits.values())
        trained = sum(s["trained"] for s in splits.values())
        out.append({"source": name, "splits": splits, "tokens": tokens, "trained": trained,
                    "trained_share": trained / tokens if tokens else 0.0})
    return out


def language_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per source: the languages the language step saw (records entering it), most frequent first."""
    out = []
    for name, v in report["sources"].items():
        langs = v.get("languages") or {}
        total = sum(langs.values())
        shown = [{"lang": k, "n": n, "share": n / total if total else 0.0}
                 for k, n in sorted(langs.items(), key=lambda kv: (-kv[1], kv[0]))]
        out.append({"source": name, "total": total, "languages": shown})
    return out


def reject_groups(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Drop reasons in step order, each with its count and sampled records."""
    samples = report.get("reject_samples", {})
    counts: Counter[tuple[str, str]] = Counter()
    for v in report["sources"].values():
        counts.update({tuple(k.split(":", 1)): n for k, n in v["dropped"].items()})  # type: ignore[misc]
    for st in report.get("tokenize", {}).values():
        counts.update({("tokenize", r): n for r, n in st.get("dropped", {}).items()})
    order = {s: i for i, s in enumerate([*plots.step_names(report), "tokenize"])}
    out = []
    for (step, reason), n in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 99), -kv[1], kv[0][1])):
        out.append({"step": step, "reason": reason, "count": n, "samples": samples.get(step, {}).get(reason, [])})
    return out


def change_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rewrites that kept the record: per change reason, its count per source."""
    per: dict[str, Counter[str]] = {}
    for name, v in report["sources"].items():
        for k, n in v.get("changes", {}).items():
            per.setdefault(k, Counter())[name] += n
        for k, n in v.get("adapter_fixes", {}).items():
            per.setdefault(f"adapter:{k}", Counter())[name] += n
    for k, n in report.get("changes", {}).items():
        per.setdefault(k, Counter())["(all)"] += n
    return [{"change": k, "total": sum(c.values()), "sources": sorted(c.items(), key=lambda kv: -kv[1])}
            for k, c in sorted(per.items())]


def rewrite_samples(report: Mapping[str, Any], k: int = 3) -> list[dict[str, Any]]:
    """The large rewrites the steps kept per source (``sources.<name>.rewrite_samples``), `k` of each."""
    return [{"source": name, "step": step, **smp} for name, v in report["sources"].items()
            for step, samples in v.get("rewrite_samples", {}).items() for smp in samples[:k]]


def dedup_sections(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Near/exact duplicate clusters sampled by the dedup steps, when the build recorded them."""
    out = []
    for step, d in (report.get("dedup") or {}).items():
        if isinstance(d, Mapping) and (d.get("samples") or d.get("clusters")):
            out.append({"step": step, **d})
    return out


def decontamination_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per benchmark: its size and what it removed (prompt or solution matches), when the build recorded it."""
    out = []
    for name, d in sorted((report.get("decontamination") or {}).items()):
        if not isinstance(d, Mapping):
            continue
        removed = d.get("removed") or {}
        by = {src: int(v.get("prompt", 0)) + int(v.get("solution", 0)) for src, v in removed.items()
              if isinstance(v, Mapping)}
        out.append({"benchmark": name, "size": d.get("items", 0),
                    "prompt": sum(int(v.get("prompt", 0)) for v in removed.values() if isinstance(v, Mapping)),
                    "solution": sum(int(v.get("solution", 0)) for v in removed.values() if isinstance(v, Mapping)),
                    "sources": sorted(((k, n) for k, n in by.items() if n), key=lambda kv: -kv[1])})
    return out


def summary(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """The numbers at the top of the page."""
    t = report["totals"]
    cards = [
        {"label": "records read", "value": f"{t['read']:,}", "note": f"{len(report['sources'])} sources"},
        {"label": "kept", "value": f"{t['kept']:,}",
         "note": f"{t['kept'] / t['read']:.1%} of read" if t["read"] else ""},
        {"label": "train / test", "value": f"{t['train']:,} / {t['test']:,}", "note": "conversations"},
    ]
    packing = {r["split"]: r for r in plots.packing_rows(report)}
    if "train" in packing:
        p = packing["train"]
        cards += [
            {"label": "trained tokens (train)", "value": plots.human(p["trained"]),
             "note": f"{p['trained_share']:.0%} of {plots.human(p['tokens'])} tokens"},
            {"label": "packing efficiency (train)", "value": f"{p['efficiency']:.1%}",
             "note": f"{p['rows']:,} rows of {p['seq_len'] or '?'} ({p['packing']})"},
        ]
    return cards


# -- the sample viewer ----------------------------------------------------------------------------------
@dataclass
class Run:
    """Consecutive tokens shown alike: text (trained or not), one control token, a document mark, padding."""

    kind: str  # "text" | "special" | "doc" | "pad"
    text: str
    trained: bool = False
    count: int = 1


@dataclass
class ViewerRow:
    title: str
    tokens: int
    trained: int
    documents: int
    padding: int
    runs: list[Run] = field(default_factory=list)


def token_runs(pieces: Sequence[str], ids: Sequence[int], mask: Sequence[int], special: set[int],
               segments: Sequence[int] | None = None, pad_id: int | None = None) -> list[Run]:
    """Group a row's tokens for display: runs of text with one mask value, each control token alone, a mark
    where a packed document starts, padding collapsed into one run."""
    runs: list[Run] = []
    prev_seg: int | None = None
    for k, (piece, tid, m) in enumerate(zip(pieces, ids, mask, strict=True)):
        seg = None if segments is None else int(segments[k])
        is_pad = seg == 0 if segments is not None else (pad_id is not None and tid == pad_id and not m)
        if is_pad:
            if runs and runs[-1].kind == "pad":
                runs[-1].count += 1
            else:
                runs.append(Run("pad", "", count=1))
            prev_seg = seg
            continue
        if seg is not None and seg != prev_seg:
            runs.append(Run("doc", f"conversation {seg}"))
        prev_seg = seg
        if int(tid) in special:
            runs.append(Run("special", piece, bool(m)))
        elif runs and runs[-1].kind == "text" and runs[-1].trained == bool(m):
            runs[-1].text += piece
            runs[-1].count += 1
        else:
            runs.append(Run("text", piece, bool(m)))
    return runs


def _first_rows(folder: Path, n: int, pad_id: int | None) -> tuple[str, list[tuple[list[int], list[int],
                                                                                    list[int] | None]]]:
    """The first `n` packed rows of a tokenized split as (ids, mask on each token, segments), with the mask
    moved onto the token it trains (label k is input k+1), as `crystalmix inspect` shows it. The row's last
    label is shown after its inputs; when it is the pad id and untrained, it is padding."""
    from crystalmix.core import hdf5

    h5 = sorted(folder.glob("data-*.h5"))
    out: list[tuple[list[int], list[int], list[int] | None]] = []
    if h5:
        import h5py

        with h5py.File(h5[0], "r") as fh:
            data = fh[hdf5.DATASET][:n]
            segs = fh[hdf5.SEGMENTS][:n] if hdf5.SEGMENTS in fh else None
        for i, row in enumerate(data):
            ids = [*(int(x) for x in row[0]), int(row[2, -1])]
            mask = [0, *(int(x) for x in row[1])]
            last_is_pad = ids[-1] == pad_id and not mask[-1]
            seg = None if segs is None else [*(int(x) for x in segs[i]), 0 if last_is_pad else int(segs[i][-1])]
            out.append((ids, mask, seg))
        return h5[0].name, out
    jsonl = sorted(folder.glob("data-*.jsonl"))
    if jsonl:
        with open(jsonl[0], encoding="utf-8") as fh:
            for line in fh:
                if len(out) == n:
                    break
                row = json.loads(line)
                out.append(([*row["token_ids"], row["label_ids"][-1]], [0, *row["loss_mask"]], None))
        return jsonl[0].name, out
    return "", out


def viewer_rows(build_dir: Path, report: Mapping[str, Any], n: int = VIEWER_ROWS) -> tuple[list[ViewerRow], str]:
    """The first packed rows of the train split (else test), decoded, and a note for the reader (why there
    are no rows, or why their text may be wrong)."""
    from crystalmix.core import hdf5

    splits = plots.split_order(report)
    if not splits:
        return [], "This build did not tokenize (no tokenize section in the manifest)."
    for split in splits:
        folder = build_dir / "tokenized" / split
        try:
            meta = hdf5.read_metadata(folder)
        except (OSError, ValueError):
            continue
        name, rows = _first_rows(folder, n, meta.get("pad_id"))
        if not rows:
            continue
        from crystalmix.core.tokenizer import DEMO, demo_tokenizer_id, load_tokenizer, token_pieces

        try:
            tok = load_tokenizer(meta["tokenizer"])
        except (UserError, KeyError) as exc:
            return [], f"The tokenizer of tokenized/{split}/metadata.json could not be loaded: {exc}"
        note = ""
        if meta["tokenizer"] == DEMO and meta.get("demo_tokenizer") not in (None, demo_tokenizer_id()):
            note = "These rows were written by another release's demo tokenizer: the decoded text may be wrong."
        special = {i for i, t in tok.backend_tokenizer.get_added_tokens_decoder().items() if t.special}
        out = []
        for i, (ids, mask, seg) in enumerate(rows):
            runs = token_runs(token_pieces(tok, ids), ids, mask, special, seg, meta.get("pad_id"))
            out.append(ViewerRow(
                title=f"tokenized/{split}/{name} row {i}", tokens=len(ids) - 1, trained=sum(mask),
                documents=sum(1 for r in runs if r.kind == "doc"),
                padding=sum(r.count for r in runs if r.kind == "pad"), runs=runs))
        return out, note
    return [], "No packed rows were found under tokenized/."


# -- writing --------------------------------------------------------------------------------------------
def load_report(build_dir: Path) -> dict[str, Any]:
    path = build_dir / "report.json"
    if not path.is_file():
        raise UserError("no report.json here: not a crystalmix build folder (run crystalmix build first)",
                        path=build_dir)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read report.json: {exc}", path=path) from None
    if not isinstance(report, dict) or not isinstance(report.get("sources"), dict):
        raise UserError("not a crystalmix build report (no 'sources')", path=path)
    return report


def page(report: Mapping[str, Any], figures: Mapping[str, Mapping[str, Any]], rows: Sequence[ViewerRow],
         viewer_note: str = "") -> str:
    """report.html's text."""
    from importlib.resources import files

    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["num"] = lambda n: f"{int(n):,}"
    env.filters["pct"] = lambda x, d=0: f"{float(x):.{d}%}"
    env.filters["human"] = plots.human
    base = files(TEMPLATES)
    template = env.from_string(base.joinpath("report.html.jinja").read_text(encoding="utf-8"))
    steps, funnel = funnel_rows(report)
    return template.render(
        report=report,
        css=base.joinpath("report.css").read_text(encoding="utf-8"),
        figures={k: v for k, v in figures.items() if "svg" in v},
        cards=summary(report),
        steps=steps,
        step_colors={s: plots.step_color(s) for s in [*steps, "tokenize"]},
        funnel=funnel,
        tokens=token_table(report),
        splits=plots.split_order(report),
        packing=plots.packing_rows(report),
        languages=language_rows(report),
        rejects=reject_groups(report),
        changes=change_rows(report),
        rewrites=rewrite_samples(report),
        dedup=dedup_sections(report),
        decontamination=decontamination_rows(report),
        rows=rows,
        viewer_note=viewer_note,
    )


def write_html_report(build_dir: str | Path, *, viewer: int = VIEWER_ROWS) -> dict[str, Any]:
    """Redraw a build folder's report from its report.json: ``plots/*.png``, report.md (with the token
    table and the plots), and report.html. Returns what was written."""
    from sft_builder.report import markdown

    build_dir = Path(build_dir)
    report = load_report(build_dir)
    figures = plots.render(report)
    pdir = build_dir / PLOTS_DIR
    pdir.mkdir(exist_ok=True)
    for name, fig in figures.items():
        with atomic_path(pdir / f"{name}.png") as tmp:
            tmp.write_bytes(fig["png"])
    for old in pdir.glob("*.png"):
        if old.stem not in figures:
            old.unlink()
    with atomic_open(build_dir / "report.md") as fh:
        fh.write(markdown(report, plots=[(f"{PLOTS_DIR}/{n}.png", f["title"]) for n, f in figures.items()]))
    rows, note = viewer_rows(build_dir, report, viewer)
    with atomic_open(build_dir / "report.html") as fh:
        fh.write(page(report, figures, rows, note))
    return {"html": build_dir / "report.html", "plots": [pdir / f"{n}.png" for n in figures], "viewer_rows": len(rows)}
