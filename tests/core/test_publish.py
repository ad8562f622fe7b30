"""Publishing a finished local folder to a URL (memory://): temporaries moved into place, the completion marker
last, reruns that upload only what differs (by size and digest), stale files removed, foreign folders refused."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from crystalmix.core.errors import UserError
from crystalmix.core.remote import JOURNAL, OWNER, PUBLISHED, claim_url, publish


@pytest.fixture
def url(memory_root: str) -> str:
    return f"{memory_root}/out"


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Every move into place: (source, destination, whether the completion marker existed at that moment)."""
    seen: list[tuple[str, str, bool]] = []
    real = MemoryFileSystem.mv

    def mv(self: MemoryFileSystem, path1: str, path2: str, **kw: object) -> None:
        root = path2.rsplit("/out/", 1)[0] + "/out"
        seen.append((path1, path2, self.exists(f"{root}/{PUBLISHED}")))
        real(self, path1, path2, **kw)

    monkeypatch.setattr(MemoryFileSystem, "mv", mv)
    return seen


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    local = tmp_path / "local"
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    return local


def _remote(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root) + 1:]: bytes(fs.cat_file(p)) for p in fs.find(root)}


FILES = {OWNER: b'{\n  "kind": "build",\n  "version": 1\n}\n', "a/x.parquet": b"x" * 100,
         "report.json": b"{}\n", ".work/stage/kept.jsonl": b"internal\n"}


def test_publish_moves_each_file_into_place_and_the_marker_last(tmp_path: Path, url: str,
                                                                moves: list[tuple[str, str, bool]]) -> None:
    local = _folder(tmp_path, FILES)
    done = publish(local, url, kind="build", skip=(".work",))
    remote = _remote(url)
    assert set(remote) == {OWNER, "a/x.parquet", "report.json", PUBLISHED}  # .work stays local
    assert all(remote[k] == FILES[k] for k in remote if k != PUBLISHED)
    assert [dst.rsplit("/out/", 1)[1] for _, dst, _ in moves] == [OWNER, "a/x.parquet", "report.json", PUBLISHED]
    assert all(src.rsplit("/", 1)[1].startswith(".") and src.endswith(".tmp") for src, _, _ in moves)
    assert not any(marker for _, _, marker in moves)  # nothing moved while a marker said "complete"
    marker = json.loads(remote[PUBLISHED])
    assert marker["kind"] == "build" and set(marker["files"]) == {OWNER, "a/x.parquet", "report.json"}
    assert marker["files"]["a/x.parquet"]["size"] == 100
    assert done.uploaded == [OWNER, "a/x.parquet", "report.json"] and done.marker


def test_a_rerun_uploads_only_what_differs(tmp_path: Path, url: str, moves: list[tuple[str, str, bool]]) -> None:
    local = _folder(tmp_path, FILES)
    publish(local, url, kind="build", skip=(".work",))
    moves.clear()
    again = publish(local, url, kind="build", skip=(".work",))
    assert moves == [] and again.uploaded == [] and not again.marker and len(again.reused) == 3
    (local / "a" / "x.parquet").write_bytes(b"y" * 100)  # same size, other bytes
    (local / "report.json").unlink()
    (local / "new.md").write_bytes(b"# new\n")
    third = publish(local, url, kind="build", skip=(".work",))
    assert third.uploaded == ["a/x.parquet", "new.md"] and third.removed == ["report.json"]
    assert [dst.rsplit("/out/", 1)[1] for _, dst, _ in moves][-1] == PUBLISHED
    assert _remote(url)["a/x.parquet"] == b"y" * 100 and "report.json" not in _remote(url)


def test_a_remote_file_changed_behind_the_marker_is_uploaded_again(tmp_path: Path, url: str) -> None:
    local = _folder(tmp_path, FILES)
    publish(local, url, kind="build", skip=(".work",))
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/a/x.parquet", b"z" * 99)  # another size: seen from the listing alone
    assert publish(local, url, kind="build", skip=(".work",)).uploaded == ["a/x.parquet"]
    fs.pipe_file(f"{root}/a/x.parquet", b"z" * 100)  # same size: the marker and journal agree on the old digest,
    fs.rm_file(f"{root}/{PUBLISHED}")  # ... so with both gone the file is read back and hashed
    (local / JOURNAL).unlink()
    assert publish(local, url, kind="build", skip=(".work",)).uploaded == ["a/x.parquet"]
    assert _remote(url)["a/x.parquet"] == b"x" * 100


def test_an_interrupted_publish_leaves_no_marker_and_the_rerun_finishes_it(
        tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _folder(tmp_path, {**FILES, "b.bin": b"b" * 10, "c.bin": b"c" * 10})
    publish(local, url, kind="build", skip=(".work",))
    for name in ("a/x.parquet", "b.bin", "c.bin"):
        (local / name).write_bytes((local / name).read_bytes().upper())
    real = MemoryFileSystem.put_file
    calls = []

    def failing(self: MemoryFileSystem, lpath: str, rpath: str, **kw: object) -> None:
        calls.append(rpath)
        if len(calls) == 2:
            raise ConnectionError("network gone")
        real(self, lpath, rpath, **kw)

    monkeypatch.setattr(MemoryFileSystem, "put_file", failing)
    with pytest.raises(UserError, match="network gone.*not marked complete: run the same command again"):
        publish(local, url, kind="build", skip=(".work",))
    remote = _remote(url)
    assert PUBLISHED not in remote  # readers see an unfinished folder, never a mix under a "complete" marker
    assert not [k for k in remote if k.endswith(".tmp")]  # the failed temporary is gone
    monkeypatch.setattr(MemoryFileSystem, "put_file", real)
    done = publish(local, url, kind="build", skip=(".work",))
    assert done.uploaded == ["b.bin", "c.bin"] and "a/x.parquet" in done.reused  # the first was already there
    assert {k: v for k, v in _remote(url).items() if k != PUBLISHED} == {
        k: (local / k).read_bytes() for k in (OWNER, "a/x.parquet", "report.json", "b.bin", "c.bin")}


def test_a_url_holding_other_files_is_refused_before_anything_is_written(tmp_path: Path, url: str) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/theirs.txt", b"keep me")
    local = _folder(tmp_path, FILES)
    with pytest.raises(UserError, match="holds files `crystalmix build` did not write"):
        claim_url(url, "build")
    with pytest.raises(UserError, match="holds files"):
        publish(local, url, kind="build")
    assert _remote(url) == {"theirs.txt": b"keep me"}
    publish(local, url, kind="build", skip=(".work",), force=True)
    assert _remote(url)["theirs.txt"] == b"keep me"  # --force writes beside them, never removes them
    with pytest.raises(UserError, match="published by `crystalmix build`, not `crystalmix export`"):
        claim_url(url, "export")
    fs.pipe_file(f"{root}/file", b"x")
    with pytest.raises(UserError, match="names an existing file"):
        claim_url(url + "/file", "build")
