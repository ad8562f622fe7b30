"""A rerun never trusts what it did not verify: lost or damaged files of finished shards and of `mixed/` are
rebuilt to the same bytes, changed input content is refused, and --force rebuilds from scratch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from crystalmix.core.errors import UserError
from pretrain.build import build_stage, prepare
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor

from .conftest import stage_manifest, tree_hashes


def rebuild(manifest: Path, out: Path, **kw: object) -> dict:
    return build_stage(load_manifest(manifest), out, LocalExecutor(1), progress=False, **kw)


@pytest.fixture
def copy(reference_build, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """(manifest, a copy of the reference build, the reference's file hashes)."""
    ref, hashes, _ = reference_build
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    return stage_manifest(tmp_path), out, hashes


def mark_shards(out: Path) -> int:
    """Tag every shard's done-marker; a shard that runs again writes a new marker without the tag."""
    markers = sorted((out / ".state").rglob("*.done.json"))
    for p in markers:
        p.write_text(json.dumps({**json.loads(p.read_text()), "tag": 1}), encoding="utf-8")
    return len(markers)


def rerun_shards(out: Path) -> int:
    return sum("tag" not in json.loads(p.read_text()) for p in (out / ".state").rglob("*.done.json"))


def test_a_deleted_or_damaged_placed_file_makes_its_shard_run_again(copy) -> None:  # noqa: ANN001
    manifest, out, hashes = copy
    n = mark_shards(out)
    (out / "c4" / "epoch-0" / "data-00000.h5").unlink()
    damaged = out / "starcoder" / "epoch-1" / "data-00001.h5"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    rebuild(manifest, out)
    assert tree_hashes(out) == hashes
    assert 1 <= rerun_shards(out) <= 2 < n  # only the shards that lost files ran again


def test_a_flipped_byte_in_a_placed_file_is_found(copy) -> None:  # noqa: ANN001
    manifest, out, hashes = copy
    f = out / "wikipedia" / "epoch-0" / "data-00000.h5"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    rebuild(manifest, out)
    assert tree_hashes(out) == hashes


def test_a_damaged_staged_file_of_a_finished_shard_is_redone(reference_build, tmp_path: Path) -> None:
    _, hashes, _ = reference_build
    manifest, out = stage_manifest(tmp_path), tmp_path / "out"
    tasks, _ = prepare(load_manifest(manifest), out)
    markers = LocalExecutor(1).run(tasks[:2], lambda *a: None)  # killed before the final pass
    staged = out / next(iter(next(iter(markers.values()))["digests"]))
    staged.write_bytes(staged.read_bytes()[:500])
    rebuild(manifest, out)
    assert tree_hashes(out) == hashes


def test_a_deleted_or_damaged_mixed_file_is_restored(copy) -> None:  # noqa: ANN001
    manifest, out, hashes = copy
    assert (out / "mixed" / "data-00000.h5").exists()
    (out / "mixed" / "data-00000.h5").unlink()
    rebuild(manifest, out)
    assert tree_hashes(out) == hashes
    index = out / "mixed" / "index.json"
    index.write_text(index.read_text().replace("0", "1", 1))
    rebuild(manifest, out)
    assert tree_hashes(out) == hashes


def test_changed_input_content_is_refused_unless_forced(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} " + "some words here " * 40}) + "\n"
                            for i in range(60)), encoding="utf-8")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"stage": "t", "tokenizer": "demo", "seq_len": 128, "seed": 1,
                                        "sources": [{"name": "docs", "paths": [str(docs)]}]}), encoding="utf-8")
    out = tmp_path / "out"
    rebuild(manifest, out)
    first = tree_hashes(out)
    st = docs.stat()
    docs.write_bytes(docs.read_bytes().replace(b"document 7 ", b"document X ", 1))  # same size, same time
    os.utime(docs, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(UserError, match=r"other content in input docs\.jsonl of source 'docs'.*--force"):
        rebuild(manifest, out)
    rebuild(manifest, out, force=True)
    assert tree_hashes(out) != first
    fresh = tmp_path / "fresh"
    rebuild(manifest, fresh)
    assert tree_hashes(out) == tree_hashes(fresh)


def test_force_rebuilds_from_scratch(copy) -> None:  # noqa: ANN001
    manifest, out, hashes = copy
    n = mark_shards(out)
    (out / "c4" / "epoch-0" / "stray.txt").write_text("left over", encoding="utf-8")
    rebuild(manifest, out, force=True)
    assert tree_hashes(out) == hashes  # the stray file is gone, the rest is the same bytes
    assert rerun_shards(out) == n  # every shard ran again
    mark_shards(out)
    rebuild(manifest, out)  # without --force, nothing runs again
    assert rerun_shards(out) == 0 and tree_hashes(out) == hashes
