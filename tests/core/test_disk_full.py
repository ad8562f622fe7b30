"""Disk full (issue 13): a real size-limited tmpfs fills up during `build` and `pretrain build`.

Each run must end with one line naming the file that could not be written (exit 2, no traceback, no
SIGSEGV from HDF5), leave no temporaries, and the rerun once there is space again must finish with the same
bytes as a build that never ran out of space. The commands run as the installed console script, in a
subprocess, so a crash at interpreter exit (where HDF5 used to fail) is seen too.

Mounting needs root (CI runs as root); elsewhere these tests skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from crystalmix.core.errors import DiskFullError, UserError

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("crystalmix")
PRETRAIN_DEMO = ROOT / "manifests" / "pretrain" / "demo_data"
STATE = {".work", ".state"}  # stage caches: not outputs (their markers record timings)


def outputs(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not STATE & set(p.relative_to(out).parts)}


def used_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=600, check=False)


Disk = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``disk(size_bytes)`` mounts (or resizes) a tmpfs of that size at tmp_path/disk and returns it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = False

    def disk(size: int) -> Path:
        nonlocal mounted
        opts = f"size={size}" if not mounted else f"remount,size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True, capture_output=True)
        mounted = True
        return mnt

    try:
        yield disk
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def assert_disk_full_line(proc: subprocess.CompletedProcess[str], disk: Path, progress: bool = False) -> None:
    """Exit 2 and one error line (after the progress bar's lines when the command always shows one)."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    if progress:
        err = err.strip().splitlines()[-1] + "\n"
    assert err.count("\n") == 1 and proc.stderr.count("error:") == 1, proc.stderr[-3000:]
    assert err.startswith(f"error: {disk}/"), err  # names the file, inside --out
    assert "no space left on device" in err and "run the same command again" in err


def no_temporaries(out: Path) -> None:
    assert not [p for p in out.rglob("*.tmp") if p.is_file()]


# -- the SFT build ----------------------------------------------------------------------------------------
def sft_manifest(folder: Path) -> Path:
    """300 conversations, split and tokenized into HDF5: every stage of the build writes something."""
    import random

    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    rows = [{"id": f"r{i}", "source": "s", "meta": {}, "messages": [
        {"role": "user", "content": f"Question {i}: " + " ".join(rng.choices(words, k=rng.randint(8, 40)))},
        {"role": "assistant", "content": f"Answer {i}: " + " ".join(rng.choices(words, k=rng.randint(20, 120)))}]}
        for i in range(300)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = folder / "m.yaml"
    m.write_text(yaml.safe_dump({
        "seed": 1, "sources": [{"name": "s", "adapter": "conversations", "inputs": "data.jsonl"}],
        "split": {"test_fraction": 0.1},
        "tokenize": {"tokenizer": "demo", "template": "crystalchat", "seq_len": 256, "output": "hdf5"}}))
    return m


@pytest.fixture(scope="module")
def sft_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest, a build of it that had all the space it needed; the command also draws the report)."""
    folder = tmp_path_factory.mktemp("sft")
    m = sft_manifest(folder)
    proc = run("build", str(m), "--out", str(folder / "ref"), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return m, folder / "ref"


def test_build_on_a_full_disk_stops_with_one_line_and_resumes(sft_reference: tuple[Path, Path],
                                                               small_disk: Disk) -> None:
    m, ref = sft_reference
    need = used_bytes(ref)
    for fraction in (0.25, 0.8):  # the first fills up while ingesting, the second while tokenizing
        disk = small_disk(int(need * fraction) // 4096 * 4096)
        out = disk / f"b{int(fraction * 100)}"
        proc = run("build", str(m), "--out", str(out), "-q")
        assert_disk_full_line(proc, disk)
        no_temporaries(out)
        small_disk(64 << 20)
        proc = run("build", str(m), "--out", str(out), "-q")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert outputs(out) == outputs(ref)
        shutil.rmtree(out)  # empty again, so the next case can shrink the disk


# -- pretraining ------------------------------------------------------------------------------------------
def stage_manifest(folder: Path) -> Path:
    raw = {"stage": "t", "tokenizer": "demo", "seq_len": 128, "seed": 1,
           "samples_per_file": 32, "min_sequence_len": 4, "mixture": {"offline": True, "shuffle_buffer": 8},
           "sources": [
               {"name": "slimpajama", "paths": [str(PRETRAIN_DEMO / "slimpajama" / "*.jsonl.zst")],
                "subset_field": "meta.redpajama_set_name", "fraction": 0.5,
                "subsets": {"RedPajamaC4": {"name": "c4", "weight": 0.3},
                            "RedPajamaCommonCrawl": {"name": "cc", "weight": 0.3}}},
               {"name": "starcoder", "paths": [str(PRETRAIN_DEMO / "starcoder" / "*" / "*.parquet")],
                "text_field": "content", "fraction": 0.5, "weight": 0.4,
                "fim": {"rate": 0.5, "spm_rate": 0.5, "mode": "context"}}]}
    p = folder / "stage.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="module")
def stage_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(stage manifest, a build of it that had all the space it needed), built in-process."""
    from pretrain.build import build_stage
    from pretrain.config import load_manifest
    from pretrain.executors import LocalExecutor

    folder = tmp_path_factory.mktemp("stage")
    stage = stage_manifest(folder)
    build_stage(load_manifest(stage), folder / "ref", LocalExecutor(1), progress=False)
    return stage, folder / "ref"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_pretrain_on_a_full_disk_stops_with_one_line_and_resumes(stage_reference: tuple[Path, Path],
                                                                  small_disk: Disk, workers: str) -> None:
    stage, ref = stage_reference
    need = used_bytes(ref)
    # workers 1: full while packing the shards; workers 2: full in the offline mix, at the end
    fraction = 0.4 if workers == "1" else 0.85
    disk = small_disk(int(need * fraction) // 4096 * 4096)
    out = disk / "p"
    args = ("pretrain", "build", str(stage), "--out", str(out), "-q", "--workers", workers)
    proc = run(*args)
    assert_disk_full_line(proc, disk)
    no_temporaries(out)
    small_disk(64 << 20)
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs(out) == outputs(ref)


# -- the error itself ---------------------------------------------------------------------------------------
def test_disk_full_error_is_a_user_error_that_survives_a_process_pool(tmp_path: Path) -> None:
    import errno
    import pickle

    exc = DiskFullError.from_os_error(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path / "x.h5")
    back = pickle.loads(pickle.dumps(exc))
    assert isinstance(back, UserError) and str(back) == str(exc) and back.path == str(tmp_path / "x.h5")
    assert str(exc).startswith(f"{tmp_path / 'x.h5'}: cannot be written (disk quota exceeded)")


# -- webgen: an append-only output -------------------------------------------------------------------------
def test_webgen_on_a_full_disk_stops_with_one_line_and_continues(tmp_path: Path, small_disk: Disk) -> None:
    args = ("webgen", "--dry-run", "--num", "40", "--seed", "1", "--out")
    ref = tmp_path / "ref" / "web.jsonl"
    assert run(*args, str(ref)).returncode == 0
    disk = small_disk(64 << 10)
    out = disk / "web.jsonl"
    proc = run(*args, str(out))
    assert_disk_full_line(proc, disk, progress=True)
    small_disk(64 << 20)
    proc = run(*args, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("web.jsonl", "web.rejects.jsonl"):
        assert (disk / name).read_bytes() == (ref.parent / name).read_bytes()
