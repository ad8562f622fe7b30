"""Helpers for adapter tests: run an adapter over fixture files and split conversations from rejects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crystalmix.core.records import Conversation
from sft_builder.sources.base import Adapter, Rejected, make_adapter

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "sources"

Run = Callable[..., tuple[list[Conversation], list[Rejected], Adapter[Any]]]


@pytest.fixture
def run_adapter() -> Run:
    """`run_adapter(name, *fixture_paths, **options)` -> (conversations, rejects, adapter)."""

    def run(name: str, *paths: str, **options: Any) -> tuple[list[Conversation], list[Rejected], Adapter]:
        adapter = make_adapter(name, options)
        outs = list(adapter.stream([str(FIX / p) for p in paths]))
        convs = [o for o in outs if isinstance(o, Conversation)]
        rejects = [o for o in outs if isinstance(o, Rejected)]
        assert len(convs) + len(rejects) == len(outs) == adapter.stats.candidates
        return convs, rejects, adapter

    return run


def turns(conv: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conv.messages]
