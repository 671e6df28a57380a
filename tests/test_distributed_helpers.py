"""mbpo_bench.parallel: identity in one process, round-robin order, rank-0-only run folders, and
the collectives on two real gloo processes (forked from this one, so nothing is re-imported).

The end-to-end checks (torchrun, 2 processes == 1 process for GRPO, SFT and eval) are in
test_distributed_torchrun.py (slow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mbpo_bench import parallel
from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir

torch.set_num_threads(1)

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def test_one_process_is_identity() -> None:
    assert parallel.world_size() == 1 and parallel.is_main() and not parallel.active()
    assert parallel.shard([1, 2, 3]) == [1, 2, 3]
    assert parallel.gather({"a": 1}) == [{"a": 1}]
    assert parallel.normaliser(7.0) == 7.0
    metrics = {"loss": 0.5}
    assert parallel.mean_metrics(metrics) is metrics
    assert parallel.round_robin(3) == [0, 1, 2]
    assert parallel.gather_round(2, "x") == [(2, "x")]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    parallel.all_reduce_grads([p])
    assert p.grad.tolist() == [3.0, 3.0]
    parallel.barrier()


@given(n=st.integers(0, 40), world=st.integers(1, 8))
def test_round_robin_rounds_restore_work_order(n: int, world: int) -> None:
    per_rank = []
    for r in range(world):
        os.environ.update({"RANK": str(r), "WORLD_SIZE": str(world)})
        try:
            per_rank.append(parallel.round_robin(n))
        finally:
            for key in ("RANK", "WORLD_SIZE"):
                os.environ.pop(key)
    assert len({len(rounds) for rounds in per_rank}) == 1  # every rank joins every gather
    order = [
        i for k in range(len(per_rank[0])) for rounds in per_rank if (i := rounds[k]) is not None
    ]
    assert order == list(range(n))


def test_average_skips_ranks_without_the_key() -> None:
    assert parallel.average([{"a": 1.0, "b": 4.0}, {"a": 3.0}]) == {"a": 2.0, "b": 4.0}


def test_run_folder_is_written_by_rank_zero_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = RunDir.open(tmp_path / "run", config={"a": 1})
    run.log("not written")
    run.finish()
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    RunDir.open(tmp_path / "run", config={"a": 1}).finish()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="finished run"):  # the other ranks still check
        RunDir.open(tmp_path / "run", config={"a": 1})
    RunDir.open(tmp_path / "run", overwrite=True, config={"a": 2})  # rank 0 alone replaces it
    assert RunDir(tmp_path / "run").finished


def _collectives(rank: int) -> dict[str, Any]:
    """Run on each of two gloo ranks; returns what the parent checks."""
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[0].grad = torch.full((3,), float(rank + 1))  # 1 and 2: mean 1.5
    if rank == 0:
        params[1].grad = torch.full((3,), 4.0)  # only rank 0: (4 + 0) / 2
    # params[2] has no gradient anywhere: stays None
    parallel.all_reduce_grads(params)
    metrics = {"loss": float(rank), **({"accuracy": 1.0} if rank == 0 else {})}
    mine = parallel.round_robin(3)
    rows = [parallel.gather_round(i, f"batch{i}") for i in mine]
    return {
        "grads": [None if p.grad is None else p.grad.tolist() for p in params],
        "metrics": parallel.mean_metrics(metrics),
        "normaliser": parallel.normaliser(float(3 + rank)),  # (3 + 4) / 2
        "shard": parallel.shard(list(range(5))),
        "rounds": rows,
    }


def test_collectives_on_two_gloo_processes(two_ranks: Any) -> None:
    out = two_ranks(_collectives)
    for r in (0, 1):
        assert isinstance(out[r], dict), out[r]
        assert out[r]["grads"] == [[1.5] * 3, [2.0] * 3, None]
        assert out[r]["metrics"] == {"loss": 0.5, "accuracy": 1.0}
        assert out[r]["normaliser"] == 3.5
        assert out[r]["rounds"] == [[(0, "batch0"), (1, "batch1")], [(2, "batch2")]]
    assert out[0]["shard"] == [0, 2, 4] and out[1]["shard"] == [1, 3]


def test_training_refuses_a_batch_that_does_not_split_over_the_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mbpo_bench.trainers.loop import OptimConfig, _check_world

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="batch_size 4 does not split over 3 processes"):
        _check_world(OptimConfig(batch_size=4))
    _check_world(OptimConfig(batch_size=6))
