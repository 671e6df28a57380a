"""Shared test fixtures.

`two_ranks`: run fn(rank) on two gloo processes forked from the test process (they inherit its
imports and monkeypatches, so nothing is re-imported) and return {rank: result}.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

TwoRanks = Callable[[Callable[[int], Any]], dict[int, Any]]


def _worker(rank: int, store: str, fn: Callable[[int], Any], queue: Any) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    try:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=2
        )
        # bytes, not tensors: torch shares queued tensors through file descriptors that die
        # with this process, which may exit before the parent reads them (a flaky failure)
        buffer = io.BytesIO()
        torch.save(fn(rank), buffer)
        queue.put((rank, buffer.getvalue()))
        torch.distributed.destroy_process_group()
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def on_two_ranks(store: Path, fn: Callable[[int], Any]) -> dict[int, Any]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(store), fn, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for r in (0, 1):
        assert not isinstance(out[r], str), out[r]  # a traceback from that rank
    return {r: torch.load(io.BytesIO(out[r]), weights_only=False) for r in (0, 1)}


@pytest.fixture
def two_ranks(tmp_path: Path) -> TwoRanks:
    return lambda fn: on_two_ranks(tmp_path / "store", fn)
