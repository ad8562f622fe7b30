"""Bounded summaries the build collects for its report: histograms and a few sampled rejects.

Everything here stays the same size however large the corpus is (a histogram has one bin per length class,
a sampler keeps `SAMPLES` records per reason), and is deterministic: the same stream gives the same bytes.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Mapping
from typing import Any

# Lower edges of the token-length bins: eight per doubling (1, 2, ..., 16, 17, 19, 21, 23, 26, 29, 31, 34, ...),
# so a histogram of lengths from 1 to 2^40 tokens has at most ~320 bins whatever the corpus size.
PER_OCTAVE = 8
LENGTH_EDGES: tuple[int, ...] = tuple(sorted({0, *(math.ceil(2 ** (k / PER_OCTAVE)) for k in range(40 * PER_OCTAVE))}))
SAMPLES = 3  # records kept per (step, reason)
TEXT_LIMIT = 1200  # characters of each message kept in a sample; the full record is in rejects/


def length_bin(n: int) -> str:
    """The histogram key of a length: the lower edge of its bin, as a string (a JSON key)."""
    return str(LENGTH_EDGES[bisect.bisect_right(LENGTH_EDGES, max(n, 0)) - 1])


def bin_upper(edge: int) -> int:
    """The exclusive upper edge of the bin starting at `edge`."""
    i = LENGTH_EDGES.index(edge)
    return LENGTH_EDGES[i + 1] if i + 1 < len(LENGTH_EDGES) else edge * 2


def add(hist: dict[str, int], key: str, n: int = 1) -> None:
    hist[key] = hist.get(key, 0) + n


def merge(*hists: Mapping[str, int]) -> dict[str, int]:
    """Sum histograms (string keys, as read back from JSON)."""
    out: dict[str, int] = {}
    for h in hists:
        for k, v in h.items():
            add(out, str(k), int(v))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _safe(text: str) -> str:
    """Text UTF-8 can hold: a lone surrogate (kept in rejects as ``\\udXXX``) is shown as that escape."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str) -> dict[str, Any]:
    if len(text) <= TEXT_LIMIT:
        return {"text": _safe(text)}
    return {"text": _safe(text[:TEXT_LIMIT]), "chars": len(text)}


def compact_record(record: Any) -> dict[str, Any]:
    """What the report shows of a rejected record: its messages (each cut to `TEXT_LIMIT` characters, with
    the full length kept) when it is a conversation, else the raw record as JSON text, cut likewise."""
    msgs = record.get("messages") if isinstance(record, dict) else None
    if isinstance(msgs, list) and all(isinstance(m, dict) for m in msgs):
        return {"messages": [{"role": _safe(str(m.get("role", ""))), **_clip(str(m.get("content", "")))} for m in msgs]}
    raw = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, sort_keys=True)
    return {"raw": _clip(raw)}


class RejectSampler:
    """Reservoir sample of `SAMPLES` rejects per (step, reason), fed in file order with line numbers.

    Each reason has its own generator seeded by (seed, step, reason), so the pick depends only on that
    reason's rejects and their order, never on the other reasons.
    """

    def __init__(self, seed: int, k: int = SAMPLES) -> None:
        self.seed, self.k = seed, k
        self._seen: dict[tuple[str, str], int] = {}
        self._kept: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
        self._rng: dict[tuple[str, str], random.Random] = {}

    def offer(self, path: str, line: int, reject: Mapping[str, Any]) -> None:
        """Consider the reject at `line` (1-based) of the rejects file `path` (relative to the build)."""
        key = (str(reject.get("step", "")), str(reject.get("reason", "")))
        n = self._seen[key] = self._seen.get(key, 0) + 1
        slots = self._kept.setdefault(key, [])
        if n <= self.k:
            slots.append((n, self._sample(path, line, reject)))
            return
        rng = self._rng.setdefault(key, random.Random(f"{self.seed}:{key[0]}:{key[1]}"))
        j = rng.randrange(n)
        if j < self.k:
            slots[j] = (n, self._sample(path, line, reject))

    @staticmethod
    def _sample(path: str, line: int, reject: Mapping[str, Any]) -> dict[str, Any]:
        out = {
            "rejects_file": path,
            "rejects_line": line,
            "source": _safe(str(reject.get("source", ""))),
            "file": _safe(str(reject.get("file", ""))),
            "line": reject.get("line", 0),
            "detail": _safe(str(reject.get("detail", ""))),
            "record": compact_record(reject.get("record")),
        }
        rec = reject.get("record")
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            out["id"] = _safe(rec["id"])
        if reject.get("duplicate_of") is not None:
            out["duplicate_of"] = _safe(str(reject["duplicate_of"]))
        return out

    def result(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """``{step: {reason: [sample, ...]}}``, samples in file order."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (step, reason), slots in sorted(self._kept.items()):
            out.setdefault(step, {})[reason] = [s for _, s in sorted(slots, key=lambda x: x[0])]
        return out
