"""Data parallelism as configuration: rank helpers and collectives that are no-ops in one process.

Under `torchrun` / `accelerate launch` the environment carries RANK, WORLD_SIZE and LOCAL_RANK;
`setup(device)` then pins the GPU of this rank and opens the process group (NCCL on GPUs, gloo on
CPU: the same code). Without those variables every function returns at once (identity,
`[obj]`, no-op), so one process runs exactly the single-process code path.

Decisions:
- Gradients are averaged with explicit all-reduces after the backward passes (`all_reduce_grads`,
  bucketed flat buffers) instead of wrapping the model in DDP: the trainers already accumulate
  micro-batches by hand, the reference policy (LoRA adapter disabled) runs through the same
  module, and one collective per step is all LoRA needs. Gradients of a parameter that no rank
  touched stay None, as in one process (AdamW then skips it); a parameter touched on some ranks
  only gets zeros on the others, so every rank takes the same optimizer step.
- Exactness: a loss normalised by a count of the WHOLE batch (tokens, sequences) divided by the
  world size (`normaliser`) makes the averaged gradient equal to the one-process gradient of
  the same global batch, whatever the split. Trainers that normalise per rank are exact only
  when every rank holds the same count.
- Work is split by rank: `shard` (items[rank::world]) for training batches, `round_robin` for
  evaluation batches, which a gather in rank order puts back into the one-process order.
- Only rank 0 writes (runs.py, the training loop, the evaluation store); `is_main` reads the
  environment only, so runs.py may ask it without importing torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# elements per all-reduce bucket: bounds the extra memory of the flat buffer (256 MB in fp32)
BUCKET_ELEMENTS = 64 * 1024 * 1024


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """True when more than one process runs and the process group is open."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device: torch.device) -> None:
    """Open the default process group when launched with more than one process."""
    import torch

    if world_size() <= 1 or torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group(backend=backend_for(device.type))


def backend_for(device_type: str) -> str:
    """NCCL for CUDA tensors plus gloo for CPU ones on a GPU run (FSDP's CPU offload reduces
    CPU-held gradients: with NCCL alone the H200 run failed "No backend type associated with
    device type cpu"); gloo alone on CPU."""
    return "cuda:nccl,cpu:gloo" if device_type == "cuda" else "gloo"


def resolve_device(device: str) -> str:
    """A config's device (auto | cpu | cuda | cuda:N) as torch names it; CUDA asked for on a
    machine without it is a one-line error. Here, not in models/, because opening the process
    group (`setup`) needs it and this ground module imports nothing above it."""
    import torch

    from mbpo_bench.errors import UserError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available — use --device cpu")
    return device


def setup(device: str) -> None:
    """Pin this rank's GPU (LOCAL_RANK) and open the process group; nothing in one process.

    `device` is a config value (auto | cpu | cuda | cuda:N); with several processes "cuda" and
    "auto" then mean this rank's own GPU.
    """
    if world_size() <= 1:
        return
    import torch

    device = resolve_device(device)  # a one-line error where CUDA is asked for but missing
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank())
    init(torch.device(device))


def _collective_device() -> torch.device:
    import torch

    if "nccl" in str(torch.distributed.get_backend()):  # "nccl" or "cuda:nccl,cpu:gloo"
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of a global batch: items[rank::world_size]."""
    return list(items[rank() :: world_size()])


def round_robin(n: int) -> list[int | None]:
    """Work indices this rank runs in each round: round k runs item k * world_size + rank.

    One entry per round on every rank (None when this rank has nothing in that round), so all
    ranks take part in each round's gather; gathering in rank order restores 0..n-1.
    """
    w, r = world_size(), rank()
    return [k * w + r if k * w + r < n else None for k in range(math.ceil(n / w))]


def gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    if not active():
        return [obj]
    import torch

    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_round(index: int | None, payload: T) -> list[tuple[int, T]]:
    """(work index, payload) of every rank that ran an item of this `round_robin` round, in
    rank order, i.e. in work order."""
    return [(i, p) for i, p in gather((index, payload)) if i is not None]


def global_sum(value: float) -> float:
    """Sum of a number over ranks (the number itself in one process)."""
    if not active():
        return value
    import torch

    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    torch.distributed.all_reduce(t)
    return float(t.item())


def normaliser(local_count: float) -> float:
    """Loss denominator that makes rank-averaged gradients equal the whole-batch gradient.

    A rank's loss sum / (global count / world size), averaged over ranks, is the global loss sum
    / global count. In one process it returns `local_count` unchanged.
    """
    if not active():
        return local_count
    return global_sum(local_count) / world_size()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Mean of a scalar over ranks (the value itself in one process); `device` is ignored."""
    if not active():
        return value
    return global_sum(value) / world_size()


def average(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the dicts that have it (ranks may lack a key, e.g. accuracy on a
    rank with no online group)."""
    values: dict[str, list[float]] = {}
    for part in parts:
        for key, value in part.items():
            values.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks that report it; the dict itself in one process."""
    if not active():
        return metrics
    return average(gather(metrics))


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Average gradients across ranks, in flat buckets per dtype (see the module docstring).

    Parameters sharded by FSDP2 (DTensors, `runtime.strategy=fsdp`) are skipped: FSDP already
    reduce-scattered their gradients in the backward pass."""
    if not active():
        return
    import torch
    from torch.distributed.tensor import DTensor

    params = [p for p in params if not isinstance(p, DTensor)]
    if not params:
        return
    device = _collective_device()
    present = torch.tensor(
        [float(p.grad is not None) for p in params], dtype=torch.float32, device=device
    )
    torch.distributed.all_reduce(present, op=torch.distributed.ReduceOp.MAX)
    used = [p for p, flag in zip(params, present.tolist(), strict=True) if flag]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in used:
        assert p.grad is not None
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        for bucket in _buckets(grads):
            _reduce_bucket(bucket)


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    out: list[list[torch.Tensor]] = [[]]
    size = 0
    for g in grads:
        if out[-1] and size + g.numel() > BUCKET_ELEMENTS:
            out.append([])
            size = 0
        out[-1].append(g)
        size += g.numel()
    return [b for b in out if b]


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    import torch

    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    if active():
        import torch

        torch.distributed.barrier()
