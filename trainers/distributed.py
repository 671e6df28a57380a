"""Data parallelism as configuration: rank helpers that are no-ops in a single process.

Under `torchrun` / `accelerate launch` the environment carries RANK, WORLD_SIZE and LOCAL_RANK;
`init()` then opens the process group. Trainers shard each global batch by rank (`shard`), average
gradients across ranks after their backward passes (`all_reduce_grads`, one flat all-reduce per
step: simpler than DDP with manual accumulation and exact for equal shards), and only rank 0
writes files (`is_main`). With one process every function returns at once, so the same trainer
code runs on a laptop and on eight GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Open the default process group when launched with more than one process."""
    if world_size() <= 1 or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of a global batch: items[rank::world_size]."""
    return list(items[rank() :: world_size()])


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Average gradients across ranks (flattened into one buffer, one collective)."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar metric over ranks (the value itself in one process)."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / world_size()


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
