"""The build report's plots, drawn with matplotlib from report.json alone: SVG for report.html, PNG for
report.md and the Hub card.

Figures are `matplotlib.figure.Figure` objects on an explicit Agg canvas (never pyplot, so no global figure
manager or backend is touched); style and the SVG id salt are set in an `rc_context` around each drawing,
restored on exit. Output bytes depend only on the report (fixed id salt, no dates).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sft_builder.report_data import LENGTH_EDGES, bin_upper, merge

KEPT = "#2e7d32"
PROMPT = "#90a4ae"
TRAINED = "#1e88e5"
PADDING = "#e0e0e0"
# one colour per step, shared by the plots and the page's legend chips
STEP_COLORS = {
    "adapter": "#8d6e63", "clean": "#ab47bc", "language": "#ffa726", "quality": "#ef5350",
    "exact_dedup": "#26a69a", "near_dedup": "#5c6bc0", "decontaminate": "#d81b60", "mix": "#bdbdbd",
    "tokenize": "#6d4c41",
}
OTHER_STEP = "#78909c"
WIDTH = 10.5  # inches: about the page's width at 96 dpi, so 9-point text reads as 9-point text
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#9e9e9e",
    "xtick.color": "#424242", "ytick.color": "#424242", "axes.labelcolor": "#424242",
    "legend.frameon": False, "legend.fontsize": 8, "svg.fonttype": "none", "text.parse_math": False,
    "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
}


def step_color(step: str) -> str:
    return STEP_COLORS.get(step, OTHER_STEP)


def human(n: float) -> str:
    """A count in 3 significant figures with a k/M/B suffix: 45056 -> 45.1k."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


@contextmanager
def _style(salt: str) -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"crystalmix-{salt}"}):
        yield


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# -- the figures ----------------------------------------------------------------------------------------
def step_names(report: Mapping[str, Any]) -> list[str]:
    """The report's steps in the order records pass them (report.json keeps its keys sorted)."""
    from sft_builder.steps.table import stage_order

    known = [s for s in stage_order() if s in report["steps"]]
    return known + sorted(set(report["steps"]) - set(known), key=lambda s: -report["steps"][s]["in"])


def enabled_steps(report: Mapping[str, Any]) -> list[str]:
    return [s for s in step_names(report) if report["steps"][s].get("enabled", True)]


def fig_records(report: Mapping[str, Any]) -> Any:
    """Per source, one bar of everything read: kept, then what each step dropped."""
    sources = list(report["sources"])
    steps = enabled_steps(report)
    fig = _figure(WIDTH, 0.9 + 0.26 * max(len(sources), 2))
    ax = fig.add_subplot()
    y = list(range(len(sources)))[::-1]
    left = [0.0] * len(sources)
    kept = [report["sources"][s]["kept"] for s in sources]
    ax.barh(y, kept, color=KEPT, label="kept", height=0.7)
    left = [float(k) for k in kept]
    for step in steps:
        vals = [sum(n for k, n in report["sources"][s]["dropped"].items() if k.partition(":")[0] == step)
                for s in sources]
        if any(vals):
            ax.barh(y, vals, left=left, color=step_color(step), label=f"dropped by {step}", height=0.7)
            left = [a + b for a, b in zip(left, vals, strict=True)]
    for yi, s, total in zip(y, sources, left, strict=True):
        read = report["sources"][s]["read"]
        share = report["sources"][s]["kept"] / read if read else 0.0
        ax.text(total, yi, f"  {share:.0%} kept of {human(read)}", va="center", fontsize=8, color="#424242")
    ax.set_yticks(y, [_label(s) for s in sources])
    ax.set_xlabel("records read (conversations, before mixing)")
    ax.set_xlim(0, max(left + [1.0]) * 1.3)
    fig.legend(loc="outside upper center", ncols=5)
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)
    return fig


