"""Text-generation backends for webgen: one interface, an OpenAI-compatible HTTP client, a local model, and a
replay of recorded answers (the dry run)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Completion:
    """The text a model produced for one prompt, and whether it stopped by itself or hit the length limit.

    `prompt_tokens` and `completion_tokens` are what the backend reports it spent on this request (the
    server's ``usage``); None when it did not say.
    """

    text: str
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(slots=True)
class Usage:
    """Tokens spent over some requests; `unreported` counts requests whose answer carried no usage, so the
    totals are a lower bound whenever it is not 0."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completions: Iterable[Completion]) -> None:
        """Count these answers (safe from several threads: HTTP batches finish in worker threads)."""
        with self._lock:
            for c in completions:
                self.requests += 1
                if c.prompt_tokens is None and c.completion_tokens is None:
                    self.unreported += 1
                    continue
                self.prompt_tokens += c.prompt_tokens or 0
                self.completion_tokens += c.completion_tokens or 0

    def cost(self, price_in: float, price_out: float) -> float:
        """The price of these tokens at `price_in` / `price_out` per million prompt / completion tokens."""
        return (self.prompt_tokens * price_in + self.completion_tokens * price_out) / 1e6

    def to_json(self) -> dict[str, int]:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "unreported": self.unreported}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None, requests: int) -> Usage:
        """Usage from a state file; one written before usage was counted reports its `requests` as unknown."""
        if not raw:
            return cls(requests=requests, unreported=requests)
        return cls(int(raw["requests"]), int(raw["prompt_tokens"]), int(raw["completion_tokens"]),
                   int(raw["unreported"]))


class Backend(Protocol):
    """Generates one completion per prompt, in the prompts' order.

    `parallel` tells the caller whether several `complete` calls may run at once (HTTP: yes; a local model
    batches inside one call instead). `seed` makes sampling reproducible where the backend supports it.
    """

    model: str
    parallel: bool

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]: ...

    def close(self) -> None: ...
