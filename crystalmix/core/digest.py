"""Content digests: stages are keyed on what the files they read hold, and resumes verify what they reuse.

A path, a size or a modification time says nothing reliable about content (a tokenizer rebuilt in place, a
file copied with its times, an edit within a clock tick). So a stage's key holds the xxh3-128 digests of
the files it reads, and each finished stage records the size and digest of every file it wrote; a rerun
reuses a file only when both still match. `Digests` reads each file at most once per run. A file at a URL
(`crystalmix.core.remote`) is streamed and hashed the same way: a store's ETag or time is no content digest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import xxhash

from crystalmix.core.remote import is_url

BLOCK = 1 << 22  # 4 MiB reads: flat memory for files of any size


def file_digest(path: str | Path) -> str:
    """The xxh3-128 hex digest of a file's bytes (local, or at a URL), read in blocks."""
    h = xxhash.xxh3_128()
    if is_url(path):
        from crystalmix.core.remote import open_raw

        with open_raw(str(path)) as fh:
            while block := fh.read(BLOCK):
                h.update(block)
        return h.hexdigest()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def hasher() -> Any:
    """A running digest of the same kind as `file_digest` (``update(bytes)``, ``hexdigest()``)."""
    return xxhash.xxh3_128()


def text_digest(text: str | bytes) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8") if isinstance(text, str) else text)


class Digests:
    """Digests of the files one run reads, each read once (a file whose stat changes is read again)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, Any, int, int], str] = {}

    def file(self, path: str | Path) -> str:
        if is_url(path):
            from crystalmix.core.remote import info, version_stamp

            meta = info(str(path))
            key: tuple[str, int, Any, int, int] = (str(path), int(meta["size"]), version_stamp(meta), 0, 0)
            if key not in self._memo:
                self._memo[key] = file_digest(path)
            return self._memo[key]
        p = os.path.abspath(path)
        st = os.stat(p)
        key = (p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if key not in self._memo:
            self._memo[key] = file_digest(p)
        return self._memo[key]

    def record(self, path: str | Path) -> dict[str, Any]:
        """``{"size", "xxh3"}`` of one file, as stage markers store it."""
        from crystalmix.core.remote import size

        return {"size": size(str(path)), "xxh3": self.file(path)}

    def tree(self, path: str | Path) -> list[list[Any]]:
        """``[name, size, digest]`` of a file, or of every file under a folder (names relative to it)."""
        if is_url(path):
            from crystalmix.core.remote import expand, size

            kind, urls = expand(str(path), ("",))
            base = str(path).rstrip("/") + "/"
            return [[u.removeprefix(base) if kind == "folder" else u.rsplit("/", 1)[-1], size(u), self.file(u)]
                    for u in urls]
        root = Path(path)
        if root.is_file():
            return [[root.name, root.stat().st_size, self.file(root)]]
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return [[p.relative_to(root).as_posix(), p.stat().st_size, self.file(p)] for p in files]

    def problem(self, folder: str | Path, outputs: Mapping[str, Mapping[str, Any]]) -> str | None:
        """Why the files recorded in `outputs` (names relative to `folder`) are not intact, or None.

        Sizes are compared first (a truncated file costs no read), then content.
        """
        for name, rec in sorted(outputs.items()):
            path = Path(folder, name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return f"{name} is missing"
            if size != rec.get("size"):
                return f"{name} holds {size} bytes, {rec.get('size')} were written"
            if self.file(path) != rec.get("xxh3"):
                return f"{name} changed since it was written"
        return None


def config_files(cfg: Any) -> list[str]:
    """Files named by a config's path fields (``spec(path=...)``), recursively: what the config makes a step
    read, for its stage key. Values that name no existing file (``demo``, a hub id) are left out; URLs stay."""
    out: list[str] = []

    def walk(obj: Any, is_path: bool) -> None:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name), bool(f.metadata.get("path")))
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, is_path)
        elif isinstance(obj, Mapping):
            for v in obj.values():
                walk(v, is_path)
        elif is_path and isinstance(obj, str) and (is_url(obj) or os.path.exists(obj)):
            out.append(obj)

    walk(cfg, False)
    return out


def tokenizer_digest(tokenizer: Any) -> str:
    """What a loaded tokenizer encodes with: its full definition (model, normalizer, added tokens, post
    processor), special tokens, chat template and size. The same for a folder, a file or a hub id."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {"special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
             "chat_template": getattr(tokenizer, "chat_template", None), "size": len(tokenizer)}
    return text_digest(body + json.dumps(extra, sort_keys=True, default=str))


def hub_revision(name: str, repo_type: str = "dataset") -> str | None:
    """The commit of a hub repository as the local Hugging Face cache last resolved it, if it holds one."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"{repo_type}s--{name.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def records(folder: str | Path, names: Iterable[str], digests: Digests) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "xxh3"}}`` of files in `folder`, for a stage marker."""
    return {n: digests.record(Path(folder, n)) for n in sorted(names)}