def fig_funnel(report: Mapping[str, Any]) -> Any:
    """All sources together: records left after each step."""
    steps = enabled_steps(report)
    labels = ["read", *steps]
    vals = [report["totals"]["read"], *(report["steps"][s]["out"] for s in steps)]
    fig = _figure(WIDTH, 0.6 + 0.22 * len(labels))
    ax = fig.add_subplot()
    y = list(range(len(labels)))[::-1]
    colors = ["#546e7a", *(step_color(s) for s in steps)]
    ax.barh(y, vals, color=colors, height=0.65)
    top = max(vals + [1])
    for yi, v, prev in zip(y, vals, [vals[0], *vals[:-1]], strict=True):
        lost = prev - v
        ax.text(v, yi, f"  {v:,}" + (f"  (−{lost:,})" if lost else ""), va="center", fontsize=8, color="#424242")
    ax.set_yticks(y, ["read" if s == "read" else f"after {s}" for s in labels])
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("records (all sources)")
    ax.grid(axis="x", color="#eeeeee")
    ax.set_axisbelow(True)
    return fig


def token_rows(report: Mapping[str, Any]) -> list[tuple[str, str, int, int, int]]:
    """(source, split, conversations, prompt tokens, trained tokens) for every source and split tokenized."""
    rows = []
    for split in split_order(report):
        st = report["tokenize"][split]
        for name, ps in st.get("per_source", {}).items():
            rows.append((name, split, ps["conversations"], ps["tokens"] - ps["trained_tokens"],
                         ps["trained_tokens"]))
    return rows


def fig_tokens(report: Mapping[str, Any]) -> Any | None:
    """Tokens per source, split by split: what is trained (assistant answers) and what is only context."""
    rows = token_rows(report)
    if not rows:
        return None
    splits = [s for s in split_order(report) if any(r[1] == s for r in rows)]
    sources = [s for s in report["sources"] if any(r[0] == s for r in rows)]
    fig = _figure(WIDTH, 1.0 + 0.26 * max(len(sources), 2))
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    y = list(range(len(sources)))[::-1]
    for ax, split in zip(axes, splits, strict=True):
        by = {r[0]: r for r in rows if r[1] == split}
        trained = [by[s][4] if s in by else 0 for s in sources]
        prompt = [by[s][3] if s in by else 0 for s in sources]
        ax.barh(y, trained, color=TRAINED, label="trained", height=0.7)
        ax.barh(y, prompt, left=trained, color=PROMPT, label="prompt (not trained)", height=0.7)
        total = [a + b for a, b in zip(trained, prompt, strict=True)]
        for yi, t, tr in zip(y, total, trained, strict=True):
            if t:
                ax.text(t, yi, f" {human(t)}, {tr / t:.0%} trained", va="center", fontsize=7.5, color="#424242")
        ax.set_title(f"{split}: {human(sum(total))} tokens", loc="left")
        ax.set_xlim(0, max(total + [1]) * 1.55)
        ax.xaxis.set_major_formatter(_human_formatter())
        ax.grid(axis="x", color="#eeeeee")
        ax.set_axisbelow(True)
    axes[0].set_yticks(y, [_label(s) for s in sources])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
    return fig


def split_order(report: Mapping[str, Any]) -> list[str]:
    """Tokenized splits, train first."""
    return sorted(report.get("tokenize", {}), key=lambda s: (s != "train", s))


def _grid(n: int, cols: int = 5) -> tuple[int, int]:
    cols = min(cols, max(n, 1))
    return (n + cols - 1) // cols, cols


