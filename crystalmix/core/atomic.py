"""Atomic file writes (temp file in the same folder, fsync, rename), the output folders we own, and stable
config fingerprints.

Every output of crystalmix goes through these so an interrupted run never leaves a half-written file
under a final name, a changed config is detected instead of silently reusing stale output, and a command
never deletes or overwrites files in a folder it did not make.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from crystalmix.core.errors import DiskFullError, UserError, is_disk_full

TMP_SUFFIX = ".tmp"
_OUR_TMP = re.compile(r"\..+\.\d+" + re.escape(TMP_SUFFIX))  # `atomic_path`'s names: .NAME.PID.tmp
FOLDER_MARKER = ".crystalmix-out"  # JSON {"kind", "version"}: the folder was made by that command
MARKER_VERSION = 1
FOLDER_KINDS = {"build": "crystalmix build", "export": "crystalmix export"}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    A full disk or an exceeded quota, wherever it surfaces (a write, the close that flushes, the fsync),
    becomes a `DiskFullError` naming `path`, once the temporary is gone.
    """
    final = Path(path)
    if final.is_dir():
        raise UserError("is a folder; name a file to write", path=final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError.from_os_error(exc, final.parent) from exc
        raise
    tmp = final.with_name(f".{final.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(exc):
            raise DiskFullError.from_os_error(exc, final) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a file for writing that appears under its final name only once fully written."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON (stable bytes for the same object)."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def read_files(root: str | Path, names: Iterable[str] | None = None) -> dict[str, bytes]:
    """The bytes of the files `names` (or of every file) under `root`, by POSIX path relative to it: what a
    task on a node without the caller's disk hands back, for `write_files` to write there."""
    base = Path(root)
    if names is None:
        names = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    return {name: (base / name).read_bytes() for name in names}


def write_files(root: str | Path, files: dict[str, bytes]) -> None:
    """Write each of `files` (relative path -> bytes) under `root`, atomically and in sorted order."""
    for name in sorted(files):
        with atomic_open(Path(root, name), "wb") as fh:
            fh.write(files[name])


def sweep_temporaries(folder: str | Path) -> int:
    """Remove orphaned temporaries left by a killed run; returns how many were removed.

    Only `atomic_path`'s own names (``.NAME.PID.tmp``, regular files), and only below `folder` (symbolic
    links to folders are not followed): call it on folders the command owns (`claim_folder`).
    """
    n = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            p = Path(parent, name)
            if _OUR_TMP.fullmatch(name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
    return n


def folder_kind(folder: str | Path) -> str | None:
    """The command kind recorded in `folder`'s marker, or None when it has no (readable) marker."""
    try:
        marker = json.loads((Path(folder) / FOLDER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = marker.get("kind") if isinstance(marker, dict) else None
    return kind if isinstance(kind, str) else None


def claim_folder(folder: str | Path, kind: str, *, force: bool = False, option: str = "--out",
                 legacy: Iterable[str] = ()) -> Path:
    """Make `folder` this command's output folder, refusing one that holds files we did not write.

    A folder is ours when it is new or empty, carries our marker for the same `kind`, or (made before
    markers existed) holds one of the `legacy` entries. Otherwise the command would overwrite or delete
    the user's files (stale shards, rejects, ``README.md``, temporaries), so it stops with one line unless
    `force`. The marker is written before anything else, so an interrupted first run is still ours.
    """
    path = Path(folder)
    what = FOLDER_KINDS.get(kind, kind)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} names an existing file; give a folder for `{what}` to write into", path=path)
    if path.is_dir() and not force:
        owner = folder_kind(path)
        if owner is None and any(path.iterdir()) and not any((path / name).exists() for name in legacy):
            raise UserError(f"{option} holds files `{what}` did not write (it would overwrite or delete some); "
                            "pick a new or empty folder, or pass --force", path=path)
        if owner is not None and owner != kind:
            raise UserError(f"{option} was made by `{FOLDER_KINDS.get(owner, owner)}`, not `{what}`; "
                            "pick another folder, or pass --force", path=path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError.from_os_error(exc, path) from exc
        raise UserError(f"cannot create the {option} folder ({exc.strerror or exc})", path=path) from exc
    if folder_kind(path) != kind:
        write_json(path / FOLDER_MARKER, {"kind": kind, "version": MARKER_VERSION})
    return path


def fingerprint(obj: Any, length: int = 16) -> str:
    """A stable hex digest of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]
