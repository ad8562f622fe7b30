"""Text-generation backends for webgen: one interface, an OpenAI-compatible HTTP client and a local model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Completion:
    """The text a model produced for one prompt, and whether it stopped by itself or hit the length limit."""

    text: str
    finish_reason: FinishReason


class Backend(Protocol):
    """Generates one completion per prompt, in the prompts' order.

    `parallel` tells the caller whether several `complete` calls may run at once (HTTP: yes; a local model
    batches inside one call instead). `seed` makes sampling reproducible where the backend supports it.
    """

    model: str
    parallel: bool

    def complete(self, prompts: Sequence[str], seed: int) -> list[Completion]: ...

    def close(self) -> None: ...