def _small_multiples(names: list[str], height: float = 1.7) -> tuple[Any, list[Any]]:
    rows, cols = _grid(len(names))
    fig = _figure(WIDTH, 0.45 + height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig, axes[:len(names)]


def length_hists(report: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Tokens per conversation per source, train and test together."""
    out: dict[str, list[Mapping[str, int]]] = {}
    for st in report.get("tokenize", {}).values():
        for name, ps in st.get("per_source", {}).items():
            if ps.get("length_hist"):
                out.setdefault(name, []).append(ps["length_hist"])
    return {name: merge(*out[name]) for name in report["sources"] if name in out}


def hist_quantile(hist: Mapping[str, int], q: float) -> int:
    """The lower edge of the bin holding the q-quantile (the histograms keep bins, not lengths)."""
    total = sum(hist.values())
    seen = 0
    for k, n in sorted(hist.items(), key=lambda kv: int(kv[0])):
        seen += n
        if seen >= q * total:
            return int(k)
    return 0


def max_tokens(report: Mapping[str, Any], name: str) -> int:
    return max((st["per_source"][name].get("max_tokens", 0) for st in report.get("tokenize", {}).values()
                if name in st.get("per_source", {})), default=0)


def seq_len(report: Mapping[str, Any]) -> int | None:
    return next((st["seq_len"] for st in report.get("tokenize", {}).values() if st.get("seq_len")), None)


def fig_lengths(report: Mapping[str, Any]) -> Any | None:
    """One histogram per source of conversation length in tokens (log scale, 8 bins per doubling)."""
    from matplotlib.ticker import MaxNLocator

    hists = length_hists(report)
    if not hists:
        return None
    names = list(hists)
    lo = min(int(k) for h in hists.values() for k in h)
    hi = max(bin_upper(int(k)) for h in hists.values() for k in h)
    limit = seq_len(report)
    fig, axes = _small_multiples(names)
    for ax, name in zip(axes, names, strict=True):
        h = hists[name]
        edges = [e for e in LENGTH_EDGES if lo <= e <= hi] or [lo, hi]
        counts = [h.get(str(e), 0) for e in edges[:-1]]
        ax.stairs(counts, edges, fill=True, color=TRAINED, alpha=0.85)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        _log_axis(ax.xaxis)
        ax.set_xlim(max(lo, 1), hi)
        if limit and lo <= limit <= hi:
            ax.axvline(limit, color="#c62828", lw=0.9, ls="--")
        ax.set_title(_label(name), loc="left", fontsize=8.5)
        ax.text(0.98, 0.95, f"median ≈{human(hist_quantile(h, 0.5))}\nmax {human(max_tokens(report, name))}",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="#424242")
        ax.tick_params(labelsize=7)
    fig.supxlabel("tokens per conversation" + (f" (dashed: row length {limit:,})" if limit else ""), fontsize=8.5)
    fig.supylabel("conversations", fontsize=8.5)
    return fig


TURNS_CAP = 20  # conversations with more turns share the last bar


def turn_bars(hists: Sequence[Mapping[str, int]]) -> tuple[list[int], list[str], list[list[int]]]:
    """Bars shared by several turns histograms: at each turn count any of them has up to `TURNS_CAP`, then
    one bar (drawn two steps further) for everything longer; returns positions, labels and the values of each
    histogram on those bars."""
    counts = [{int(k): int(v) for k, v in h.items()} for h in hists]
    seen = sorted({t for c in counts for t in c})
    xs = [t for t in seen if t <= TURNS_CAP]
    longer = any(t > TURNS_CAP for t in seen)
    values = [[c.get(t, 0) for t in xs] + ([sum(v for t, v in c.items() if t > TURNS_CAP)] if longer else [])
              for c in counts]
    labels = [str(t) for t in xs] + ([f">{TURNS_CAP}"] if longer else [])
    return xs + ([TURNS_CAP + 2] if longer else []), labels, values


def fig_turns(report: Mapping[str, Any]) -> Any | None:
    """One bar chart per source: turns (user and assistant messages) per kept conversation."""
    from matplotlib.ticker import MaxNLocator

    names = [n for n, v in report["sources"].items() if v.get("turns_hist")]
    if not names:
        return None
    fig, axes = _small_multiples(names, height=1.4)
    xs, labels, all_values = turn_bars([report["sources"][n]["turns_hist"] for n in names])
    every = max(1, len(xs) // 8)
    for ax, name, values in zip(axes, names, all_values, strict=True):
        ax.bar(xs, values, color="#7e57c2", width=1.2)
        ax.set_xlim(min(xs) - 1.5, max(max(xs), 8) + 1.5)
        ax.set_xticks(xs[::every], labels[::every])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        ax.set_title(_label(name), loc="left", fontsize=8.5)
        ax.tick_params(labelsize=7)
    fig.supxlabel("turns per conversation (system prompt not counted)", fontsize=8.5)
    fig.supylabel("conversations", fontsize=8.5)
    return fig


def packing_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per split: rows, positions, and how they are used (trained, context, padding)."""
    out = []
    for split in split_order(report):
        st = report["tokenize"][split]
        positions = st.get("num_tokens", 0)
        real = st.get("non_pad_tokens", 0)
        trained = st.get("loss_valid_tokens", 0)
        out.append({
            "split": split, "rows": st.get("rows", 0), "files": st.get("files", 0), "positions": positions,
            "tokens": real, "trained": trained, "context": real - trained, "padding": positions - real,
            "efficiency": st.get("packing_efficiency", real / positions if positions else 0.0),
            "trained_share": trained / real if real else 0.0, "packing": st.get("packing", ""),
            "seq_len": st.get("seq_len"), "conversations": st.get("conversations", 0),
            "counts": {k: v for k, v in st.get("packing_stats", {}).items() if k not in ("rows", "efficiency")},
        })
    return out


def fig_packing(report: Mapping[str, Any]) -> Any | None:
    """Per split, what the training positions hold: trained tokens, context, padding."""
    rows = packing_rows(report)
    if not rows:
        return None
    fig = _figure(WIDTH, 0.75 + 0.42 * len(rows))
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for key, color, label in (("trained", TRAINED, "trained"), ("context", PROMPT, "context (not trained)"),
                              ("padding", PADDING, "padding")):
        shares = [r[key] / r["positions"] if r["positions"] else 0.0 for r in rows]
        ax.barh(y, shares, left=left, color=color, label=label, height=0.6)
        for yi, lft, s in zip(y, left, shares, strict=True):
            if s >= 0.06:
                ax.text(lft + s / 2, yi, f"{s:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if key != "padding" else "#424242")
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_yticks(y, [f"{r['split']} ({r['rows']:,} rows)" for r in rows])
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(_percent_formatter())
    ax.set_xlabel("share of training positions")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3)
    return fig


FIGURES: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "funnel": ("Records left after each step", fig_funnel),
    "records": ("Where each source's records went", fig_records),
    "tokens": ("Tokens per source and split", fig_tokens),
    "lengths": ("Conversation length in tokens, per source", fig_lengths),
    "turns": ("Turns per conversation, per source", fig_turns),
    "packing": ("Packing: what the training positions hold", fig_packing),
}


# -- output ---------------------------------------------------------------------------------------------
_ID_RE = re.compile(r'(\bid=")([^"]+)(")')
_REF_RE = re.compile(r'(url\(#|href="#)([^")]+)')


def svg_text(fig: Any, prefix: str) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, and ids prefixed so several figures can
    share one page."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = _ID_RE.sub(lambda m: f"{m[1]}{prefix}-{m[2]}{m[3]}", text)
    return _REF_RE.sub(lambda m: f"{m[1]}{prefix}-{m[2]}", text)


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def render(report: Mapping[str, Any], *, svg: bool = True, png: bool = True) -> dict[str, dict[str, Any]]:
    """Every figure the report has data for: ``{name: {"title", "svg"?, "png"?}}``, in page order."""
    out: dict[str, dict[str, Any]] = {}
    for name, (title, make) in FIGURES.items():
        with _style(name):
            fig = make(report)
            if fig is None:
                continue
            item: dict[str, Any] = {"title": title}
            if svg:
                item["svg"] = svg_text(fig, f"fig-{name}")
            if png:
                item["png"] = png_bytes(fig)
        out[name] = item
    return out


def _label(text: str) -> str:
    return str(text)  # text.parse_math is off: a "$" in a name is shown as written


def _log_axis(axis: Any) -> None:
    """A log axis with plain labels at 1, 2, 5 x 10^k (matplotlib's defaults are math text)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: human(v)))
    axis.set_minor_formatter(NullFormatter())


def _human_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: human(v))


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)
