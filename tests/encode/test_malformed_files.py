"""`validate` and `inspect` on malformed training folders (issue 13): a verdict or one line, never a traceback.

`validate` says INVALID with the reason (exit 1); `inspect` stops with one line naming the file and the
reason (exit 2). The table is in `malformed_h5.py`. Every case runs through the installed console script
once for `validate` (all folders in one run) and in-process for `inspect` (the same entry point, `main`),
plus the cases most likely to crash natively (HDF5 on a non-HDF5, truncated or odd file) as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crystalmix.core import hdf5

from .malformed_h5 import CASES, FILE, copy_cases, good_folder, make_case

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("crystalmix")


def console(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_cases(tmp_path_factory.mktemp("malformed"))


def verdicts(stdout: str) -> dict[str, list[str]]:
    """validate's output per folder name: ["ok ..."] or ["INVALID ...", problem, ...]."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(("ok ", "INVALID ")):
            current = [line]
            name = Path(line.split(" ", 1)[1].split(":")[0]).name
            out[name] = current
        elif line.startswith("  "):
            current.append(line.strip())
    return out


def test_a_good_folder_is_valid_and_shows(tmp_path: Path, run_cli) -> None:
    good_folder(tmp_path / "good")
    assert hdf5.validate_folder(tmp_path / "good") == (4, [])
    code, err = run_cli("inspect", str(tmp_path / "good" / FILE), "--row", "3")
    assert code == 0, err


def test_validate_gives_a_verdict_for_every_malformed_folder(cases: Path) -> None:
    proc = console("validate", str(cases))
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1 and proc.stderr == ""
    seen = verdicts(proc.stdout)
    assert set(seen) == set(CASES)
    for name, (_, reason, _) in CASES.items():
        if not reason:
            assert seen[name][0].startswith("ok "), (name, seen[name])
            continue
        assert seen[name][0].startswith("INVALID "), (name, seen[name])
        assert any(reason in p for p in seen[name][1:]), (name, reason, seen[name])
    invalid = sum(1 for r in CASES.values() if r[1])
    assert proc.stdout.strip().endswith(f"{invalid} of {len(CASES)} folders invalid")


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_one_folder(tmp_path: Path, run_cli, name: str) -> None:
    folder = make_case(tmp_path, name)
    code, err = run_cli("validate", str(folder))
    assert code == (1 if CASES[name][1] else 0) and err == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_inspect_says_one_line_or_shows(tmp_path: Path, run_cli, name: str) -> None:
    folder = make_case(tmp_path, name)
    code, err = run_cli("inspect", str(folder / FILE))
    reason = CASES[name][2]
    if not reason:
        assert code == 0, err
        return
    assert code == 2, err
    assert err.startswith(f"error: {folder}") and err.count("\n") == 1, err
    assert reason in err, (reason, err)


@pytest.mark.parametrize("name", ["not_hdf5", "truncated", "data_is_a_group", "a_folder_named_h5",
                                  "metadata_a_list", "ids_out_of_vocab"])
def test_inspect_through_the_console_script(cases: Path, name: str) -> None:
    proc = console("inspect", str(cases / name / FILE))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and CASES[name][2] in proc.stderr


def test_rows_out_of_range_and_missing_files(tmp_path: Path, run_cli) -> None:
    good_folder(tmp_path / "g")
    for row in ("4", "-1"):
        code, err = run_cli("inspect", str(tmp_path / "g" / FILE), "--row", row)
        assert code == 2 and f"row {row} out of range; the file has 4 rows" in err
    code, err = run_cli("inspect", str(tmp_path / "g" / "data-00009.h5"))
    assert code == 2 and "cannot be read as HDF5" in err and err.count("\n") == 1
    code, err = run_cli("validate", str(tmp_path / "nothing"))
    assert code == 2 and "not a folder" in err
