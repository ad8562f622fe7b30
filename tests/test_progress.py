"""crystalmix.core.progress: plain lines off a terminal, totals and ETA, and bytes read of input files."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from crystalmix.core import progress as P
from crystalmix.core.errors import UserError


def test_plain_lines_with_totals_and_eta(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.0, 10.0, 20.0, 25.0, 40.0])
    monkeypatch.setattr(P.time, "monotonic", lambda: next(clock))
    bar = P.Progress(True, label="build", interval=30.0, terminal=False)  # starts at t=0
    with caplog.at_level(logging.INFO, logger="crystalmix.progress"):
        bar("ingest a", 0, 1 << 20, "bytes")  # t=0: the task starts, no line before 30 s
        bar("ingest a", 1 << 18, 1 << 20, "bytes")  # t=10
        bar("dedup", 5, None, "conversations")  # t=20
        bar("ingest a", 1 << 19, 1 << 20, "bytes")  # t=25
        bar("ingest a", 3 << 18, 1 << 20, "bytes")  # t=40: first line
    assert [r.getMessage() for r in caplog.records] == [
        "build progress after 40s: ingest a: 768.0 KB of 1.0 MB (75%), ETA 13s; dedup: 5 conversations"]


def test_disabled_or_quiet_shows_nothing(caplog: pytest.LogCaptureFixture) -> None:
    bar = P.Progress(False, interval=0.0, terminal=False)
    with caplog.at_level(logging.INFO, logger="crystalmix.progress"):
        bar("x", 1, 2)
    assert caplog.records == [] and bar.tasks == {}


def test_amounts_and_durations() -> None:
    assert P.format_amount(1536, "bytes") == "1.5 KB" and P.format_amount(12, "bytes") == "12 B"
    assert P.format_amount(1234567, "records") == "1,234,567 records"
    assert (P.format_seconds(42), P.format_seconds(185), P.format_seconds(3720)) == ("42s", "3m05s", "1h02m")


def test_input_bytes_follows_the_open_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P.InputBytes, "MIN_GAP", 0.0)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_bytes(b"x" * 300_000)
    b.write_bytes(gzip.compress(b"y" * 1_000_000))
    meter = P.input_meter([str(tmp_path / "*.j*")])
    assert meter is not None and meter.total == a.stat().st_size + b.stat().st_size
    assert meter.done() == 0
    with open(a, "rb", buffering=0) as fh:
        fh.read(100_000)
        assert meter.done() == 100_000
    with gzip.open(b, "rb") as fh:  # the compressed bytes count, whatever gzip has buffered
        fh.read(10)
        assert a.stat().st_size < meter.done() <= meter.total
    assert meter.done() > a.stat().st_size  # never goes back once the file is closed
    assert P.input_meter(["owner/dataset"]) is None  # a hub id: no size before reading


def test_the_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(P.INTERVAL_ENV, raising=False)
    assert P.Progress(True, terminal=False).interval == P.PLAIN_INTERVAL
    monkeypatch.setenv(P.INTERVAL_ENV, "2.5")
    assert P.Progress(True, terminal=False).interval == 2.5
    assert P.Progress(True, terminal=False, interval=7).interval == 7  # the caller's own wins
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(P.INTERVAL_ENV, bad)
        with pytest.raises(UserError, match=f"{P.INTERVAL_ENV} must be a number of seconds above 0"):
            P.Progress(True, terminal=False)
        assert P.Progress(False).interval == P.PLAIN_INTERVAL  # quiet: the value never matters
