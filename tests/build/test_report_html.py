"""The build report's data (histograms, sampled rejects) and report.html: its content, `crystalmix report`,
and a real browser opening it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sft_builder.report_data import LENGTH_EDGES, RejectSampler, bin_upper, compact_record, length_bin, merge

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo.yaml"
ARTIFACTS = ROOT / "build" / "test-artifacts"


def console_script() -> list[str]:
    """The installed `crystalmix` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "crystalmix"
    if not exe.exists():
        found = shutil.which("crystalmix")
        if found is None:
            pytest.fail("the crystalmix console script is not installed")
        exe = Path(found)
    return [str(exe)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo built by the installed command, as a user runs it (so report.html is drawn too)."""
    out = tmp_path_factory.mktemp("demo-report") / "build"
    proc = subprocess.run([*console_script(), "build", str(DEMO), "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").is_file()
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


# -- the data -------------------------------------------------------------------------------------------
def test_length_bins_cover_every_length_once() -> None:
    assert LENGTH_EDGES[:10] == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert len(LENGTH_EDGES) < 330  # bounded whatever the corpus: ~8 bins per doubling up to 2^40
    for n in [*range(0, 3000), 2047, 2048, 2049, 10**6, 2**39]:
        lo = int(length_bin(n))
        assert lo <= n < bin_upper(lo), n
    assert merge({"4": 1, "10": 2}, {"10": 3}) == {"4": 1, "10": 5}
    assert list(merge({"10": 1, "4": 1, "100": 1})) == ["4", "10", "100"]  # numeric order


def _reject(step: str, reason: str, i: int) -> dict:
    return {"step": step, "reason": reason, "source": "s", "file": "f.jsonl", "line": i, "detail": "",
            "record": {"id": f"s/{i}", "messages": [{"role": "user", "content": f"q{i}"}]}}


def test_reject_sampler_is_bounded_uniform_and_deterministic() -> None:
    def run(seed: int, extra: bool = False) -> dict:
        s = RejectSampler(seed)
        for i in range(1, 1001):
            s.offer("rejects/quality.jsonl", i, _reject("quality", "refusal", i))
            if extra:  # another reason interleaved must not change this reason's pick
                s.offer("rejects/quality.jsonl", i, _reject("quality", "too_short", i))
        return s.result()

    a = run(1)
    picked = [x["rejects_line"] for x in a["quality"]["refusal"]]
    assert len(picked) == 3 and picked == sorted(picked)
    assert picked != [1, 2, 3]  # sampled from the whole stream, not the first three
    assert run(1) == a and run(1, extra=True)["quality"]["refusal"] == a["quality"]["refusal"]
    assert run(2) != a
    # over many seeds each position is picked about equally often (a reservoir, not a prefix)
    hits = Counter()
    for seed in range(300):
        s = RejectSampler(seed)
        for i in range(10):
            s.offer("r", i, _reject("a", "b", i))
        hits.update(x["rejects_line"] // 5 for x in s.result()["a"]["b"])
    assert abs(hits[0] - hits[1]) < 0.2 * 450, hits


def test_compact_record_cuts_long_text_and_keeps_raw_records() -> None:
    rec = compact_record({"messages": [{"role": "user", "content": "x" * 5000}]})
    assert rec["messages"][0]["chars"] == 5000 and len(rec["messages"][0]["text"]) < 5000
    assert compact_record('{"id": "broken",') == {"raw": {"text": '{"id": "broken",'}}
    assert "raw" in compact_record({"text": "no markers"})
    lone = compact_record({"messages": [{"role": "user", "content": "a\ud800b"}]})  # as rejects may hold
    assert json.dumps(lone, ensure_ascii=False).encode("utf-8") and "\\ud800" in lone["messages"][0]["text"]


def test_report_json_has_the_histograms_and_samples(demo: tuple[Path, dict]) -> None:
    out, report = demo
    for name, v in report["sources"].items():
        assert sum(v["turns_hist"].values()) == v["kept"] - v.get("documents", 0), name  # documents have no turns
        assert sum(int(k) * n for k, n in v["turns_hist"].items()) == v["turns"], name
    for split, st in report["tokenize"].items():
        for name, ps in st["per_source"].items():
            hist = ps["length_hist"]
            assert sum(hist.values()) == ps["conversations"], (split, name)
            assert int(max(hist, key=int)) <= ps["max_tokens"] < bin_upper(int(max(hist, key=int)))
    samples = report["reject_samples"]
    by_reason = Counter()
    for v in report["sources"].values():
        by_reason.update({tuple(k.split(":", 1)): n for k, n in v["dropped"].items()})
    assert {(st, r) for st, rs in samples.items() for r in rs if st != "tokenize"} == set(by_reason)
    for (step, reason), n in by_reason.items():
        got = samples[step][reason]
        assert len(got) == min(n, 3)
        for smp in got:  # each sample points at its own line of the published rejects file
            lines = (out / smp["rejects_file"]).read_text(encoding="utf-8").splitlines()
            line = json.loads(lines[smp["rejects_line"] - 1])
            assert (line["step"], line["reason"], line["line"]) == (step, reason, smp["line"])
            assert smp["rejects_file"] == f"rejects/{step}.jsonl"


# -- report.html and report.md ----------------------------------------------------------------------------
def _html(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def test_the_page_is_self_contained_and_shows_every_part(demo: tuple[Path, dict]) -> None:
    out, report = demo
    html = _html(out)
    # nothing fetched: no external script, stylesheet, image or font; plots are inline SVG
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "<link" not in html and "<img" not in html and "url(http" not in html
    for name in ("funnel", "records", "tokens", "lengths", "turns", "packing"):
        assert re.search(rf'<figure id="fig-{name}" class="plot"><figcaption>[^<]+</figcaption><svg', html), name
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids repeat across the inline SVGs"
    # the funnel: every source's read, every step's count after it, the kept total
    for name, v in report["sources"].items():
        assert re.search(rf"<b>{name}</b></td><td class=\"n\">{v['read']:,}</td>", html), name
    for step, st in report["steps"].items():
        if st["enabled"]:
            assert f"{st['out']:,}" in html, step
    # tokens per source and split, and packing per split, as the tokenize stage counted them
    for st in report["tokenize"].values():
        assert f"{st['loss_valid_tokens']:,}" in html and f"{st['packing_efficiency']:.1%}" in html
        for ps in st["per_source"].values():
            assert f"{ps['trained_tokens']:,}" in html and f"{ps['tokens'] - ps['trained_tokens']:,}" in html
    # languages seen
    assert "zh 4" in html and "not checked" in html
    # each drop reason with its samples, linking to their line in rejects/
    for step, reasons in report["reject_samples"].items():
        for reason, samples in reasons.items():
            assert f"{reason}<span class=\"count\">" in html, (step, reason)
            for smp in samples:
                assert f'<a href="{smp["rejects_file"]}">{smp["rejects_file"]}</a> line {smp["rejects_line"]:,}' in html
                assert (out / smp["rejects_file"]).is_file()
    # large rewrites and duplicate clusters with what was kept
    assert "large_rewrite, 100% removed" in html and "Copy code" in html
    for d in report["dedup"].values():
        for c in d["samples"]:
            assert f"kept <b>{c['kept']['id']}</b>" in html
    # the sample viewer: packed rows with trained tokens, control tokens and conversation starts marked
    assert html.count('<div class="viewer-row">') == 4
    assert '<span class="sp">&lt;|im_start|&gt;</span>' in html and '<span class="doc">conversation 1</span>' in html
    assert '<span class="t">' in html and "padding ×" in html


def test_the_viewer_shows_what_the_rows_train(demo: tuple[Path, dict]) -> None:
    import h5py

    from crystalmix.core.tokenizer import load_tokenizer, token_pieces
    from sft_builder.report_html import viewer_rows

    out, report = demo
    rows, note = viewer_rows(out, report, 2)
    assert note == "" and len(rows) == 2
    with h5py.File(out / "tokenized" / "train" / "data-00000.h5", "r") as fh:
        data = fh["data"][:2]
        segs = fh["segment_ids"][:2]
    tok = load_tokenizer("demo")
    for row, d, seg in zip(rows, data, segs, strict=True):
        ids = [*d[0].tolist(), int(d[2, -1])]
        mask = [0, *d[1].tolist()]
        assert row.trained == sum(mask) and row.tokens == len(d[0])
        # the row's last label is shown after its inputs (as padding when it is the untrained pad id)
        pad = json.loads((out / "tokenized" / "train" / "metadata.json").read_text())["pad_id"]
        shown_seg = [*seg.tolist(), 0 if ids[-1] == pad and not mask[-1] else int(seg[-1])]
        assert row.documents == len(set(shown_seg) - {0}) and row.padding == shown_seg.count(0)
        pieces = token_pieces(tok, ids)
        trained = "".join(p for p, m in zip(pieces, mask, strict=True) if m)
        assert "".join(r.text for r in row.runs if r.trained and r.kind in ("text", "special")) == trained
        shown = "".join(r.text for r in row.runs if r.kind in ("text", "special"))
        assert shown == "".join(p for p, s in zip(pieces, shown_seg, strict=True) if s)


def test_token_runs_group_tokens_for_display() -> None:
    from sft_builder.report_html import token_runs

    pieces = ["<s>", " a", " b", "</s>", "<s>", " c", "<pad>", "<pad>"]
    ids = [1, 10, 11, 2, 1, 12, 9, 9]
    mask = [0, 0, 1, 1, 0, 1, 0, 0]
    runs = token_runs(pieces, ids, mask, {1, 2, 9}, [1, 1, 1, 1, 2, 2, 0, 0])
    assert [(r.kind, r.text, r.trained, r.count) for r in runs] == [
        ("doc", "conversation 1", False, 1), ("special", "<s>", False, 1), ("text", " a", False, 1),
        ("text", " b", True, 1), ("special", "</s>", True, 1), ("doc", "conversation 2", False, 1),
        ("special", "<s>", False, 1), ("text", " c", True, 1), ("pad", "", False, 2)]
    # without segment ids (Megatron JSONL rows): trailing pad ids with no mask are padding
    runs = token_runs(pieces[4:], ids[4:], mask[4:], {1, 9}, None, pad_id=9)
    assert [r.kind for r in runs] == ["special", "text", "pad"]


def test_record_text_is_escaped(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """Records and names are untrusted: a hostile one shows as text, in the tables, the samples and the plots."""
    from sft_builder.report_html import write_html_report

    out, report = demo
    evil = "<script>alert(1)</script>"
    report = json.loads(json.dumps(report))
    report["sources"][evil] = report["sources"].pop("sharegpt")
    for st in report["tokenize"].values():
        if "sharegpt" in st["per_source"]:
            st["per_source"][evil] = st["per_source"].pop("sharegpt")
    smp = report["reject_samples"]["quality"]["refusal"][0]
    smp["record"]["messages"][0]["text"] = evil + " & <b>bold</b>"
    smp["detail"] = evil
    report["sources"][evil]["rewrite_samples"]["clean"][0]["before"] = evil
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    write_html_report(tmp_path)
    html = _html(tmp_path)
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("<script>") == 1  # the page's own (opens collapsed samples before printing)
    # no tokenized rows here: the viewer says why instead
    assert "No packed rows were found" in html


def test_report_md_has_the_token_table_and_its_plots(demo: tuple[Path, dict]) -> None:
    out, report = demo
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Tokens" in md and "| train conversations | train prompt | train trained |" in md.replace(
        "| source ", "")
    sg = report["tokenize"]["train"]["per_source"]["sharegpt"]
    assert f"| sharegpt | {sg['conversations']:,} | {sg['tokens'] - sg['trained_tokens']:,} | " \
           f"{sg['trained_tokens']:,} |" in md
    links = re.findall(r"!\[[^]]+\]\((plots/[a-z]+\.png)\)", md)
    assert len(links) == 6
    for link in links:
        data = (out / link).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_crystalmix_report_redraws_the_same_bytes(demo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo
    views = [out / "report.html", out / "report.md", *sorted((out / "plots").glob("*.png"))]
    before = {p: p.read_bytes() for p in views}
    for p in views:
        p.unlink()
    (out / "plots" / "stale.png").write_bytes(b"old")
    proc = subprocess.run([*console_script(), "report", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert {p: p.read_bytes() for p in views} == before
    assert not (out / "plots" / "stale.png").exists()
    # a folder without report.json: one line, exit 2
    proc = subprocess.run([*console_script(), "report", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "report.json" in proc.stderr and "Traceback" not in proc.stderr


# -- a real browser ---------------------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CRYSTALMIX_REQUIRE_CHROMIUM") == "1":
        pytest.fail("CRYSTALMIX_REQUIRE_CHROMIUM=1 but no chromium is installed (apt-get install chromium)")
    pytest.skip("chromium not installed")


def test_report_html_renders_in_chromium(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """Headless Chromium opens the page from disk: no console message, plots and viewer in the rendered DOM,
    and a screenshot kept as a test artifact."""
    exe = chromium()
    out, _ = demo
    url = (out / "report.html").as_uri()
    run = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*run, "--enable-logging=stderr", "--v=0", "--dump-dom", url], capture_output=True,
                         text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    html = dom.stdout
    assert html.count("<svg") == 6 and html.count('class="viewer-row"') == 4
    assert 'id="drops"' in html and '<span class="t">' in html
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-html.png"
    shot.unlink(missing_ok=True)
    proc = subprocess.run([*run, "--window-size=1280,4000", f"--screenshot={shot}", url], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        colours = im.convert("RGB").resize((64, 200)).getcolors(64 * 200)
    assert colours is not None and len(colours) > 50  # a drawn page, not a blank one
    print(f"report.html screenshot: {shot}")


def test_turn_bars_share_positions_and_group_long_conversations() -> None:
    from sft_builder.report_plots import turn_bars

    xs, labels, values = turn_bars([{"2": 3, "30": 1, "40": 2}, {"4": 2}])
    assert (xs, labels, values) == ([2, 4, 22], ["2", "4", ">20"], [[3, 0, 3], [0, 2, 0]])


def test_a_build_without_tokenize_says_so(demo: tuple[Path, dict], tmp_path: Path) -> None:
    from sft_builder.report_html import write_html_report

    _, report = demo
    report = {k: v for k, v in report.items() if k != "tokenize"}
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    written = write_html_report(tmp_path)
    assert sorted(p.stem for p in written["plots"]) == ["funnel", "records", "turns"]
    html = _html(tmp_path)
    assert "This build did not tokenize" in html and html.count("<svg") == 3
    assert "## Tokens" not in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_the_viewer_reads_megatron_jsonl_rows(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """`output: megatron-jsonl` rows (no segment ids) are shown too, padding told by the pad id."""
    import h5py

    from sft_builder.report_html import viewer_rows

    out, report = demo
    folder = tmp_path / "tokenized" / "train"
    folder.mkdir(parents=True)
    shutil.copy(out / "tokenized" / "train" / "metadata.json", folder / "metadata.json")
    with h5py.File(out / "tokenized" / "train" / "data-00000.h5", "r") as fh:
        rows = fh["data"][:2]
    with open(folder / "data-00000.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"token_ids": r[0].tolist(), "label_ids": r[2].tolist(),
                                 "loss_mask": r[1].tolist()}) + "\n")
    shown, note = viewer_rows(tmp_path, report, 4)
    from_h5, _ = viewer_rows(out, report, 2)
    assert note == "" and len(shown) == 2
    for a, b in zip(shown, from_h5, strict=True):
        assert (a.tokens, a.trained, a.padding) == (b.tokens, b.trained, b.padding)
        assert a.documents == 0 and a.title.endswith(("data-00000.jsonl row 0", "data-00000.jsonl row 1"))
