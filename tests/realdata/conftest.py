"""Every test in this folder reads ../shared/realdata: it skips without it (or fails in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _require_realdata(realdata: Path) -> None:
    """Pull in the session fixture so a missing folder skips (or fails under CRYSTALMIX_REQUIRE_REALDATA=1)."""
