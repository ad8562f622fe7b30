"""Plain progress lines from a real `crystalmix build` off a terminal: on stderr, as plain text, never on stdout.

`tests/test_progress.py` checks what a line says against a fake clock; this runs the installed script with a short
`CRYSTALMIX_PROGRESS_SECONDS` on a build of many intervals. It asserts at least one line, not how many: the
count depends on the machine's speed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .conftest import ROOT, Result

DEMO = ROOT / "manifests" / "demo.yaml"
LINE = re.compile(r"build progress after \d+[hms0-9]*: \S.*")


def test_plain_progress_lines_go_to_stderr(cli: Callable[..., Result], tmp_path: Path) -> None:
    res = cli("build", DEMO, "-o", tmp_path / "out", env={"CRYSTALMIX_PROGRESS_SECONDS": "0.1"}, timeout=600)
    assert res.code == 0, res.err
    lines = [line for line in res.err.splitlines() if "progress after" in line]
    assert lines, res.err  # the build takes seconds: many intervals of 0.1 s
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert "progress" not in res.out.lower() and "ingest" not in res.out
    assert not re.search(r"[\r\x1b]", res.out + res.err)  # no bar redrawn in place, no colour codes
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_bad_progress_interval_is_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    res = cli("build", DEMO, "-o", tmp_path / "out", env={"CRYSTALMIX_PROGRESS_SECONDS": "soon"})
    res.one_line(2, "error:", "CRYSTALMIX_PROGRESS_SECONDS must be a number of seconds above 0, not 'soon'")
    assert not (tmp_path / "out").exists()
