"""Inputs and outputs at fsspec URLs (``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``), so the
machines of a cluster need no shared disk.

Inputs: the readers open URL files here (`open_input`), list folders and globs at a URL (`expand`), and
the stages key on their content (`crystalmix.core.digest` streams and hashes them). Outputs: a command builds
into a local working folder (`output_target`), then `publish` copies its finished files to the URL, each
under a temporary name then moved into place, and writes the completion marker last; a rerun uploads only
the files whose size or digest differ. Local paths never come through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from glob import has_magic
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crystalmix.core.errors import UserError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# protocol://..., also chained (``simplecache::s3://...``); two letters at least, so ``C:\`` is a path
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+(::[A-Za-z][A-Za-z0-9+.-]+)*://")
PUBLISHED = ".crystalmix-published.json"  # the completion marker at the URL: written last, lists every file
JOURNAL = ".crystalmix-publish.json"  # in the local folder: what it has uploaded to which URL so far
TMP_SUFFIX = ".tmp"
_OUR_TMP = re.compile(r"\..+\.\d+" + re.escape(TMP_SUFFIX))  # the temporaries of `publish` and `atomic_path`
OWNER = ".crystalmix-out"  # crystalmix.core.atomic.FOLDER_MARKER (not imported: atomic imports nothing here)
BLOCK = 1 << 22


def is_url(spec: str | os.PathLike[str]) -> bool:
    """Whether `spec` is written as a URL (``protocol://``), as opposed to a local path or a hub id."""
    return isinstance(spec, str) and URL.match(spec) is not None


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec file system of `url` and the path within it; an unknown protocol, or one whose package is
    not installed (``s3fs``, ``gcsfs``), is a `UserError` naming the URL."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except ImportError as exc:  # fsspec says which package: "Install s3fs to access S3"
        raise UserError(f"cannot open this URL: {exc}", path=url) from None
    except ValueError as exc:
        raise UserError(f"cannot open this URL ({exc})", path=url) from None


def local_path(spec: str) -> str | None:
    """The local path `spec` names (itself, or a ``file://`` URL's path), or None for any other URL."""
    if not is_url(spec):
        return spec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(spec)
    return path if isinstance(fs, LocalFileSystem) else None


class UrlFile:
    """A file at a URL where the readers take a local `Path`: `name` gives its extension, ``str()`` its URL."""

    __slots__ = ("name", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def is_file(self) -> bool:
        fs, path = filesystem(self.url)
        return bool(fs.isfile(path))

    def __repr__(self) -> str:
        return f"UrlFile({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlFile) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


def as_path(spec: str | Path) -> Path | UrlFile:
    """A `UrlFile` for a URL, else a local `Path` (``Path("s3://b/k")`` would fold the ``//``)."""
    return UrlFile(spec) if isinstance(spec, str) and is_url(spec) else Path(spec)


def open_raw(url: str) -> IO[bytes]:
    """The bytes of the file at `url`, for random access (parquet, Arrow) or a digest."""
    fs, path = filesystem(url)
    return fs.open(path, "rb")


def open_input(url: str, buffer: int = 1 << 20) -> IO[bytes]:
    """The bytes of the file at `url` as a buffered stream: lines are cut in C, one remote read per `buffer`."""
    return io.BufferedReader(open_raw(url), buffer)  # type: ignore[arg-type]  # fsspec files have readinto


def info(url: str) -> dict[str, Any]:
    """fsspec's ``info`` of `url` (``size``, ``type``, and what the store adds); FileNotFoundError if absent."""
    fs, path = filesystem(url)
    return dict(fs.info(path))


def size(spec: str) -> int:
    """The size in bytes of a local file or of the file at a URL."""
    return int(info(spec)["size"]) if is_url(spec) else os.path.getsize(spec)


def version_stamp(meta: dict[str, Any]) -> str:
    """What a store says changes with each write (an ETag, a modification time), for a run's digest memo."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created", "blob_id"):
        if meta.get(key) is not None:
            return f"{key}={meta[key]}"
    return ""


def exists(spec: str) -> bool:
    """Whether URL `spec` names a file or folder, or (a pattern) matches something; one request, no listing."""
    fs, path = filesystem(spec)
    if has_magic(path):
        return bool(fs.glob(path))
    return bool(fs.exists(path))


def _to_url(base_url: str, base_path: str | None, found: str, fs: AbstractFileSystem) -> str:
    """The URL of `found` (a path within `fs`), written from the user's `base_url` so provenance reads as given."""
    base_path = base_path.rstrip("/") if base_path is not None else None
    if base_path is not None and found.startswith(base_path + "/"):
        return base_url.rstrip("/") + found[len(base_path):]
    return str(fs.unstrip_protocol(found))


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def expand(spec: str, known: tuple[str, ...], patterns: Sequence[str] = ()) -> tuple[str, list[str]]:
    """What URL `spec` names and the URLs of its files, sorted: ``("file", [spec])``; ``("folder", files)``
    of the `known` types below it (hidden ones left out; `patterns` filter them by glob); ``("glob", files)``
    for a pattern (a folder it matches adds its known files); ``("missing", [])``."""
    fs, path = filesystem(spec)
    if has_magic(path):
        cut = spec.find("*") if "*" in spec else len(spec)
        for ch in "?[":
            if ch in spec:
                cut = min(cut, spec.find(ch))
        base_url = spec[:spec.rfind("/", 0, cut)]
        base_path = filesystem(base_url)[1] if is_url(base_url) else None
        out: set[str] = set()
        for m in sorted(fs.glob(path)):
            url = _to_url(base_url, base_path, m, fs)
            if fs.isdir(m):
                out.update(_folder(fs, m, url, known, ()))
            else:
                out.add(url)
        return "glob", sorted(out)
    try:
        meta = fs.info(path)
    except FileNotFoundError:
        return "missing", []
    if meta.get("type") == "directory":
        return "folder", _folder(fs, path, spec, known, patterns)
    return "file", [spec]


def _folder(fs: AbstractFileSystem, path: str, url: str, known: tuple[str, ...], patterns: Sequence[str]) -> list[str]:
    if patterns:
        found = {p for pat in patterns for p in fs.glob(path.rstrip("/") + "/" + pat) if not fs.isdir(p)}
    else:
        found = set(fs.find(path))
    root = path.rstrip("/")
    urls = []
    for p in found:
        rel = p[len(root) + 1:] if p.startswith(root + "/") else p.rsplit("/", 1)[-1]
        if p.lower().endswith(known) and not _hidden(rel):
            urls.append(_to_url(url, path, p, fs))
    return sorted(urls)


# -- outputs ------------------------------------------------------------------------------------------------

def default_work(url: str, kind: str) -> Path:
    """Where a build to `url` runs by default: a folder under the user's cache, one per (command, URL)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[-1]).strip("-.")[:48] or "out"
    key = hashlib.sha256(f"{kind}\n{url}".encode()).hexdigest()[:12]
    return cache / "crystalmix" / "work" / f"{kind.replace(' ', '-')}-{slug}-{key}"


def output_target(out: str, kind: str, work: str | Path | None = None,
                  option: str = "--out") -> tuple[Path, str | None]:
    """(local folder to build into, URL to publish it to or None) for an `out` given on the command line.

    A local path or ``file://`` URL is built in place, as always; any other URL is built in `work` (default
    `default_work`), which keeps the resumable state between runs, and then published.
    """
    local = local_path(out)
    if local is not None:
        if work is not None:
            raise UserError(f"--work is for an {option} URL (s3://, gs://, hf://, ...); {out} is a local folder")
        return Path(local), None
    return Path(work) if work is not None else default_work(out, kind), out


@dataclass
class Published:
    """What `publish` did: files uploaded, found intact at the URL, and removed (left by an earlier build)."""

    url: str
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    marker: bool = False  # whether the completion marker was (re)written


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _local_files(local: Path, skip: Collection[str]) -> dict[str, Path]:
    """Files of the local folder to publish: all but the top-level names in `skip`, the journal and temporaries."""
    out = {}
    for parent, dirs, names in os.walk(local):
        rel_dir = Path(parent).relative_to(local)
        if rel_dir == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            rel = (rel_dir / name).as_posix()
            if (rel_dir == Path(".") and (name in skip or name in (JOURNAL, PUBLISHED))) or _OUR_TMP.fullmatch(name):
                continue
            out[rel] = Path(parent, name)
    return out


def _remote_listing(fs: AbstractFileSystem, root: str) -> dict[str, int]:
    """``{relative name: size}`` of every file under `root` (nothing when it does not exist)."""
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    base = root.rstrip("/") + "/"
    return {p[len(base):]: int(meta.get("size") or 0) for p, meta in found.items()
            if p.startswith(base) and meta.get("type") != "directory"}


def _read_json(fs: AbstractFileSystem, path: str) -> Any:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def _stream_digest(fs: AbstractFileSystem, path: str) -> str:
    from crystalmix.core.digest import hasher

    h = hasher()
    with fs.open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return str(h.hexdigest())


def publish(local: str | Path, url: str, *, kind: str, skip: Collection[str] = (), force: bool = False,
            option: str = "--out") -> Published:
    """Copy the finished files of `local` (all but the top-level names in `skip`) to the folder at `url`.

    The URL must be new, empty, or a folder this command published before (its ``.crystalmix-out`` says so),
    unless `force`. A file already there with the same size and digest (from the completion marker, this
    folder's journal, or else read back and hashed) is left alone; every other one is uploaded under a
    temporary name and moved into place. The completion marker (`PUBLISHED`: every file's size and xxh3) is
    removed before the first change and written last, so a reader that checks it never sees a half-published
    folder. Files an earlier publish wrote and this one does not are removed; other files are never touched.
    """
    from crystalmix.core.digest import Digests

    fs, root = filesystem(url)
    root = root.rstrip("/")
    try:
        listing = _claim(fs, root, url, kind, force, option)
        files = _local_files(Path(local), skip)
        digests = Digests()
        mine = {rel: digests.record(p) for rel, p in sorted(files.items())}
        owner_bytes = _json_bytes({"kind": kind, "version": 1})
        if OWNER not in files:  # folders without their own marker (pretrain) still say who published them
            mine[OWNER] = {"size": len(owner_bytes), "xxh3": _bytes_digest(owner_bytes)}
        marker_bytes = _json_bytes({"kind": kind, "version": 1, "files": mine})
        old = _read_json(fs, f"{root}/{PUBLISHED}")
        old_files = old.get("files", {}) if isinstance(old, dict) and isinstance(old.get("files"), dict) else {}
        journal_path = Path(local) / JOURNAL
        journal = _load_journal(journal_path, url)
        done = Published(url)
        upload = []
        for rel, rec in mine.items():
            if listing.get(rel) == rec["size"] and _same(fs, root, rel, rec, old_files, journal):
                done.reused.append(rel)
            else:
                upload.append(rel)
        ever = set(old_files) | set(journal)
        stale = sorted(rel for rel in listing if rel not in mine and rel != PUBLISHED
                       and (rel in ever or _OUR_TMP.fullmatch(rel.rsplit("/", 1)[-1])))
        if not upload and not stale and _cat(fs, f"{root}/{PUBLISHED}") == marker_bytes:
            return done
        if PUBLISHED in listing:
            fs.rm_file(f"{root}/{PUBLISHED}")  # from here until the end, readers see an unfinished folder
        upload.sort(key=lambda rel: (rel != OWNER, rel))  # the owner marker first: an interrupted run is ours
        last_saved = time.monotonic()
        try:
            for rel in upload:
                source: Path | bytes = files[rel] if rel in files else owner_bytes
                _put(fs, source, f"{root}/{rel}")
                journal[rel] = mine[rel]
                done.uploaded.append(rel)
                if time.monotonic() - last_saved > 2.0:
                    _save_journal(journal_path, url, journal)
                    last_saved = time.monotonic()
            for rel in stale:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(f"{root}/{rel}")
                journal.pop(rel, None)
                done.removed.append(rel)
        finally:  # also when interrupted: the rerun then knows what is already there
            _save_journal(journal_path, url, journal)
        _put(fs, marker_bytes, f"{root}/{PUBLISHED}")
        done.marker = True
        return done
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"cannot publish to this URL ({exc.strerror or exc}); it is not marked complete: run the "
                        "same command again to finish (what was uploaded intact is kept)", path=url) from None


def claim_url(url: str, kind: str, *, force: bool = False, option: str = "--out") -> None:
    """Check before a long build that `publish` may write to `url` (new, empty, or this command's), else a
    `UserError` now rather than after the build."""
    fs, root = filesystem(url)
    try:
        _claim(fs, root.rstrip("/"), url, kind, force, option)
    except OSError as exc:
        raise UserError(f"cannot reach this URL: {exc.strerror or exc}", path=url) from None


def _claim(fs: AbstractFileSystem, root: str, url: str, kind: str, force: bool, option: str) -> dict[str, int]:
    """The files at the URL (``{name: size}``) once it is known to be ours to write, or `UserError`."""
    if fs.isfile(root):
        raise UserError(f"{option} names an existing file; give a folder URL to publish into", path=url)
    listing = _remote_listing(fs, root)
    owner = _read_json(fs, f"{root}/{OWNER}")
    owner_kind = owner.get("kind") if isinstance(owner, dict) else None
    if listing and not force:
        if owner_kind is None:
            raise UserError(f"{option} holds files `crystalmix {kind}` did not write; pick a new or empty URL, "
                            "or pass --force", path=url)
        if owner_kind != kind:
            raise UserError(f"{option} was published by `crystalmix {owner_kind}`, not `crystalmix {kind}`; pick "
                            "another URL, or pass --force", path=url)
    return listing


def _bytes_digest(data: bytes) -> str:
    from crystalmix.core.digest import text_digest

    return text_digest(data)


def _cat(fs: AbstractFileSystem, path: str) -> bytes | None:
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def _same(fs: AbstractFileSystem, root: str, rel: str, rec: dict[str, Any], old: dict[str, Any],
          journal: dict[str, Any]) -> bool:
    """Whether the file `rel` at the URL (its size already equal to `rec`'s) holds `rec`'s digest: as the
    completion marker and the journal record it when they agree, else read back and hashed."""
    seen = [src[rel].get("xxh3") for src in (old, journal) if isinstance(src.get(rel), dict)]
    if seen and len(set(seen)) == 1:
        return seen[0] == rec["xxh3"]
    return _stream_digest(fs, f"{root}/{rel}") == rec["xxh3"]


def _put(fs: AbstractFileSystem, source: Path | bytes, final: str) -> None:
    """Write `source` (a local file, or bytes) to `final` under a temporary name, then move it into place."""
    parent, name = final.rsplit("/", 1) if "/" in final else ("", final)
    tmp = f"{parent}/.{name}.{os.getpid()}{TMP_SUFFIX}"
    with contextlib.suppress(OSError, NotImplementedError):
        fs.makedirs(parent, exist_ok=True)
    try:
        if isinstance(source, bytes):
            fs.pipe_file(tmp, source)
        else:
            fs.put_file(str(source), tmp)
        fs.mv(tmp, final)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm_file(tmp)
        raise


def _load_journal(path: Path, url: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("url") != url or not isinstance(data.get("files"), dict):
        return {}
    return dict(data["files"])


def _save_journal(path: Path, url: str, files: dict[str, Any]) -> None:
    from crystalmix.core.atomic import write_json

    write_json(path, {"url": url, "files": files})
