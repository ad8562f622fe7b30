"""The Ray executor's ordered map on a local Ray: the same order and errors as the local one, and a Ray it
started itself is stopped when it is done (one Ray start for the module: starting Ray costs seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystalmix.core.errors import UserError
from crystalmix.core.executors import RayExecutor

from .test_executors import _head_waits, _slow_first, _touch

ray = pytest.importorskip("ray")


def test_ray_map_orders_fails_fast_and_stops_its_own_ray(tmp_path: Path) -> None:
    if ray.is_initialized():
        ray.shutdown()  # another module's session: this test is about one the executor starts
    ex = RayExecutor(num_cpus=2, window=3)
    assert not ex.shared_disk  # its callers send the data and write the results: a node may not see this disk
    with ex:
        assert ray.is_initialized()
        assert list(ex.imap(_slow_first, range(10))) == [(x, x * x) for x in range(10)]
        with ex:  # nested: the inner end leaves the session to the outer one
            assert list(ex.imap(_slow_first, [7])) == [(7, 49)]
        assert ray.is_initialized()
        with pytest.raises(UserError, match=r"item-2\.jsonl: bad input") as err:
            list(ex.imap(_touch, [(str(tmp_path), x) for x in range(200)]))
        assert type(err.value) is UserError  # itself, not Ray's wrapper: one line and exit 2 at the CLI
        done = {int(p.stem) for p in tmp_path.glob("*.done")}
        assert len(done) < 10  # the window, not the 200 items (0 and 1 may still be running when 2 fails)
        with pytest.raises(ValueError, match="the second item fails"):
            list(ex.imap(_head_waits, [(str(tmp_path), 0), (str(tmp_path), 1)]))
    assert not ray.is_initialized()
