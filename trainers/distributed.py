"""The trainers' name for `mbpo_bench.parallel` (rank helpers, sharding, collectives).

The helpers moved to `mbpo_bench/parallel.py` so that evaluation uses them too without importing
the trainers; this module re-exports them so the trainers keep writing `distributed.shard(...)`.
See that module for the decisions (explicit gradient all-reduce instead of DDP, global loss
normalisers, rank-0 writes). Checkpoints hold rank 0's RNG state only: the loop reseeds every
step from (seed, step, rank), so a resumed run needs no other rank's state, and a checkpoint
resumes on any number of processes.
"""

from __future__ import annotations

from mbpo_bench.parallel import (
    all_reduce_grads,
    all_reduce_mean,
    average,
    barrier,
    gather,
    gather_round,
    global_sum,
    init,
    is_main,
    local_rank,
    mean_metrics,
    normaliser,
    rank,
    round_robin,
    setup,
    shard,
    world_size,
)

__all__ = [
    "all_reduce_grads",
    "all_reduce_mean",
    "average",
    "barrier",
    "gather",
    "gather_round",
    "global_sum",
    "init",
    "is_main",
    "local_rank",
    "mean_metrics",
    "normaliser",
    "rank",
    "round_robin",
    "setup",
    "shard",
    "world_size",
]
