"""End to end on the bundled samples: valid HDF5, identical bytes for any worker count, resumable."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from crystalmix.core import hdf5
from crystalmix.core.errors import UserError
from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor
from pretrain.outputs import locate

from .conftest import stage_manifest, tree_hashes


def test_outputs_validate_and_carry_metadata(reference_build) -> None:
    out, hashes, summary = reference_build
    folders = hdf5.data_folders(out)
    names = [str(f.relative_to(out)) for f in folders]
    assert names == ["c4/epoch-0", "mixed", "starcoder/epoch-0", "starcoder/epoch-1", "wikipedia/epoch-0"]
    for folder in folders:
        rows, problems = hdf5.validate_folder(folder)
        assert problems == [] and rows > 0
    meta = hdf5.read_metadata(out / "starcoder" / "epoch-1")
    assert set(meta["special_tokens"]) >= {"eos", "pad", "fim_prefix", "fim_middle", "fim_suffix", "fim_pad"}
    assert meta["fingerprint"] == summary["fingerprint"] and meta["fim"]["fim_applied"] > 0
    assert summary["empty_outputs"] == ["arxiv/epoch-0"]
    read = summary["documents"]["slimpajama/epoch-0"]
    assert read["other_half"] > 0 and read["excluded_subset"] > 0 and read["empty"] == 1


def test_two_workers_give_identical_bytes(reference_build, tmp_path: Path) -> None:
    _, hashes, _ = reference_build
    cfg = load_manifest(stage_manifest(tmp_path))
    build_stage(cfg, tmp_path / "out", LocalExecutor(2), progress=False)
    assert tree_hashes(tmp_path / "out") == hashes


def test_resume_after_crash_skips_done_shards(reference_build, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run dying after two shards (with a half-written temporary left behind) resumes to the same bytes."""
    import pretrain.executors as ex

    _, hashes, _ = reference_build
    cfg = load_manifest(stage_manifest(tmp_path))
    out = tmp_path / "out"
    real, calls = ex.run_shard, []

    def dying(task):  # noqa: ANN001, ANN202
        calls.append(task.name)
        if len(calls) == 3:
            (task.staging / "c4").mkdir(parents=True, exist_ok=True)
            (task.staging / "c4" / ".data-00000.h5.123.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(ex, "run_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        build_stage(cfg, out, LocalExecutor(1), progress=False)
    monkeypatch.setattr(ex, "run_shard", real)
    done_before = {p: p.read_bytes() for p in (out / ".state").rglob("*.done.json")}
    assert len(done_before) == 2
    build_stage(cfg, out, LocalExecutor(1), progress=False)
    assert tree_hashes(out) == hashes
    assert not list(out.rglob("*.tmp"))
    # The two finished shards were not run again: their markers (with their timings) are untouched.
    assert all(p.read_bytes() == blob for p, blob in done_before.items())


def test_changed_config_is_refused_unless_forced(reference_build, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference_build[0], out)
    other = load_manifest(stage_manifest(tmp_path), seed=8)
    with pytest.raises(UserError, match="another config"):
        build_stage(other, out, LocalExecutor(1), progress=False)
    build_stage(other, out, LocalExecutor(1), progress=False, force=True)
    assert tree_hashes(out) != reference_build[1]


def test_each_epoch_is_a_new_fim_pass(reference_build) -> None:
    out = reference_build[0]
    a = hdf5.read_rows(out / "starcoder" / "epoch-0" / "data-00000.h5")
    b = hdf5.read_rows(out / "starcoder" / "epoch-1" / "data-00000.h5")
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_locate_maps_global_samples_to_file_rows(reference_build) -> None:
    folder = reference_build[0] / "starcoder" / "epoch-0"
    everything = np.concatenate([hdf5.read_rows(f) for f in sorted(folder.glob("data-*.h5"))])
    index = json.loads((folder / "index.json").read_text())
    assert index["num_sequences"] == len(everything) and len(index["files"]) > 1
    for sample in (0, 63, 64, len(everything) - 1):
        path, row = locate(folder, sample)
        assert np.array_equal(hdf5.read_rows(path)[row], everything[sample])
    with pytest.raises(UserError, match="out of range"):
        locate(folder, len(everything))


def test_offline_mix_follows_weights_without_repeats(reference_build) -> None:
    out = reference_build[0]
    meta = hdf5.read_metadata(out / "mixed")
    comp = meta["composition"]
    mixed = np.concatenate([hdf5.read_rows(f) for f in sorted((out / "mixed").glob("data-*.h5"))])
    assert len(mixed) == sum(comp.values())
    available: Counter[bytes] = Counter()
    owner = {}
    for folder in comp:
        for f in sorted((out / folder).glob("data-*.h5")):
            for r in hdf5.read_rows(f):
                available[r.tobytes()] += 1
                owner.setdefault(r.tobytes(), folder)
    used = Counter(r.tobytes() for r in mixed)
    assert all(n <= available[key] for key, n in used.items())  # source rows, none used twice
    # A row left without FIM in both epochs exists twice, so count per source, not per epoch folder.
    seen = Counter(owner[r.tobytes()].split("/")[0] for r in mixed)
    want = {"c4": 0.27, "wikipedia": 0.03, "starcoder": 0.63}
    total = sum(want.values())
    for name, w in want.items():
        k = sum(n for folder, n in comp.items() if folder.startswith(name + "/"))
        assert seen[name] == k
        assert abs(k / len(mixed) - w / total) < 0.01
